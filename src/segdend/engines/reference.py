"""The reference simulator: the spec, step by step, in plain NumPy float64.

It mirrors MODEL.md's equations and update order line by line and is written to be read, not
to be fast (about 10 ms per spiking training example). Every fast engine is tested against it.

Update order inside one step (MODEL.md 3): the input spikes of step t are drawn first; layers
are updated bottom-up, each as dendrites, then soma, then spikes. Feed-forward input therefore
uses the lower layer's spikes of the same step, and apical feedback the source layer's spikes
up to step t-1 (the source updates later in the step).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from segdend import dynamics as dyn
from segdend import plasticity, rng
from segdend.config import RunConfig
from segdend.engines.base import (
    LayerState,
    PhaseSummary,
    State,
    TestResult,
    TrainBatch,
    TrainResult,
)
from segdend.model import describe
from segdend.network import Params

# (phase, step, layer, rates) -> spike counts; layer 0 is the input layer.
SpikeSource = Callable[[int, int, int, np.ndarray], np.ndarray]


def poisson_source(key: np.uint64) -> SpikeSource:
    """Poisson spike counts from the counter-based stream ``key`` (MODEL.md 2)."""

    def draw(phase: int, step: int, layer: int, rates: np.ndarray) -> np.ndarray:
        u = rng.layer_uniforms(key, phase, step, layer, rates.shape[0])
        return dyn.poisson_from_uniform(rates, u)

    return draw


class ReferenceEngine:
    """Step-by-step spiking simulation and per-example rate mode (MODEL.md 2-9)."""

    name = "reference"

    def __init__(self, config: RunConfig):
        self.config = config
        self.model = config.model
        self.phases = config.phases
        self.desc = describe(config)
        self.c = self.desc.constants
        self.sizes = self.desc.sizes
        self.top = self.desc.top  # index of the output layer in `sizes`
        self.rule = self.desc.rule
        self.feedback = self.desc.feedback

    def new_state(self) -> State:
        return State.cleared(self.sizes, self.desc.taps)

    # -- one step ---------------------------------------------------------------------------

    def _emit(self, layer: LayerState, spikes: np.ndarray) -> None:
        """Record a layer's spikes of this step and update its filtered train (MODEL.md 2)."""
        c = self.c
        if c.exact_kernel:
            layer.trace_L, layer.trace_s, layer.s = dyn.exact_filter_step(
                layer.trace_L, layer.trace_s, spikes, c.decay_L, c.decay_s, c.tau_gap)
        else:
            h = layer.history
            h[1:] = h[:-1].copy()
            h[0] = spikes
            layer.s = dyn.filtered_spikes(c.kappa, h)

    def _feedback_signal(self, layers: list[LayerState], m: int) -> np.ndarray:
        """What hidden layer m's apical dendrite sees: filtered spikes (or rates) of the output
        layer (broadcast) or of layer m+1 (layer-wise), as they stand before the source's
        update in this step, i.e. up to step t-1."""
        source = layers[self.desc.feedback_source[m]]
        return source.phi if self.desc.feedback_rates else source.s

    def step(self, params: Params, state: State, x_rate: np.ndarray, phase: int, t: int,
             draw: SpikeSource, g_E: np.ndarray | None, g_I: np.ndarray | None) -> dict:
        """Advance the whole network by one time step; returns this step's traces."""
        layers, c = state.layers, self.c
        self._emit(layers[0], draw(phase, t, 0, x_rate))
        layers[0].phi = x_rate
        rec: dict[str, list[np.ndarray]] = {"v": [], "v_apical": [], "s_below": [], "phi": [],
                                            "s_fb": [], "v_basal": []}
        for l in range(1, self.top + 1):
            m, layer = l - 1, layers[l]
            s_below = layers[l - 1].s
            v_basal = dyn.dendrite(params.W[m], s_below, params.b[m])
            if l < self.top:
                s_fb = self._feedback_signal(layers, m)
                v_apical = dyn.dendrite(params.Y[m], s_fb, 0.0)
                v = dyn.hidden_soma_step(layer.v, v_basal, v_apical, c.g_L, c.g_B, c.g_A,
                                         c.dt)
                rec["v_apical"].append(v_apical)
                rec["s_fb"].append(s_fb)
            else:
                current = (0.0 if g_E is None
                           else dyn.teaching_current(layer.v, g_E, g_I, c.E_E, c.E_I))
                v = dyn.output_soma_step(layer.v, v_basal, current, c.g_L, c.g_D, c.dt)
            phi = dyn.rate(v, c.phi_max)
            layer.v, layer.phi = v, phi
            self._emit(layer, draw(phase, t, l, phi))
            rec["v"].append(v)
            rec["v_basal"].append(v_basal)
            rec["s_below"].append(s_below)
            rec["phi"].append(phi)
        return rec

    # -- one phase --------------------------------------------------------------------------

    def run_phase(self, params: Params, state: State, pixels: np.ndarray, length: int,
                  phase: int, draw: SpikeSource, label: int | None = None,
                  window: tuple[int, int] | None = None,
                  plateau_delays: list[np.ndarray] | None = None,
                  keep_traces: bool = False) -> PhaseSummary:
        """Run one phase (forward, or target when ``label`` is given) and summarise it.

        ``window`` is (first step, number of steps) of the integration window; by default
        the config's rule (MODEL.md 4). ``plateau_delays[m]`` (per neuron, steps before the
        phase's end) moves each hidden neuron's plateau window (random plateau times).
        """
        x_rate = self.c.phi_max * pixels
        g_E = g_I = None
        if label is not None:
            g_E, g_I = dyn.teaching_conductances(label, self.model.layers[-1])
        steps = [self.step(params, state, x_rate, phase, t, draw, g_E, g_I)
                 for t in range(length)]
        traces = {k: [np.array([s[k][i] for s in steps]) for i in range(len(steps[0][k]))]
                  for k in steps[0]}
        first, n = window if window is not None else dyn.integration_window(self.phases, length)
        win = slice(first, first + n)
        abar = []
        for m, va in enumerate(traces["v_apical"]):
            if plateau_delays is None:
                abar.append(va[win].mean(axis=0))
            else:
                ends = length - 1 - plateau_delays[m]  # the plateau's step, per neuron
                starts = ends - n + 1 if self.phases.integration == "last" else np.full_like(
                    ends, first)
                abar.append(np.array([va[s:e + 1, i].mean()
                                      for i, (s, e) in enumerate(zip(starts, ends, strict=True))]))
        summary = PhaseSummary(
            vbar=[v[win].mean(axis=0) for v in traces["v"]],
            sbar=[s[win].mean(axis=0) for s in traces["s_below"]],
            phibar=[p[win].mean(axis=0) for p in traces["phi"]],
            abar=abar,
            alpha=[dyn.plateau(x) for x in abar],
            sbar_fb=[s[win].mean(axis=0) for s in traces["s_fb"]],
        )
        if keep_traces:
            summary.traces = {f"{k}{i}": arr for k, arrs in traces.items()
                              for i, arr in enumerate(arrs)}
        return summary

    # -- rate mode (MODEL.md 8) ---------------------------------------------------------------

    def rate_phase(self, params: Params, pixels: np.ndarray, label: int | None
                   ) -> PhaseSummary:
        """Steady-state rates of one phase in rate mode (MODEL.md 8)."""
        c = self.c
        s = c.phi_max * pixels
        vbar, sbar, phibar = [], [], []
        for m in range(self.top):
            v_basal = dyn.dendrite(params.W[m], s, params.b[m])
            if m < self.top - 1:
                v = dyn.rate_hidden_soma(v_basal, c.k_B)
            elif label is None:
                v = dyn.rate_output_soma(v_basal, 0.0, 0.0, c.g_L, c.g_D, c.E_E, c.E_I)
            else:
                g_E, g_I = dyn.teaching_conductances(label, self.model.layers[-1])
                v = dyn.rate_output_soma(v_basal, g_E, g_I, c.g_L, c.g_D, c.E_E, c.E_I)
            sbar.append(s)
            vbar.append(v)
            s = dyn.rate(v, c.phi_max)
            phibar.append(s)
        fb = [phibar[self.desc.feedback_source[m] - 1] for m in range(self.top - 1)]
        abar = [params.Y[m] @ fb[m] for m in range(self.top - 1)]
        return PhaseSummary(vbar, sbar, phibar, abar, [dyn.plateau(a) for a in abar], fb)

    # -- the contract -------------------------------------------------------------------------

    def learn(self, params: Params, state: State, pixels: np.ndarray, label: int,
              lengths: tuple[int, int], key: np.uint64, plateau_key: np.uint64,
              noise_key: np.uint64, draw: SpikeSource | None = None, keep_traces: bool = False,
              burst_key: np.uint64 | None = None
              ) -> tuple[PhaseSummary, PhaseSummary, list[np.ndarray], list[np.ndarray]]:
        """One training example: forward phase, target phase, updates (MODEL.md 4-5)."""
        if not self.desc.spiking:
            fwd, tgt = self.rate_phase(params, pixels, None), self.rate_phase(params, pixels,
                                                                               label)
        else:
            draw = draw if draw is not None else poisson_source(key)
            delays = [None, None]
            if self.desc.random_plateaus:
                delays = [[np.array([dyn.plateau_delay(z, self.model.plateau_time_sd,
                                                       self.model.plateau_time_max)
                                     for z in rng.layer_normals(plateau_key, p, m + 1, n)])
                           for m, n in enumerate(self.model.layers[:-1])] for p in (0, 1)]
            fwd = self.run_phase(params, state, pixels, int(lengths[0]), 0, draw,
                                 plateau_delays=delays[0], keep_traces=keep_traces)
            tgt = self.run_phase(params, state, pixels, int(lengths[1]), 1, draw, label=label,
                                 plateau_delays=delays[1], keep_traces=keep_traces)
        errors, errors_bp = plasticity.update_network(params, self.desc, fwd, tgt, burst_key)
        self.refresh_feedback(params, noise_key)
        return fwd, tgt, errors, errors_bp

    def refresh_feedback(self, params: Params, noise_key: np.uint64) -> None:
        """The feedback variant's refresh after an update (``feedback.FEEDBACK_VARIANTS``,
        MODEL.md 7), as written."""
        if not self.feedback.derived:
            return
        params.Y[:] = self.feedback.refresh(params.W, params.Y, self.desc.broadcast,
                                            noise_key, self.model.feedback_noise_sd)

    def train(self, params: Params, state: State, batch: TrainBatch,
              record: tuple[str, ...] = ()) -> TrainResult:
        n = batch.labels.shape[0]
        n_hidden = self.desc.n_hidden
        out = TrainResult(np.zeros(n), np.zeros((n, n_hidden)), np.zeros(n, dtype=bool))
        if "bp_angle" in record:
            out.records["bp_angle"] = np.zeros((n, n_hidden))
        if "ubar_f" in record:
            out.records["ubar_f"] = np.zeros((n, self.model.layers[-1]))
        for i in range(n):
            fwd, tgt, errors, errors_bp = self.learn(
                params, state, batch.pixels[i], int(batch.labels[i]), tuple(batch.lengths[i]),
                batch.keys[i], batch.plateau_keys[i], batch.noise_keys[i],
                burst_key=None if batch.burst_keys is None else batch.burst_keys[i])
            out.loss_out[i] = plasticity.output_loss(tgt.phibar[-1], fwd.vbar[-1],
                                                     self.c.phi_max)
            for m in range(n_hidden):
                out.loss_hidden[i, m] = plasticity.hidden_loss(tgt.alpha[m], fwd.alpha[m])
                if "bp_angle" in record:
                    out.records["bp_angle"][i, m] = _angle(errors[m], errors_bp[m])
            out.correct[i] = int(np.argmax(fwd.vbar[-1])) == int(batch.labels[i])
            if "ubar_f" in record:
                out.records["ubar_f"][i] = fwd.vbar[-1]
        return out

    def test_image(self, params: Params, pixels: np.ndarray, key: np.uint64,
                   draw: SpikeSource | None = None) -> PhaseSummary:
        """One test image from a cleared state: a long forward phase (MODEL.md 9)."""
        if not self.desc.spiking:
            return self.rate_phase(params, pixels, None)
        state = self.new_state()
        length, window = self.phases.test_length, self.phases.test_window
        return self.run_phase(params, state, pixels, length, 0,
                              draw if draw is not None else poisson_source(key),
                              window=(length - window, window))

    def test(self, params: Params, pixels: np.ndarray, keys: np.ndarray,
             hidden: bool = False) -> TestResult:
        summaries = [self.test_image(params, p, k) for p, k in zip(pixels, keys, strict=True)]
        result = TestResult(np.array([int(np.argmax(s.vbar[-1])) for s in summaries]))
        result.output_voltage = np.array([s.vbar[-1] for s in summaries])
        if hidden:
            result.hidden_rates = [np.array([s.phibar[m] for s in summaries])
                                   for m in range(self.desc.n_hidden)]
        return result


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees between two vectors (MODEL.md 10)."""
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        return float("nan")
    return float(np.degrees(np.arccos(np.clip(a @ b / denom, -1.0, 1.0))))
