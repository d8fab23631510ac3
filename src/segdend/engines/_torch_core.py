"""The torch simulator behind :class:`~segdend.engines.torch_engine.TorchEngine` and
:class:`~segdend.engines.torch_engine.TorchPopulation` (MODEL.md 2-9).

Every tensor carries a leading **member** dimension S (independent networks with the same
architecture; S = 1 for a single engine) and, for activity, a **batch** dimension B (test
images simulated side by side; B = 1 in training, which is online). Activity over a phase is
(S, T, B, n): members x steps x batch x units.

**Time-batched phases** (g_A = 0, MODEL.md 3): a layer's somatic voltage depends only on the
layers below and on its own past, so a phase is simulated layer by layer over its whole time
axis: all spike uniforms of a layer and phase at once (the counter-based draws of
:mod:`segdend.rng`, reproduced bit for bit by :mod:`._torch_rng`), Poisson counts by the
reference's inverse CDF, PSP filtering along time (10 shifted multiply-adds for the truncated
kernel, carried history in front; two linear recurrences for the exact kernel), basal
voltages as one matrix product for all steps, and the soma as the linear recurrence
``V(t) = a V(t-1) + c V_b(t) (+ k)`` whose coefficients are read off
:func:`segdend.dynamics.hidden_soma_step` / :func:`~segdend.dynamics.output_soma_step` (with the
teaching current of :func:`~segdend.dynamics.teaching_current` in the target phase), solved
by :class:`._torch_ops.LinearScan`. The apical compartment is needed only for the plateau
potentials: it sees the feedback source's signal shifted by one step (the carried value at
the phase's first step). With g_A > 0 the layers are advanced step by step with the very
functions of :mod:`segdend.dynamics`; the input layer, which depends on nothing, is still
drawn and filtered for the whole phase at once.

Members of a population may have different phase lengths: a phase runs for the longest and
each member's window, plateau and carried state are taken at its own length (steps after
it are computed and discarded; nothing before depends on them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from segdend import dynamics as dyn
from segdend import plasticity, rng
from segdend.config import RunConfig
from segdend.engines import _torch_ops as ops
from segdend.engines import _torch_rng as trng
from segdend.engines.base import (
    LAYER_FIELDS,
    LayerState,
    PhaseSummary,
    State,
    TestResult,
    TrainBatch,
    TrainResult,
)
from segdend.errors import SegdendError
from segdend.model import describe
from segdend.network import Params

_DTYPES = {"float64": torch.float64, "float32": torch.float32}
TState = list[LayerState[torch.Tensor]]
"""The carried state on the device while a batch runs, by layer (input first): (S, B, n)
tensors of S members x B images, ``history`` (S, taps, B, n)."""
# Bytes of one (T x batch x n) float64 tensor of a test chunk, by device type (small on the
# CPU, where cache-sized chunks run fastest).
TEST_BUDGET = {"cpu": 8 << 20, "cuda": 384 << 20}


def cuda_missing_message(spec: str) -> str:
    return (f"training.device={spec} but no CUDA device is available; "
            "use --set training.device=cpu")


def resolve_device(spec: str) -> torch.device:
    """``training.device`` as a torch device ('auto' = CUDA when available)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SegdendError(cuda_missing_message(spec))
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SegdendError(f"training.device={spec} but only {torch.cuda.device_count()} "
                               "CUDA device(s) are available; use cuda:0 or cpu")
        return dev
    return torch.device(spec)


def plateau_delays(normals: np.ndarray, sd: float, max_delay: int) -> np.ndarray:
    """Vectorised :func:`segdend.dynamics.plateau_delay`: ``min(|int(z sd)|, max)``
    (``int`` truncates toward zero, so ``|int(x)| = trunc(|x|)``)."""
    return np.minimum(np.trunc(np.abs(normals * sd)), max_delay).astype(np.int64)


@dataclass
class TParams:
    """Per-member parameters on the device: W[m] (S, n_m, n_{m-1}), b[m] (S, n_m),
    Y[m] (S, n_m, n_src)."""

    W: list[torch.Tensor]
    b: list[torch.Tensor]
    Y: list[torch.Tensor]
    keep: list[torch.Tensor] = field(default_factory=list)  # plasticity.feedback_keep, per Y


def member_vectors(summary: PhaseSummary) -> PhaseSummary:
    """A phase summary of S members x B images ((S, B, n) tensors, the engines' one
    :class:`~segdend.engines.base.PhaseSummary`) without its batch dimension (B = 1 in
    training): (S, n) vectors."""
    def sq(xs):
        return [None if x is None else x[:, 0] for x in xs]
    return PhaseSummary(sq(summary.vbar), sq(summary.sbar), sq(summary.phibar),
                        sq(summary.abar), sq(summary.alpha), sq(summary.sbar_fb))


