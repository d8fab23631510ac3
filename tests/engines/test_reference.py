"""The reference simulator against the golden vectors and the spec's update order."""

from pathlib import Path

import numpy as np
import pytest
from _helpers import tiny_config

from segdend import plasticity, rng
from segdend.engines.reference import ReferenceEngine
from segdend.network import Params, initialise

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.fixture(scope="module")
def spiking_golden():
    return np.load(GOLDEN / "spiking_one_example.npz")


def given_spikes(g):
    names = {0: "in", 1: "hidden", 2: "out"}

    def draw(phase, step, layer, rates):
        return g[f"spikes_{names[layer]}_{('forward', 'target')[phase]}"][step]

    return draw


def test_spiking_example_matches_golden_vectors(spiking_golden):
    g = spiking_golden
    cfg = tiny_config(training={"eta": list(g["eta"])})
    eng = ReferenceEngine(cfg)
    p = Params([g["W0"].copy(), g["W1"].copy()], [g["b0"].copy(), g["b1"].copy()],
               [g["Y"].copy()])
    state = eng.new_state()
    draw = given_spikes(g)
    fwd = eng.run_phase(p, state, g["pixels"], int(g["T_forward"]), 0, draw, keep_traces=True)
    tgt = eng.run_phase(p, state, g["pixels"], int(g["T_target"]), 1, draw,
                        label=int(g["label"]), keep_traces=True)
    close = dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(fwd.traces["v0"], g["v_soma_hidden_forward"], **close)
    np.testing.assert_allclose(fwd.traces["v_apical0"], g["v_apical_forward"], **close)
    np.testing.assert_allclose(fwd.traces["v1"], g["v_soma_out_forward"], **close)
    np.testing.assert_allclose(tgt.traces["v0"], g["v_soma_hidden_target"], **close)
    np.testing.assert_allclose(tgt.traces["v_apical0"], g["v_apical_target"], **close)
    np.testing.assert_allclose(tgt.traces["v1"], g["v_soma_out_target"], **close)
    np.testing.assert_allclose(fwd.vbar[0], g["vbar_hidden_forward"], **close)
    np.testing.assert_allclose(fwd.vbar[1], g["ubar_out_forward"], **close)
    np.testing.assert_allclose(fwd.sbar[0], g["sbar_in_forward"], **close)
    np.testing.assert_allclose(fwd.sbar[1], g["sbar_hidden_forward"], **close)
    np.testing.assert_allclose(fwd.alpha[0], g["alpha_f"], **close)
    np.testing.assert_allclose(tgt.alpha[0], g["alpha_t"], **close)
    np.testing.assert_allclose(tgt.phibar[1], g["phibar_out_target"], **close)
    plasticity.update_network(p, eng.desc, fwd, tgt)
    for name in ("W0", "b0", "W1", "b1"):
        got = (p.W if name[0] == "W" else p.b)[int(name[1])]
        np.testing.assert_allclose(got, g[f"{name}_after"], **close)


def test_rate_mode_three_examples_match_golden():
    r = np.load(GOLDEN / "rate_three_examples.npz")
    cfg = tiny_config(model={"mode": "rate"}, training={"eta": list(r["eta"])})
    eng = ReferenceEngine(cfg)
    p = Params([r["W0"].copy(), r["W1"].copy()], [r["b0"].copy(), r["b1"].copy()],
               [r["Y"].copy()])
    for x, y in zip(r["pixels"], r["labels"], strict=True):
        eng.learn(p, eng.new_state(), x, int(y), (2, 2), 0, 0, 0)
    for name in ("W0", "b0", "W1", "b1"):
        got = (p.W if name[0] == "W" else p.b)[int(name[1])]
        np.testing.assert_allclose(got, r[f"{name}_after"], rtol=1e-12, atol=1e-14)


def _one_spike(layer_at, step_at, n_by_layer):
    def draw(phase, step, layer, rates):
        out = np.zeros(n_by_layer[layer])
        if (layer, step) == (layer_at, step_at):
            out[0] = 1
        return out
    return draw


def test_feedforward_has_zero_delay_and_feedback_one_step():
    cfg = tiny_config()
    eng = ReferenceEngine(cfg)
    p = initialise(cfg.model, 0)
    sizes = {0: 16, 1: 8, 2: 3}
    # an input spike at step 5 reaches the hidden basal dendrite in step 5 itself
    fwd = eng.run_phase(p, eng.new_state(), np.zeros(16), 50, 0, _one_spike(0, 5, sizes),
                        keep_traces=True)
    vb = fwd.traces["v_basal0"]
    assert np.all(vb[5] != vb[4]) and np.allclose(vb[:5], vb[0])
    # an output spike at step 5 reaches the apical dendrite only in step 6
    fwd = eng.run_phase(p, eng.new_state(), np.zeros(16), 50, 0, _one_spike(2, 5, sizes),
                        keep_traces=True)
    va = fwd.traces["v_apical0"]
    assert np.all(va[:6] == 0) and np.all(va[6] != 0)
    # and a hidden spike at step 5 reaches the output dendrite in step 5
    fwd = eng.run_phase(p, eng.new_state(), np.zeros(16), 50, 0, _one_spike(1, 5, sizes),
                        keep_traces=True)
    ub = fwd.traces["v_basal1"]
    assert np.all(ub[5] != ub[4])


def test_rate_mode_is_deterministic():
    cfg = tiny_config(model={"mode": "rate"})
    gen = np.random.default_rng(3)
    pixels, labels = gen.random((20, 16)), gen.integers(0, 3, 20)
    finals = []
    for _ in range(2):
        eng = ReferenceEngine(cfg)
        p = initialise(cfg.model, 7)
        for x, y in zip(pixels, labels, strict=True):
            eng.learn(p, eng.new_state(), x, int(y), (2, 2), 0, 0, 0)
        finals.append(p)
    for a, b in zip(finals[0].W + finals[0].b, finals[1].W + finals[1].b, strict=True):
        assert np.array_equal(a, b)


def test_poisson_spikes_have_the_right_mean_rate():
    cfg = tiny_config()
    eng = ReferenceEngine(cfg)
    p = initialise(cfg.model, 0)
    pixels = np.linspace(0, 1, 16)
    key = rng.derive_key(0, rng.TEST_SPIKES, 0)
    fwd = eng.run_phase(p, eng.new_state(), pixels, 4000, 0,
                        __import__("segdend.engines.reference", fromlist=["x"]).poisson_source(key),
                        window=(100, 3900), keep_traces=True)
    # the filtered input settles at sum(kappa) * rate (MODEL.md 2: ~0.51 * rate)
    expected = eng.c.kappa.sum() * 0.2 * pixels
    np.testing.assert_allclose(fwd.sbar[0], expected, atol=0.006)


def test_random_plateau_windows_end_before_the_phase_end():
    cfg = tiny_config(model={"plateau_times": "random"})
    eng = ReferenceEngine(cfg)
    p = initialise(cfg.model, 0)
    state = eng.new_state()
    key = rng.derive_key(1, rng.TRAIN_SPIKES, 0)
    from segdend.engines.reference import poisson_source

    delays = [np.arange(8) % 6]
    a = eng.run_phase(p, state.copy(), np.full(16, 0.5), 60, 0, poisson_source(key),
                      plateau_delays=delays, keep_traces=True)
    va = a.traces["v_apical0"]
    for i, d in enumerate(delays[0]):
        end = 60 - 1 - d
        assert a.abar[0][i] == pytest.approx(va[end - 19:end + 1, i].mean())
