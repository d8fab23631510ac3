"""The fast CPU engine: the reference simulation compiled with Numba (MODEL.md 2-9).

:class:`NumbaEngine` has exactly the contract of
:class:`~segdend.engines.reference.ReferenceEngine` and draws the same random numbers (the
counter-based streams of :mod:`segdend.rng`), so it reproduces the reference's spikes and, to
rounding, its voltages, window averages, losses and weight updates. Params and State are
updated in place with the reference's meaning, so engines can be switched between chunks and
states exchanged through checkpoints.

Speed comes from running a whole chunk of examples (or a batch of test images, in parallel)
inside one compiled call and from event-driven synapses; see
:mod:`segdend.engines._numba_sim` for the layout and the reorganisations, each of which
leaves the arithmetic's value unchanged beyond rounding.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from segdend import dynamics as dyn
from segdend import plasticity
from segdend.config import RunConfig
from segdend.engines import _numba_learn as learn
from segdend.engines import _numba_sim as sim
from segdend.engines._numba_phase import filtered_now
from segdend.engines._numba_prims import feedback_index, rule_index
from segdend.engines.base import State, TestResult, TrainBatch, TrainResult
from segdend.engines.limits import numba_unsupported_reason as unsupported_reason
from segdend.errors import SegdendError
from segdend.model import ModelDescription, describe
from segdend.network import Params, check_shapes


class NumbaEngine:
    """Compiled spiking and rate simulation (MODEL.md 2-9), equal to the reference engine.

    Parameters
    ----------
    config : RunConfig
        The run's validated config; ``training.threads`` sets how many threads ``test``
        uses (training is sequential by nature and runs on one).

    Raises
    ------
    SegdendError
        When :func:`unsupported_reason` gives a reason.
    """

    name = "numba"

    def __init__(self, config: RunConfig):
        reason = unsupported_reason(config)
        if reason is not None:
            raise SegdendError(f"the numba engine cannot run this config: {reason}")
        self.config = config
        self.model = config.model
        self.phases = config.phases
        self.desc = describe(config)
        self.c = self.desc.constants
        self.sizes = self.desc.sizes
        self.top = self.desc.top
        self.threads = max(1, min(config.training.threads, numba.config.NUMBA_NUM_THREADS))
        self.rule = self.desc.rule
        self.cfg = _constants(config, self.desc)

    # -- parameters and state in the kernels' layout --------------------------------------

    def _pack(self, params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        check_shapes(self.model, params)
        cfg, sizes = self.cfg, self.sizes
        WT = np.empty(int(cfg.woff[-1]))
        for m, w in enumerate(params.W):
            view = WT[cfg.woff[m]:cfg.woff[m + 1]].reshape(sizes[m], sizes[m + 1])
            sim.transpose_into(np.asarray(w, dtype=np.float64), view)
        B = np.concatenate([np.zeros(sizes[0]), *[np.asarray(b, dtype=np.float64)
                                                  for b in params.b]])
        YT = np.empty(sum(y.size for y in params.Y))
        for m, y in enumerate(params.Y):
            l = m + 1
            view = YT[cfg.yoff[l]:cfg.yoff[l] + y.size].reshape(sizes[cfg.src[l]], sizes[l])
            sim.transpose_into(np.asarray(y, dtype=np.float64), view)
        return WT, B, YT

    def _feedback_keep(self, params: Params) -> np.ndarray:
        """``plasticity.feedback_keep`` of every feedback matrix in ``YT``'s layout; empty
        without feedback learning (nothing reads it then)."""
        if self.desc.eta_feedback is None:
            return np.zeros(0)
        cfg, sizes = self.cfg, self.sizes
        KT = np.empty(sum(y.size for y in params.Y))
        for m, y in enumerate(params.Y):
            l = m + 1
            view = KT[cfg.yoff[l]:cfg.yoff[l] + y.size].reshape(sizes[cfg.src[l]], sizes[l])
            keep = plasticity.feedback_keep(params.Y_mask, m, np.asarray(y, dtype=np.float64))
            sim.transpose_into(np.ascontiguousarray(keep), view)
        return KT

    def _unpack(self, params: Params, WT: np.ndarray, B: np.ndarray, YT: np.ndarray) -> None:
        cfg, sizes = self.cfg, self.sizes
        for m, w in enumerate(params.W):
            sim.transpose_into(
                WT[cfg.woff[m]:cfg.woff[m + 1]].reshape(sizes[m], sizes[m + 1]), w)
            params.b[m][...] = B[cfg.noff[m + 1]:cfg.noff[m + 2]]
        for m, y in enumerate(params.Y):
            l = m + 1
            sim.transpose_into(
                YT[cfg.yoff[l]:cfg.yoff[l] + y.size].reshape(sizes[cfg.src[l]], sizes[l]), y)

    def _load_state(self, state: State) -> sim.Net:
        cfg, taps = self.cfg, self.desc.taps
        n_all = int(cfg.noff[-1])
        net = sim.Net(np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
                      np.zeros(n_all), np.zeros((taps, n_all)), np.zeros((taps + 1, n_all)),
                      np.zeros(n_all), np.zeros(n_all), np.zeros(1, dtype=np.int64))
        for l in range(self.top + 1):
            sl, layer = slice(cfg.noff[l], cfg.noff[l + 1]), state.layers[l]
            net.v[sl] = layer.v
            net.phi[sl] = layer.phi
            net.s[sl] = layer.s
            net.trace_L[sl] = layer.trace_L
            net.trace_s[sl] = layer.trace_s
            # history[k] = S(t-k) goes to ring row (-1-k) mod taps: the next step writes row 0
            net.hist[(-1 - np.arange(taps)) % taps, sl] = layer.history
        return net

    def _store_state(self, state: State, net: sim.Net) -> None:
        cfg, c, taps = self.cfg, self.c, self.desc.taps
        rows = (net.clock[0] - 1 - np.arange(taps)) % taps  # newest first
        for l in range(self.top + 1):
            sl, layer = slice(cfg.noff[l], cfg.noff[l + 1]), state.layers[l]
            if l > 0:
                layer.v = _put(layer.v, net.v[sl])
            layer.phi = _put(layer.phi, net.phi[sl])
            if c.exact_kernel:
                layer.trace_L = _put(layer.trace_L, net.trace_L[sl])
                layer.trace_s = _put(layer.trace_s, net.trace_s[sl])
                layer.s = _put(layer.s, net.s[sl])
            else:
                layer.history = _put(layer.history, net.hist[rows, sl])
                # the kernel's own tap-ordered sum (NumPy's ``kappa @ history`` would go
                # through BLAS, whose summation order depends on the CPU)
                filtered_now(cfg, net, rows, l)
                layer.s = _put(layer.s, net.s[sl])

    # -- the contract -------------------------------------------------------------------------

    def new_state(self) -> State:
        return State.cleared(self.sizes, self.desc.taps)

    def train(self, params: Params, state: State, batch: TrainBatch,
              record: tuple[str, ...] = ()) -> TrainResult:
        n = int(np.asarray(batch.labels).shape[0])
        n_hidden = self.desc.n_hidden
        out = TrainResult(np.zeros(n), np.zeros((n, n_hidden)), np.zeros(n, dtype=bool))
        angle = "bp_angle" in record
        parts = np.zeros((n, n_hidden if angle else 0, 3))
        ubar_f = np.zeros((n if "ubar_f" in record else 0, self.model.layers[-1]))
        if n == 0:
            if angle:
                out.records["bp_angle"] = np.zeros((0, n_hidden))
            if "ubar_f" in record:
                out.records["ubar_f"] = ubar_f
            return out
        pixels = np.ascontiguousarray(batch.pixels, dtype=np.float64).reshape(
            n, self.model.n_inputs)
        labels = np.ascontiguousarray(batch.labels, dtype=np.int64)
        noise_keys = np.ascontiguousarray(batch.noise_keys, dtype=np.uint64)
        burst_keys = _burst_keys(batch, self.rule, n)
        WT, B, YT = self._pack(params)
        KT = self._feedback_keep(params)
        if not self.desc.spiking:
            sim.train_rate(self.cfg, WT, B, YT, KT, pixels, labels, noise_keys, burst_keys,
                           out.loss_out, out.loss_hidden, out.correct, parts, ubar_f)
        else:
            lengths = np.ascontiguousarray(batch.lengths, dtype=np.int64).reshape(n, 2)
            windows = np.array([[dyn.integration_window(self.phases, int(T)) for T in row]
                                for row in lengths], dtype=np.int64).reshape(n, 2, 2)
            net = self._load_state(state)
            sim.train_spiking(self.cfg, WT, B, YT, KT, net, pixels, labels, lengths, windows,
                              np.ascontiguousarray(batch.keys, dtype=np.uint64),
                              np.ascontiguousarray(batch.plateau_keys, dtype=np.uint64),
                              noise_keys, burst_keys, out.loss_out, out.loss_hidden,
                              out.correct, parts, ubar_f)
            self._store_state(state, net)
        self._unpack(params, WT, B, YT)
        if angle:
            out.records["bp_angle"] = _angles(parts)
        if "ubar_f" in record:
            out.records["ubar_f"] = ubar_f
        return out

    def test(self, params: Params, pixels: np.ndarray, keys: np.ndarray,
             hidden: bool = False) -> TestResult:
        pixels = np.ascontiguousarray(pixels, dtype=np.float64)
        n = pixels.shape[0]
        pixels = pixels.reshape(n, self.model.n_inputs)
        n_top = self.model.layers[-1]
        n_hid = int(sum(self.model.layers[:-1]))
        out_v = np.zeros((n, n_top))
        rates = np.zeros((n if hidden else 0, n_hid))
        if n > 0:
            WT, B, YT = self._pack(params)
            blocks = min(n, 4 * self.threads)
            previous = numba.get_num_threads()
            numba.set_num_threads(self.threads)
            try:
                if not self.desc.spiking:
                    sim.test_rate(self.cfg, WT, B, YT, pixels, blocks, out_v, rates)
                else:
                    T, window = self.phases.test_length, self.phases.test_window
                    sim.test_spiking(self.cfg, WT, B, YT, pixels,
                                     np.ascontiguousarray(keys, dtype=np.uint64), T, window,
                                     blocks, out_v, rates)
            finally:
                numba.set_num_threads(previous)
        result = TestResult(np.argmax(out_v, axis=1) if n else np.zeros(0, dtype=np.int64))
        result.output_voltage = out_v
        if hidden:
            bounds = np.cumsum([0, *self.model.layers[:-1]])
            result.hidden_rates = [rates[:, bounds[m]:bounds[m + 1]].copy()
                                   for m in range(self.desc.n_hidden)]
        return result



def _constants(config: RunConfig, desc: ModelDescription) -> learn.Cfg:
    """The kernels' constants (:data:`segdend.engines._numba_learn.Cfg`), filled from the
    model's description and this engine's layout of it (offsets of the flat arrays)."""
    model, c = config.model, desc.constants
    sizes = np.array(desc.sizes, dtype=np.int64)
    top = desc.top
    noff = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    woff = np.concatenate([[0], np.cumsum(sizes[:-1] * sizes[1:])]).astype(np.int64)
    src = np.zeros(top + 1, dtype=np.int64)
    yoff = np.zeros(top + 1, dtype=np.int64)
    pos = 0
    for l in range(1, top):
        src[l] = desc.feedback_source[l - 1]
        yoff[l] = pos
        pos += sizes[l] * sizes[src[l]]
    is_source = np.zeros(top + 1, dtype=np.bool_)
    is_source[src[1:top]] = True
    taps = int(desc.taps)
    kappa = np.ascontiguousarray(c.kappa, dtype=np.float64)
    # The truncated kernel is summed by recursion when it is the two-exponential kernel
    # (as dynamics.psp_kernel_taps makes it); any other shape, tap by tap.
    k = np.arange(1, taps + 1)
    two_exp = (c.decay_L**k - c.decay_s**k) / c.tau_gap
    recursive = (not c.exact_kernel
                 and bool(np.allclose(kappa, two_exp, rtol=1e-12, atol=0.0)))
    return learn.Cfg(
        sizes=sizes, noff=noff, woff=woff, yoff=yoff, src=src, is_source=is_source,
        taps=taps, kappa=kappa, exact=bool(c.exact_kernel), recursive=recursive,
        decay_L=float(c.decay_L), decay_s=float(c.decay_s),
        cut_L=float(c.decay_L**(taps + 1)), cut_s=float(c.decay_s**(taps + 1)),
        tau_gap=float(c.tau_gap), phi_max=float(c.phi_max),
        spike_floor=math.exp(-c.phi_max) * (1.0 - 1e-9), dt=float(c.dt),
        g_L=float(c.g_L), g_B=float(c.g_B), g_A=float(c.g_A),
        segregated=desc.segregated, g_D=float(c.g_D),
        E_E=float(c.E_E), E_I=float(c.E_I), k_B=float(c.k_B), k_D=float(c.k_D),
        fb_rates=desc.feedback_rates, random_plateau=desc.random_plateaus,
        plateau_sd=float(model.plateau_time_sd), plateau_max=int(model.plateau_time_max),
        integ_last=config.phases.integration == "last",
        rule=rule_index(desc.rule.name), layerwise=not desc.broadcast,
        fb_learning=desc.eta_feedback is not None,
        eta_P=np.array(desc.eta_P, dtype=np.float64),
        eta_fb=np.array(desc.eta_feedback or (), dtype=np.float64).reshape(-1),
        feedback=feedback_index(desc.feedback.name), noise_sd=float(model.feedback_noise_sd),
        rule_draws=desc.rule.draws, rule_needs_bp=desc.rule.needs_bp,
        burst_scale=desc.burst_scale,
        feedback_derived=desc.feedback.derived,
    )


def _put(old: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``value`` written into the state's array ``old`` in place when it fits (callers may
    hold it), else as a new float64 array to replace it."""
    if old.shape == value.shape and old.dtype == np.float64:
        old[...] = value
        return old
    return np.array(value, dtype=np.float64)


def _burst_keys(batch: TrainBatch, rule: plasticity.Rule, n: int) -> np.ndarray:
    """The batch's keys of the rule's draws, or zeros when the rule draws nothing."""
    if not rule.draws:
        return np.zeros(n, dtype=np.uint64)
    if batch.burst_keys is None:
        raise SegdendError(f"the {rule.name!r} learning rule draws random numbers: the batch "
                           "needs burst_keys (train.make_batch makes them)")
    return np.ascontiguousarray(batch.burst_keys, dtype=np.uint64)


def _angles(parts: np.ndarray) -> np.ndarray:
    """Degrees between local and backprop errors from (a.b, a.a, b.b), as reference._angle."""
    denom = np.sqrt(parts[..., 1]) * np.sqrt(parts[..., 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.clip(parts[..., 0] / denom, -1.0, 1.0)
        return np.where(denom == 0, np.nan, np.degrees(np.arccos(cos)))