class _Bound:
    """The NumPy float64 arrays of S members seen as one (S, *shape) tensor on the device.

    On the CPU in float64 with one member, the tensor *is* the array's memory (updates in
    place reach the caller with no copy); otherwise it is a copy written back by
    :meth:`write_back`.
    """

    def __init__(self, arrays: list[np.ndarray], shape: tuple[int, ...],
                 device: torch.device, dtype: torch.dtype):
        self.arrays = arrays
        a0 = arrays[0]
        self.shared = (len(arrays) == 1 and device.type == "cpu" and dtype == torch.float64
                       and isinstance(a0, np.ndarray) and a0.dtype == np.float64
                       and a0.flags.c_contiguous and a0.flags.writeable)
        if self.shared:
            self.tensor = torch.from_numpy(a0).view(1, *shape)
        else:
            host = np.stack([np.asarray(a, dtype=np.float64).reshape(shape) for a in arrays])
            self.tensor = torch.as_tensor(host).to(device=device, dtype=dtype)

    def write_back(self) -> None:
        if self.shared:
            return
        host = self.tensor.detach().to(device="cpu", dtype=torch.float64).numpy()
        for a, h in zip(self.arrays, host, strict=True):
            a[...] = h.reshape(a.shape)


class Core:
    """Simulation of S independent networks of one architecture (see module docstring)."""

    def __init__(self, config: RunConfig, device: torch.device, dtype: torch.dtype,
                 max_batch: int | None = None):
        self.config = config
        self.model = config.model
        self.phases = config.phases
        self.desc = desc = describe(config)
        self.c = c = desc.constants
        self.sizes = desc.sizes
        self.top = desc.top
        self.n_hidden = desc.n_hidden
        self.device, self.dtype = device, dtype
        self.max_batch = max_batch
        self.taps = desc.taps
        self.filter = ops.TruncatedFilter(c.kappa)
        self.tables = trng.CounterTables(self.sizes, device)
        self.scan = ops.LinearScan()
        self.stepwise = not desc.segregated
        self.rule = desc.rule
        self.rule_error = ops.hidden_rule_error(self.rule.name)
        self.feedback = desc.feedback
        self.feedback_refresh = ops.feedback_refresh(self.feedback.name)
        self.fb_key = "phi" if desc.feedback_rates else "s"
        # Affine coefficients of the soma updates, read off dynamics.py's own step functions
        # (they are affine in V and V_b): V(t) = a V(t-1) + c V_b(t) (+ k).
        h0 = dyn.hidden_soma_step(0.0, 0.0, 0.0, c.g_L, c.g_B, c.g_A, c.dt)
        self.hid_a = float(dyn.hidden_soma_step(1.0, 0.0, 0.0, c.g_L, c.g_B, c.g_A, c.dt) - h0)
        self.hid_c = float(dyn.hidden_soma_step(0.0, 1.0, 0.0, c.g_L, c.g_B, c.g_A, c.dt) - h0)
        o0 = dyn.output_soma_step(0.0, 0.0, 0.0, c.g_L, c.g_D, c.dt)
        self.out_a = float(dyn.output_soma_step(1.0, 0.0, 0.0, c.g_L, c.g_D, c.dt) - o0)
        self.out_c = float(dyn.output_soma_step(0.0, 1.0, 0.0, c.g_L, c.g_D, c.dt) - o0)

    # -- helpers ------------------------------------------------------------------------------

    def bind_params(self, params_list: list[Params]) -> tuple[TParams, list[_Bound]]:
        d, t = self.device, self.dtype
        bounds = []
        out = TParams([], [], [])
        for name, arrs in (("W", "W"), ("b", "b"), ("Y", "Y")):
            for i in range(len(getattr(params_list[0], arrs))):
                arrays = [getattr(p, arrs)[i] for p in params_list]
                b = _Bound(arrays, arrays[0].shape, d, t)
                bounds.append(b)
                getattr(out, name).append(b.tensor)
        if self.desc.eta_feedback is not None:
            for m in range(len(params_list[0].Y)):
                keep = np.stack([plasticity.feedback_keep(p.Y_mask, m, np.asarray(p.Y[m]))
                                 for p in params_list])
                out.keep.append(torch.as_tensor(keep, device=d, dtype=t))
        return out, bounds

    def bind_state(self, states: list[State]) -> tuple[TState, list[LayerState[_Bound]]]:
        """The members' states as one :data:`TState` (B = 1) and, by layer, the bindings
        that write it back."""
        st, bounds = [], []
        for l, layer0 in enumerate(states[0].layers):
            bound = {}
            for k in LAYER_FIELDS:
                a0 = getattr(layer0, k)
                shape = (a0.shape[0], 1, a0.shape[1]) if a0.ndim == 2 else (1, a0.shape[0])
                bound[k] = _Bound([getattr(s.layers[l], k) for s in states], shape,
                                  self.device, self.dtype)
            bounds.append(LayerState(**bound))
            st.append(LayerState(**{k: b.tensor for k, b in bound.items()}))
        return st, bounds

    def cleared(self, S: int, B: int) -> TState:
        """Cleared state of S members x B images (MODEL.md 9)."""
        z = dict(device=self.device, dtype=self.dtype)
        return [LayerState(torch.zeros(S, B, n, **z), torch.zeros(S, self.taps, B, n, **z),
                           *(torch.zeros(S, B, n, **z) for _ in range(4)))
                for n in self.sizes]

    def _basal(self, P: TParams, m: int, s_below: torch.Tensor) -> torch.Tensor:
        """``V_b = W[m] @ s + b[m]`` for every (step, image): (S, ..., n_in) -> (S, ..., n_out)."""
        S = s_below.shape[0]
        flat = s_below.reshape(S, -1, s_below.shape[-1])
        vb = torch.baddbmm(P.b[m].unsqueeze(1), flat, P.W[m].transpose(1, 2))
        return vb.view(*s_below.shape[:-1], vb.shape[-1])

    def _spikes(self, rate64: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return ops.poisson_from_uniform(rate64, u).to(self.dtype)

    def _filter(self, l: int, spk: torch.Tensor, st: TState, steps: int, ext: dict,
                trL: dict, trS: dict) -> torch.Tensor:
        """Filtered trains of layer l over the phase (MODEL.md 2) from its spike counts."""
        c = self.c
        S = spk.shape[0]
        if c.exact_kernel:
            # dynamics.exact_filter_step as a recurrence over the phase:
            # trace(t) = decay * (trace(t-1) + S(t)).
            trL[l] = self.scan(c.decay_L, c.decay_L * spk, st[l].trace_L)
            trS[l] = self.scan(c.decay_s, c.decay_s * spk, st[l].trace_s)
            return (trL[l] - trS[l]) / c.tau_gap
        hist = st[l].history.flip(1)
        ext[l] = torch.cat([hist.expand(S, *hist.shape[1:]), spk], 1)
        return self.filter(ext[l], steps)

    def _window(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member (first step, number of steps) of the integration window (MODEL.md 4)."""
        first, count = dyn.integration_window(self.phases, lengths)
        S = lengths.shape[0]
        def as_t(x):
            if torch.is_tensor(x):
                return x
            return torch.full((S,), int(x), dtype=torch.int64, device=self.device)
        return as_t(first), as_t(count)

    def _teaching(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member teaching conductances (S, n_out), float64
        (:func:`segdend.dynamics.teaching_conductances`)."""
        n_out = self.sizes[-1]
        g_E = (torch.arange(n_out, device=self.device)[None, :] == labels[:, None])
        g_E = g_E.to(torch.float64)
        return g_E, 1.0 - g_E

    # -- spiking phase ------------------------------------------------------------------------

    def spiking_phase(self, P: TParams, st: TState, x_rate64: torch.Tensor, keys: torch.Tensor,
                      phase: int, lengths: np.ndarray, lengths_dev: torch.Tensor,
                      labels: torch.Tensor | None = None, delays: list | None = None,
                      window: tuple[torch.Tensor, torch.Tensor] | None = None,
                      test: bool = False, hidden: bool = False
                      ) -> tuple[PhaseSummary, TState | None]:
        """One phase of S members x B images (forward, or target when ``labels`` is given).

        ``x_rate64`` (S or 1, B, n_in) input rates in float64; ``keys`` (S, B) int64 stream
        keys; ``lengths`` (S,) phase lengths (host) and ``lengths_dev`` the same on the
        device; ``delays[m]`` (S, n_m) per-neuron plateau delays (random plateau times);
        ``window`` overrides the integration window. Returns the summary and, unless
        ``test``, the carried state at each member's end of phase.
        """
        c = self.c
        S, B = keys.shape
        T = int(np.max(lengths))
        top = self.top
        spk, s, phi, v, ext, trL, trS = {}, {}, {}, {}, {}, {}, {}
        u = self.tables.uniforms(keys, phase, T)
        spk[0] = self._spikes(x_rate64.unsqueeze(1), u[0])
        s[0] = self._filter(0, spk[0], st, T, ext, trL, trS)
        teach = None
        if labels is not None:
            g_E, g_I = self._teaching(labels)
            teach = (g_E, g_I)
        if self.stepwise:
            self._layers_stepwise(P, st, u, T, teach, spk, s, phi, v, ext, trL, trS)
        else:
            for l in range(1, top + 1):
                vb = self._basal(P, l - 1, s[l - 1])
                v0 = st[l].v
                if l < top:
                    v[l] = self.scan(self.hid_a, self.hid_c * vb, v0)
                elif teach is None:
                    v[l] = self.scan(self.out_a, self.out_c * vb, v0)
                else:
                    a, k_c, k_0 = self._teaching_coefficients(*teach)
                    v[l] = self.scan(a, k_c * vb + k_0, v0)
                phi[l] = ops.rate(v[l], c.phi_max)
                spk[l] = self._spikes(phi[l].to(torch.float64), u[l])
                s[l] = self._filter(l, spk[l], st, T, ext, trL, trS)
                del vb
        if window is None:
            window = self._window(lengths_dev)
        summary = self._summarise(P, st, T, lengths_dev, window, s, phi, v, delays, test,
                                  hidden)
        if test:
            return summary, None
        return summary, self._carry(st, x_rate64, lengths_dev, s, phi, v, ext, trL, trS)

    def _teaching_coefficients(self, g_E: torch.Tensor, g_I: torch.Tensor):
        """Output soma in the target phase, ``U(t) = a U(t-1) + c U_b(t) + k`` per neuron,
        read off :func:`segdend.dynamics.output_soma_step` with the teaching current."""
        c = self.c

        def step(u, u_b):
            current = dyn.teaching_current(u, g_E, g_I, c.E_E, c.E_I)
            return dyn.output_soma_step(u, u_b, current, c.g_L, c.g_D, c.dt)

        k = step(0.0, 0.0)
        a, cc = step(1.0, 0.0) - k, step(0.0, 1.0) - k
        shape = (g_E.shape[0], 1, 1, g_E.shape[1])
        return tuple(x.view(shape).to(self.dtype) for x in (a, cc, k))

    def _layers_stepwise(self, P, st, u, T, teach, spk, s, phi, v, ext, trL, trS):
        """Layers 1..top advanced step by step (g_A > 0), with dynamics.py's step functions."""
        c, top, dt_ = self.c, self.top, self.dtype
        S, _, B, _ = u[0].shape
        like = dict(device=self.device, dtype=dt_)
        if teach is not None:
            g_E, g_I = (g.unsqueeze(1).to(dt_) for g in teach)
        cur_v, cur_s, cur_phi, cur_L, cur_S = {}, {}, {}, {}, {}
        for l in range(1, top + 1):
            n = self.sizes[l]
            for d in (v, phi, s, spk):
                d[l] = torch.empty(S, T, B, n, **like)
            cur_v[l] = st[l].v.expand(S, B, n)
            cur_s[l] = st[l].s.expand(S, B, n)
            cur_phi[l] = st[l].phi.expand(S, B, n)
            if c.exact_kernel:
                trL[l], trS[l] = torch.empty(S, T, B, n, **like), torch.empty(S, T, B, n, **like)
                cur_L[l] = st[l].trace_L.expand(S, B, n)
                cur_S[l] = st[l].trace_s.expand(S, B, n)
            else:
                hist = st[l].history.flip(1)
                ext[l] = torch.cat([hist.expand(S, *hist.shape[1:]),
                                    torch.zeros(S, T, B, n, **like)], 1)
        fb = cur_phi if self.fb_key == "phi" else cur_s
        for t in range(T):
            for l in range(1, top + 1):
                m = l - 1
                s_below = s[l - 1][:, t]
                v_basal = torch.baddbmm(P.b[m].unsqueeze(1), s_below, P.W[m].transpose(1, 2))
                if l < top:
                    # the source layer has not been updated in this step yet: up to t-1
                    v_apical = torch.bmm(fb[self.desc.feedback_source[m]],
                                         P.Y[m].transpose(1, 2))
                    vt = dyn.hidden_soma_step(cur_v[l], v_basal, v_apical, c.g_L, c.g_B,
                                              c.g_A, c.dt)
                else:
                    current = (0.0 if teach is None
                               else dyn.teaching_current(cur_v[l], g_E, g_I, c.E_E, c.E_I))
                    vt = dyn.output_soma_step(cur_v[l], v_basal, current, c.g_L, c.g_D, c.dt)
                pt = ops.rate(vt, c.phi_max)
                sp = ops.poisson_from_uniform(pt.to(torch.float64), u[l][:, t]).to(dt_)
                if c.exact_kernel:
                    cur_L[l], cur_S[l], st_ = dyn.exact_filter_step(
                        cur_L[l], cur_S[l], sp, c.decay_L, c.decay_s, c.tau_gap)
                    trL[l][:, t], trS[l][:, t] = cur_L[l], cur_S[l]
                else:
                    ext[l][:, self.taps + t] = sp
                    st_ = self.filter(ext[l][:, t:t + self.taps + 1], 1)[:, 0]
                v[l][:, t], phi[l][:, t], s[l][:, t], spk[l][:, t] = vt, pt, st_, sp
                cur_v[l], cur_phi[l], cur_s[l] = vt, pt, st_

    def _summarise(self, P, st, T, lengths_dev, window, s, phi, v, delays, test, hidden
                   ) -> PhaseSummary:
        """Window averages of a phase (MODEL.md 4; in testing MODEL.md 9), all quantities
        through one masked product."""
        dt_, top = self.dtype, self.top
        L = top
        first, count = window
        S = first.shape[0]
        ar = torch.arange(T, device=self.device)
        mask = ((ar[None, :] >= first[:, None]) & (ar[None, :] < (first + count)[:, None]))
        mask = mask.to(dt_).unsqueeze(1)  # (S, 1, T)
        vbar, sbar, phibar = [None] * L, [None] * L, [None] * L
        abar, alpha, sbar_fb = [None] * (L - 1), [None] * (L - 1), [None] * (L - 1)
        parts: list[tuple[list, int, torch.Tensor]] = [(vbar, L - 1, v[top])]
        seqs = {}
        if test:
            if hidden:
                parts += [(phibar, m, phi[m + 1]) for m in range(L - 1)]
        else:
            parts += [(vbar, l - 1, v[l]) for l in range(1, top)]
            parts += [(sbar, l - 1, s[l - 1]) for l in range(1, top + 1)]
            parts += [(phibar, l - 1, phi[l]) for l in range(1, top + 1)]
            src_trace = phi if self.fb_key == "phi" else s
            for m in range(L - 1):
                src = self.desc.feedback_source[m]
                carried = getattr(st[src], self.fb_key)
                # what the apical dendrite saw at each step: the source up to t-1
                seqs[m] = torch.cat([carried.expand(S, *carried.shape[1:]).unsqueeze(1),
                                     src_trace[src][:, :T - 1]], 1)
                parts.append((sbar_fb, m, seqs[m]))
        B = v[top].shape[2]
        flat = torch.cat([x.expand(S, T, B, x.shape[-1]) for _, _, x in parts], -1)
        means = torch.bmm(mask, flat.view(S, T, -1)).view(S, B, -1) / count.to(dt_).view(S, 1, 1)
        offset = 0
        for target, i, x in parts:
            target[i] = means[..., offset:offset + x.shape[-1]]
            offset += x.shape[-1]
        if test:
            return PhaseSummary(vbar, sbar, phibar, abar, alpha, sbar_fb)
        for m in range(L - 1):
            Yt = P.Y[m].transpose(1, 2)
            if delays is None:
                # mean over the window of Y @ s_fb(t) = Y @ (mean of s_fb): one product
                abar[m] = torch.bmm(sbar_fb[m], Yt)
            else:
                seq = seqs[m]
                va = torch.bmm(seq.reshape(S, T * B, -1), Yt).view(S, T, B, -1)
                ends = (lengths_dev - 1)[:, None] - delays[m]  # the plateau's step, per neuron
                if self.phases.integration == "last":
                    starts = ends - count[:, None] + 1
                else:
                    starts = first[:, None].expand_as(ends)
                t3 = ar[None, :, None]
                m3 = ((t3 >= starts[:, None, :]) & (t3 <= ends[:, None, :])).to(dt_)
                abar[m] = ((va * m3.unsqueeze(2)).sum(1)
                           / (ends - starts + 1).to(dt_).unsqueeze(1))
            alpha[m] = ops.sigmoid(abar[m])
        return PhaseSummary(vbar, sbar, phibar, abar, alpha, sbar_fb)

    def _carry(self, st, x_rate64, lengths_dev, s, phi, v, ext, trL, trS) -> TState:
        """The state at each member's last step of the phase (MODEL.md 4)."""
        S = lengths_dev.shape[0]
        idx = lengths_dev - 1
        ar = torch.arange(S, device=self.device)
        new = []
        for l in range(self.top + 1):
            at_end: dict[str, torch.Tensor] = {}
            if l == 0:
                at_end["phi"] = x_rate64.to(self.dtype).expand(S, *x_rate64.shape[1:])
            else:
                at_end["v"] = v[l][ar, idx]
                at_end["phi"] = phi[l][ar, idx]
            at_end["s"] = s[l][ar, idx]
            if self.c.exact_kernel:
                at_end["trace_L"] = trL[l][ar, idx]
                at_end["trace_s"] = trS[l][ar, idx]
            else:
                k = torch.arange(self.taps, device=self.device)
                hidx = self.taps + idx[:, None] - k[None, :]
                at_end["history"] = ext[l][ar[:, None], hidx]
            new.append(replace(st[l], **at_end))
        return new

    # -- rate mode (MODEL.md 8) ---------------------------------------------------------------

    def rate_phase(self, P: TParams, pixels: torch.Tensor, labels: torch.Tensor | None = None
                   ) -> PhaseSummary | tuple[PhaseSummary, PhaseSummary]:
        """Steady-state rates of S members x B images; ``pixels`` (S or 1, B, n_in)
        (MODEL.md 8). With ``labels``, returns the forward and the target phase: they share
        everything below the output soma, which is computed once."""
        c = self.c
        S = P.W[0].shape[0]
        s = c.phi_max * pixels
        s = s.expand(S, *s.shape[1:])
        vbar, sbar, phibar = [], [], []
        for m in range(self.top):
            v_basal = self._basal(P, m, s)
            if m < self.top - 1:
                v = dyn.rate_hidden_soma(v_basal, c.k_B)
            else:
                v = dyn.rate_output_soma(v_basal, 0.0, 0.0, c.g_L, c.g_D, c.E_E, c.E_I)
            sbar.append(s)
            vbar.append(v)
            s = ops.rate(v, c.phi_max)
            phibar.append(s)
        fwd = self._rate_summary(P, vbar, sbar, phibar)
        if labels is None:
            return fwd
        g_E, g_I = (g.unsqueeze(1).to(self.dtype) for g in self._teaching(labels))
        u = dyn.rate_output_soma(v_basal, g_E, g_I, c.g_L, c.g_D, c.E_E, c.E_I)
        tgt = self._rate_summary(P, vbar[:-1] + [u], sbar, phibar[:-1] + [ops.rate(u, c.phi_max)])
        return fwd, tgt

    def _rate_summary(self, P, vbar, sbar, phibar) -> PhaseSummary:
        fb = [phibar[self.desc.feedback_source[m] - 1] for m in range(self.top - 1)]
        abar = [torch.bmm(fb[m], P.Y[m].transpose(1, 2)) for m in range(self.top - 1)]
        return PhaseSummary(vbar, sbar, phibar, abar, [ops.sigmoid(a) for a in abar], fb)

    # -- learning (MODEL.md 5, 7) -------------------------------------------------------------

    def update(self, P: TParams, fwd: PhaseSummary, tgt: PhaseSummary, eta_P: torch.Tensor,
               eta_fb: torch.Tensor | None, want_bp: bool,
               burst_keys: torch.Tensor | None = None):
        """:func:`segdend.plasticity.update_network` for S members (vectors (S, n)), the
        hidden errors by the rule's own function (:data:`segdend.plasticity.HIDDEN_RULES`);
        ``eta_P[:, m] = eta[m] * P`` per member; ``burst_keys`` (S,) int64 keys of the
        rule's draws (rules that draw). Returns (errors, errors_bp)."""
        c, rule = self.c, self.rule
        top = self.top - 1
        errors = [None] * self.top
        errors_bp = [None] * self.top
        errors[top] = ops.output_error(tgt.phibar[top], fwd.vbar[top], c.phi_max, c.k_D)
        errors_bp[top] = errors[top]
        ops.apply_update(P.W[top], P.b[top], errors[top], fwd.sbar[top], eta_P[:, top])
        for m in range(top - 1, -1, -1):
            W_up_T = P.W[m + 1].transpose(1, 2)
            if want_bp or rule.needs_bp:
                # backprop uses the weights above after their update (plasticity.py)
                errors_bp[m] = ops.hidden_error_propagated(
                    W_up_T, errors_bp[m + 1], fwd.vbar[m], c.phi_max, c.k_B)
            u_t = u_f = None
            if rule.draws:
                n = fwd.vbar[m].shape[-1]
                u_f = trng.layer_uniforms(burst_keys, 0, 0, m + 1, n)
                u_t = trng.layer_uniforms(burst_keys, 1, 0, m + 1, n)
            above = errors[top] if self.desc.broadcast else errors[m + 1]
            errors[m] = self.rule_error(tgt.alpha[m], fwd.alpha[m], fwd.vbar[m], P.Y[m], above,
                                        W_up_T, errors_bp[m + 1], u_t, u_f, c.phi_max, c.k_B,
                                        self.desc.burst_scale)
            ops.apply_update(P.W[m], P.b[m], errors[m], fwd.sbar[m], eta_P[:, m])
            if eta_fb is not None:
                e_inv = ops.feedback_error(fwd.vbar[m], fwd.alpha[m], fwd.abar[m], c.phi_max)
                P.Y[m] -= eta_fb[:, m, None, None] * ops.outer(e_inv, fwd.sbar_fb[m]) * P.keep[m]
        return errors, errors_bp

    def refresh_feedback(self, P: TParams, noise_keys: torch.Tensor) -> None:
        """ReferenceEngine.refresh_feedback for S members: the variant's own function
        (``feedback.FEEDBACK_VARIANTS``) on tensors, written into ``P.Y`` (MODEL.md 7);
        ``noise_keys`` (S,) int64."""
        if not self.feedback.derived:
            return
        Y = self.feedback_refresh(P.W, P.Y, self.desc.broadcast, noise_keys,
                                  self.model.feedback_noise_sd)
        for y, new in zip(P.Y, Y, strict=True):
            y.copy_(new)

    def train_members(self, params_list: list[Params], states: list[State],
                      batches: list[TrainBatch], eta_P: np.ndarray, eta_fb: np.ndarray | None,
                      record: tuple[str, ...] = ()) -> list[TrainResult]:
        """Online learning of S members, each on its own batch (same number of examples);
        ``eta_P`` (S, layers) each member's update coefficients ``eta * P``
        (``ModelDescription.scaled``), ``eta_fb`` (S, hidden layers) its feedback learning
        rates or None (no feedback learning)."""
        S = len(params_list)
        n = int(batches[0].labels.shape[0])
        if any(int(b.labels.shape[0]) != n for b in batches):
            raise SegdendError("every member of a population must get the same number of "
                               "training examples per call")
        for p in params_list:
            _check_params(self.model, p)
        dev, dt_ = self.device, self.dtype
        c, top, n_hidden = self.c, self.top, self.n_hidden
        spiking = self.desc.spiking
        P, pbounds = self.bind_params(params_list)
        st, sbounds = self.bind_state(states) if spiking else ([], [])
        pix = torch.as_tensor(np.stack([np.asarray(b.pixels, dtype=np.float64)
                                        for b in batches])).to(dev)
        labels = torch.as_tensor(np.stack([np.asarray(b.labels, dtype=np.int64)
                                           for b in batches])).to(dev)
        lengths = np.stack([np.asarray(b.lengths, dtype=np.int64).reshape(n, 2)
                            for b in batches])
        lengths_dev = torch.as_tensor(lengths).to(dev)
        keys = torch.as_tensor(np.stack([trng.keys_as_int64(b.keys) for b in batches])).to(dev)
        noise_keys = torch.as_tensor(np.stack([trng.keys_as_int64(b.noise_keys)
                                               for b in batches])).to(dev)
        burst_keys = None
        if self.rule.draws:
            if any(b.burst_keys is None for b in batches):
                raise SegdendError(f"the {self.rule.name!r} learning rule draws random numbers: "
                                   "the batch needs burst_keys (train.make_batch makes them)")
            burst_keys = torch.as_tensor(np.stack([trng.keys_as_int64(b.burst_keys)
                                                   for b in batches])).to(dev)
        delays = self._all_plateau_delays(batches) if spiking else None
        eta_P_t = torch.as_tensor(np.asarray(eta_P, dtype=np.float64)).to(device=dev, dtype=dt_)
        eta_fb_t = (None if eta_fb is None
                    else torch.as_tensor(np.asarray(eta_fb, dtype=np.float64)).to(dev, dt_))
        want_angle = "bp_angle" in record
        loss_out = torch.zeros(S, n, dtype=torch.float64, device=dev)
        loss_hidden = torch.zeros(S, n, n_hidden, dtype=torch.float64, device=dev)
        correct = torch.zeros(S, n, dtype=torch.bool, device=dev)
        angles = torch.zeros(S, n, n_hidden, dtype=torch.float64, device=dev)
        for i in range(n):
            y = labels[:, i]
            if spiking:
                x64 = c.phi_max * pix[:, i].unsqueeze(1)
                k = keys[:, i:i + 1]
                fwd, st = self.spiking_phase(
                    P, st, x64, k, 0, lengths[:, i, 0], lengths_dev[:, i, 0],
                    delays=None if delays is None else [d[:, i] for d in delays[0]])
                tgt, st = self.spiking_phase(
                    P, st, x64, k, 1, lengths[:, i, 1], lengths_dev[:, i, 1], labels=y,
                    delays=None if delays is None else [d[:, i] for d in delays[1]])
            else:
                x = pix[:, i].unsqueeze(1).to(dt_)
                fwd, tgt = self.rate_phase(P, x, y)
            fwd, tgt = member_vectors(fwd), member_vectors(tgt)
            errors, errors_bp = self.update(P, fwd, tgt, eta_P_t, eta_fb_t, want_angle,
                                            None if burst_keys is None else burst_keys[:, i])
            self.refresh_feedback(P, noise_keys[:, i])
            loss_out[:, i] = ops.output_loss(tgt.phibar[top - 1], fwd.vbar[top - 1], c.phi_max)
            for m in range(n_hidden):
                loss_hidden[:, i, m] = ops.hidden_loss(tgt.alpha[m], fwd.alpha[m])
                if want_angle:
                    angles[:, i, m] = ops.angle(errors[m], errors_bp[m])
            correct[:, i] = torch.argmax(fwd.vbar[top - 1], dim=-1) == y
        for b in pbounds:
            b.write_back()
        for layer, bound in zip(st, sbounds, strict=True):
            for k in LAYER_FIELDS:
                b, now = getattr(bound, k), getattr(layer, k)
                if now is not b.tensor:
                    b.tensor.copy_(now.reshape(b.tensor.shape))
                b.write_back()
        lo, lh, co = loss_out.cpu().numpy(), loss_hidden.cpu().numpy(), correct.cpu().numpy()
        an = angles.cpu().numpy()
        out = []
        for j in range(S):
            r = TrainResult(lo[j].copy(), lh[j].copy(), co[j].copy())
            if want_angle:
                r.records["bp_angle"] = an[j].copy()
            out.append(r)
        return out

    def _all_plateau_delays(self, batches: list[TrainBatch]) -> list | None:
        """Per phase, per hidden layer: (S, n_examples, n_m) plateau delays on the device,
        from ``rng.layer_normals(plateau_key, phase, m + 1, n_m)`` as in the reference."""
        model = self.model
        if not self.desc.random_plateaus:
            return None
        out = []
        for p in (0, 1):
            per_layer = []
            for m, n_m in enumerate(model.layers[:-1]):
                z = np.array([[rng.layer_normals(np.uint64(k), p, m + 1, n_m)
                               for k in b.plateau_keys] for b in batches])
                d = plateau_delays(z.reshape(len(batches), -1, n_m), model.plateau_time_sd,
                                   model.plateau_time_max)
                per_layer.append(torch.as_tensor(d).to(self.device))
            out.append(per_layer)
        return out

    # -- testing (MODEL.md 9) -----------------------------------------------------------------

    def test_chunk(self, S: int) -> int:
        """Images per chunk so that one (T x batch x n) float64 tensor stays in budget."""
        if self.max_batch is not None:
            return max(1, int(self.max_batch))
        steps = self.phases.test_length if self.desc.spiking else 1
        per_image = steps * max(self.sizes) * 8 * S
        budget = TEST_BUDGET.get(self.device.type, TEST_BUDGET["cuda"])
        return int(max(1, min(4096, budget // per_image)))

    def test_members(self, params_list: list[Params], pixels: np.ndarray, keys: np.ndarray,
                     hidden: bool = False) -> list[TestResult]:
        """Each image from a cleared state, independently; ``keys`` (S, n) uint64."""
        S = len(params_list)
        for p in params_list:
            _check_params(self.model, p)
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, self.sizes[0])
        n = pixels.shape[0]
        keys = trng.keys_as_int64(np.asarray(keys, dtype=np.uint64).reshape(S, n))
        if n == 0:
            empty = TestResult(np.zeros(0, dtype=np.int64),
                               [np.zeros((0, k)) for k in self.sizes[1:-1]] if hidden else [],
                               np.zeros((0, self.sizes[-1])))
            return [empty for _ in range(S)]
        P, _ = self.bind_params(params_list)
        chunk = self.test_chunk(S)
        T, W = self.phases.test_length, self.phases.test_window
        pred, volt = [], []
        rates: list[list[torch.Tensor]] = [[] for _ in range(self.n_hidden)]
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            B = stop - start
            x = torch.as_tensor(pixels[start:stop]).to(self.device).unsqueeze(0)
            if not self.desc.spiking:
                summ = self.rate_phase(P, x.to(self.dtype))
            else:
                k = torch.as_tensor(keys[:, start:stop]).to(self.device)
                lengths = np.full(S, T, dtype=np.int64)
                lengths_dev = torch.full((S,), T, dtype=torch.int64, device=self.device)
                window = (torch.full((S,), T - W, dtype=torch.int64, device=self.device),
                          torch.full((S,), W, dtype=torch.int64, device=self.device))
                summ, _ = self.spiking_phase(P, self.cleared(S, B), self.c.phi_max * x, k, 0,
                                             lengths, lengths_dev, window=window, test=True,
                                             hidden=hidden)
            vb = summ.vbar[-1]
            volt.append(vb.to(torch.float64).cpu())
            pred.append(torch.argmax(vb, dim=-1).cpu())
            if hidden:
                for m in range(self.n_hidden):
                    rates[m].append(summ.phibar[m].to(torch.float64).cpu())
        volt_all = torch.cat(volt, 1).numpy()
        pred_all = torch.cat(pred, 1).numpy()
        out = []
        for j in range(S):
            r = TestResult(pred_all[j].astype(np.int64), output_voltage=volt_all[j].copy())
            if hidden:
                r.hidden_rates = [torch.cat(rates[m], 1)[j].numpy().copy()
                                  for m in range(self.n_hidden)]
            out.append(r)
        return out


def _check_params(model, params: Params) -> None:
    from segdend.network import check_shapes
    check_shapes(model, params)
