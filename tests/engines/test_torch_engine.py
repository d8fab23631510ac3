"""The torch engine against the reference: same draws, same spikes, same numbers.

The engine consumes the reference's counter-based uniforms bit for bit, so in float64 it
must reproduce the reference's per-example losses, ``correct`` flags, updated parameters and
carried state to rounding, for every supported option; populations must equal separate
engines; batched testing must not depend on the chunking.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import tiny_config
from variants import N_IN, TORCH_SKIP, VARIANTS, stream_keys

from segdend import dynamics as dyn
from segdend import plasticity, rng
from segdend.engines import _torch_ops as ops
from segdend.engines import _torch_rng as trng
from segdend.engines._torch_core import plateau_delays
from segdend.engines.base import TrainBatch
from segdend.engines.reference import ReferenceEngine, _angle
from segdend.engines.torch_engine import TorchEngine, TorchPopulation, unsupported_reason
from segdend.errors import SegdendError
from segdend.network import initialise

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

CLOSE = dict(rtol=1e-9, atol=1e-11)


def make_config(layers=(8, 3), **sections):
    return tiny_config(layers, n_inputs=N_IN, **sections)


def make_batch(config, n, seed=0, epoch=0):
    """Random images (every third pixel zero), labels, random phase lengths and keys."""
    gen = np.random.default_rng(seed)
    pixels = gen.random((n, config.model.n_inputs))
    pixels[:, ::3] = 0.0
    labels = gen.integers(0, config.model.layers[-1], n)
    lengths = 50 + gen.wald(2.0, 1.0, size=(n, 2)).astype(np.int64)
    return TrainBatch(pixels, labels, lengths, *stream_keys(seed, n, epoch))


def keys_for(n, seed=5):
    return rng.derive_keys(rng.derive_key(seed, rng.TEST_SPIKES, 0), np.arange(n))


def pixels_for(n, seed=1):
    pixels = np.random.default_rng(seed).random((n, N_IN))
    pixels[:, 1::4] = 0.0
    return pixels


def assert_params_close(a, b, **tol):
    for name, x, y in zip(("W", "b", "Y"), (a.W, a.b, a.Y), (b.W, b.b, b.Y), strict=True):
        assert len(x) == len(y)
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            np.testing.assert_allclose(v, u, err_msg=f"{name}[{i}]", **(tol or CLOSE))


def assert_states_close(a, b, **tol):
    a, b = a.to_arrays(), b.to_arrays()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], err_msg=k, **(tol or CLOSE))


# ---------------------------------------------------------------------------------------------
# Randomness and the equation twins


def _uniform_bits_match(device):
    gen = np.random.default_rng(0)
    keys = np.concatenate([gen.integers(0, 2**64, size=40, dtype=np.uint64),
                           np.array([0, 1, 2**63, 2**63 - 1, 2**64 - 1], dtype=np.uint64)])
    counters = np.concatenate([gen.integers(0, 2**52, size=2000, dtype=np.uint64),
                               np.array([0, 1, 2**52 - 1], dtype=np.uint64)])
    with np.errstate(over="ignore"):
        want = rng.uniform(keys[:, None], counters[None, :])
    k = torch.as_tensor(trng.keys_as_int64(keys), device=device)[:, None]
    c = torch.as_tensor(counters.view(np.int64), device=device)[None, :]
    got = trng.uniform(k, c).cpu().numpy()
    assert np.array_equal(got, want)
    # phase tables: every layer's spike uniforms of a phase at once
    sizes = (13, 7, 3)
    tables = trng.CounterTables(sizes, torch.device(device))
    kk = torch.as_tensor(trng.keys_as_int64(keys[:6]), device=device).view(3, 2)
    for phase in (0, 1):
        u = [x.cpu().numpy() for x in tables.uniforms(kk, phase, 70)]
        for s in range(3):
            for b in range(2):
                for t in (0, 1, 33, 69):
                    for layer, n in enumerate(sizes):
                        assert np.array_equal(u[layer][s, t, b],
                                              rng.layer_uniforms(keys[2 * s + b], phase, t,
                                                                 layer, n))
    z = trng.layer_normals(torch.as_tensor(trng.keys_as_int64(keys[:4]), device=device), 1, 2,
                           50).cpu().numpy()
    np.testing.assert_allclose(z, [rng.layer_normals(k, 1, 2, 50) for k in keys[:4]],
                               rtol=1e-13, atol=1e-13)


def test_uniforms_bit_equal_to_rng():
    _uniform_bits_match("cpu")


@gpu
@needs_cuda
def test_uniforms_bit_equal_to_rng_on_cuda():
    _uniform_bits_match("cuda")


def test_poisson_counts_are_bit_equal_to_dynamics():
    gen = np.random.default_rng(1)
    rates = np.concatenate([gen.random(3000) * 0.2, gen.random(500), [0.0, 1.0, 0.2]])
    u = gen.random((4, rates.size))
    u[:, :50] = 1.0 - gen.random((4, 50)) * 1e-9  # deep in the tail: large counts
    want = dyn.poisson_from_uniform(np.broadcast_to(rates, u.shape).copy(), u)
    assert want.max() >= 4
    got = ops.poisson_from_uniform(torch.as_tensor(rates)[None, :], torch.as_tensor(u))
    assert np.array_equal(got.numpy(), want)
    # the device search over the entries past level 0 (used on CUDA for large sets)
    r = np.broadcast_to(rates, u.shape)
    past = u >= np.exp(-r)
    tail = ops._poisson_tail(torch.as_tensor(r[past]), torch.as_tensor(u[past]),
                             torch.exp(-torch.as_tensor(r[past])))
    assert np.array_equal(tail.numpy(), want[past])


def test_truncated_filter_matches_the_kernel_sum():
    kappa = dyn.psp_kernel_taps(3.0, 10.0, 10)
    filt = ops.TruncatedFilter(kappa, block=16)
    spikes = np.random.default_rng(0).poisson(0.3, size=(2, 10 + 45, 3, 4)).astype(float)
    got = filt(torch.as_tensor(spikes), 45).numpy()
    for t in range(45):
        history = spikes[:, 10 + t - np.arange(10)]  # newest first, as the reference keeps it
        want = np.einsum("k,skbn->sbn", kappa, history)
        np.testing.assert_allclose(got[:, t], want, rtol=1e-13, atol=1e-15)


def test_twins_match_numpy_formulas():
    gen = np.random.default_rng(2)
    a, b, c = (gen.normal(size=(3, 7)) * 3 for _ in range(3))
    t = [torch.as_tensor(x) for x in (a, b, c)]
    close = dict(rtol=1e-13, atol=1e-15)
    for s in range(3):
        np.testing.assert_allclose(ops.output_error(t[0], t[1], 0.2, 0.857)[s].numpy(),
                                   plasticity.output_error(a[s], b[s], 0.2, 0.857), **close)
        np.testing.assert_allclose(ops.hidden_error_local(t[0], t[1], t[2], 0.2, 0.857)[s],
                                   plasticity.hidden_error_local(a[s], b[s], c[s], 0.2, 0.857),
                                   **close)
        np.testing.assert_allclose(ops.feedback_error(t[0], t[1], t[2], 0.2)[s],
                                   plasticity.feedback_error(a[s], b[s], c[s], 0.2), **close)
        B = gen.normal(size=(7, 4))
        e = gen.normal(size=4)
        got = ops.hidden_error_propagated(torch.as_tensor(B)[None], torch.as_tensor(e)[None],
                                          t[2][s:s + 1], 0.2, 0.857)[0]
        np.testing.assert_allclose(got, plasticity.hidden_error_propagated(B, e, c[s], 0.2,
                                                                           0.857), **close)
        assert float(ops.output_loss(t[0], t[1], 0.2)[s]) == pytest.approx(
            plasticity.output_loss(a[s], b[s], 0.2), rel=1e-13)
        assert float(ops.hidden_loss(t[0], t[1])[s]) == pytest.approx(
            plasticity.hidden_loss(a[s], b[s]), rel=1e-13)
        assert float(ops.angle(t[0], t[1])[s]) == pytest.approx(_angle(a[s], b[s]), abs=1e-9)
    assert np.isnan(float(ops.angle(torch.zeros(1, 3), torch.ones(1, 3))[0]))
    W, bias = gen.normal(size=(7, 5)), gen.normal(size=7)
    Wt, bt = torch.as_tensor(W.copy())[None], torch.as_tensor(bias.copy())[None]
    E, sbar = gen.normal(size=7), gen.random(5)
    ops.apply_update(Wt, bt, torch.as_tensor(E)[None], torch.as_tensor(sbar)[None],
                     torch.tensor([0.21 * 100]))
    plasticity.apply_update(W, bias, E, sbar, 0.21 * 100)
    np.testing.assert_allclose(Wt[0].numpy(), W, **close)
    np.testing.assert_allclose(bt[0].numpy(), bias, **close)
    z = gen.normal(size=5000)
    assert np.array_equal(plateau_delays(z, 3.0, 5),
                          [dyn.plateau_delay(x, 3.0, 5) for x in z])


@pytest.mark.parametrize("a", [0.3, -0.7, 0.0, "per-unit"])
def test_linear_scan_matches_the_recurrence(a):
    gen = torch.Generator().manual_seed(0)
    drive = torch.randn(2, 150, 3, 4, generator=gen, dtype=torch.float64)
    v0 = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    if a == "per-unit":
        a = torch.rand(2, 1, 3, 4, generator=gen, dtype=torch.float64) * 1.8 - 0.9
    out = ops.LinearScan(block=64)(a, drive, v0)
    v, want = v0, []
    for t in range(150):
        v = (a[:, 0] if torch.is_tensor(a) else a) * v + drive[:, t]
        want.append(v)
    torch.testing.assert_close(out, torch.stack(want, 1), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Equivalence with the reference


def case_config(name, layers=None):
    """Variant ``name`` of the shared list (tests/engines/variants.py), at its own layers or
    at ``layers``."""
    own, sections = VARIANTS[name]
    sections = {k: dict(v) for k, v in sections.items()}
    layers = own if layers is None else layers
    if len(layers) != len(own) and "eta_feedback" in sections.get("training", {}):
        sections["training"]["eta_feedback"] = [0.05] * (len(layers) - 1)
    return make_config(layers, **sections)


def run_both(config, n_examples=4, split=(2,), seed=0, device=None):
    """Train the reference and the torch engine on the same examples (the torch engine in
    several calls, carrying its state) and return both sides."""
    ref = ReferenceEngine(config)
    if device is not None:
        config = config.model_copy(update={"training": config.training.model_copy(
            update={"device": device})})
    eng = TorchEngine(config)
    p_ref = initialise(config.model, seed + 1)
    p_eng = p_ref.copy()
    s_ref, s_eng = ref.new_state(), eng.new_state()
    batch = make_batch(config, n_examples, seed=seed)
    r_ref = ref.train(p_ref, s_ref, batch, record=("bp_angle",))
    cuts = [0, *split, n_examples]
    parts = [eng.train(p_eng, s_eng, batch.part(slice(a, b)), record=("bp_angle",))
             for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    return (ref, p_ref, s_ref, r_ref), (eng, p_eng, s_eng, parts)


def check_train_equal(ref_side, eng_side):
    _, p_ref, s_ref, r_ref = ref_side
    _, p_eng, s_eng, parts = eng_side
    loss_out = np.concatenate([r.loss_out for r in parts])
    loss_hidden = np.concatenate([r.loss_hidden for r in parts])
    correct = np.concatenate([r.correct for r in parts])
    angle = np.concatenate([r.records["bp_angle"] for r in parts])
    np.testing.assert_allclose(loss_out, r_ref.loss_out, **CLOSE)
    np.testing.assert_allclose(loss_hidden, r_ref.loss_hidden, **CLOSE)
    assert np.array_equal(correct, r_ref.correct)
    # arccos near 1 turns 1e-16 into 1e-6 degrees (backprop's angle is 0)
    np.testing.assert_allclose(angle, r_ref.records["bp_angle"], rtol=0, atol=1e-5)
    assert_params_close(p_ref, p_eng)
    assert_states_close(s_ref, s_eng)


@pytest.mark.parametrize("case", [pytest.param(name, marks=pytest.mark.skip(TORCH_SKIP[name]))
                                  if name in TORCH_SKIP else name for name in VARIANTS])
def test_training_matches_reference(case):
    """Every variant of the shared list, every learning rule."""
    config = case_config(case)
    layers = config.model.layers
    n_examples, split = (3, ()) if len(layers) == 1 else (4, (2,))
    ref_side, eng_side = run_both(config, n_examples=n_examples, split=split)
    check_train_equal(ref_side, eng_side)
    # the trained weights tested on fresh images: identical predictions and voltages
    ref, p = ref_side[0], ref_side[1]
    eng = eng_side[0]
    pixels, keys = pixels_for(6), keys_for(6)
    want = ref.test(p, pixels, keys, hidden=True)
    got = eng.test(p, pixels, keys, hidden=True)
    assert np.array_equal(got.predictions, want.predictions)
    np.testing.assert_allclose(got.output_voltage, want.output_voltage, **CLOSE)
    assert len(got.hidden_rates) == len(layers) - 1
    if len(layers) == 1:
        assert eng_side[3][0].loss_hidden.shape == (3, 0)
    for a, b in zip(got.hidden_rates, want.hidden_rates, strict=True):
        np.testing.assert_allclose(a, b, **CLOSE)


def test_updates_reach_the_callers_arrays_in_place():
    config = make_config()
    eng = TorchEngine(config)
    p = initialise(config.model, 0)
    W0, state = p.W[0], eng.new_state()
    v1, before = state.layers[1].v, p.W[0].copy()
    eng.train(p, state, make_batch(config, 2))
    assert p.W[0] is W0 and state.layers[1].v is v1
    assert not np.array_equal(W0, before) and np.any(v1 != 0)


def test_test_batches_do_not_depend_on_chunking():
    config = make_config((7, 5, 3))
    p = initialise(config.model, 3)
    pixels, keys = pixels_for(11), keys_for(11)
    results = [TorchEngine(config, max_batch=mb).test(p, pixels, keys, hidden=True)
               for mb in (None, 1, 4)]
    for r in results[1:]:
        assert np.array_equal(r.predictions, results[0].predictions)
        np.testing.assert_allclose(r.output_voltage, results[0].output_voltage,
                                   rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(r.hidden_rates[1], results[0].hidden_rates[1],
                                   rtol=1e-12, atol=1e-13)
    # and one image alone is the same as inside a batch
    one = TorchEngine(config).test(p, pixels[4:5], keys[4:5])
    np.testing.assert_allclose(one.output_voltage[0], results[0].output_voltage[4],
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("mode", ["spiking", "rate"])
def test_float32_agrees_statistically(mode):
    c64 = make_config((20, 5), model={"mode": mode})
    c32 = make_config((20, 5), model={"mode": mode}, training={"dtype": "float32"})
    p = initialise(c64.model, 0)
    batch = make_batch(c64, 6)
    p64, p32 = p.copy(), p.copy()
    s64, s32 = ReferenceEngine(c64).new_state(), ReferenceEngine(c64).new_state()
    r64 = ReferenceEngine(c64).train(p64, s64, batch)
    r32 = TorchEngine(c32).train(p32, s32, batch)
    assert p32.W[0].dtype == np.float64
    np.testing.assert_allclose(r32.loss_out, r64.loss_out, rtol=1e-3, atol=1e-6)
    for a, b in zip(p32.W + p32.b, p64.W + p64.b, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    pixels, keys = pixels_for(40), keys_for(40)
    t64 = TorchEngine(c64).test(p, pixels, keys)
    t32 = TorchEngine(c32).test(p, pixels, keys)
    assert np.mean(t64.predictions == t32.predictions) >= 0.9
    np.testing.assert_allclose(t32.output_voltage, t64.output_voltage, rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Populations


@pytest.mark.parametrize("case", ["two_hidden", "g_A", "random_plateaus",
                                  "spiking_feedback_noisy_symmetric_broadcast",
                                  "rate", "spiking_rule_burst"])
def test_population_equals_separate_engines(case):
    base = case_config(case, (7, 5, 3))
    configs = [base.model_copy(update={"training": base.training.model_copy(
        update={"eta": (e, e, 0.1), "seed": i})}) for i, e in enumerate((0.1, 0.2, 0.3))]
    pop = TorchPopulation(configs)
    params = [initialise(c.model, i) for i, c in enumerate(configs)]
    alone_params = [p.copy() for p in params]
    states = pop.new_states()
    alone_states = [s.copy() for s in states]
    # each member its own examples, hence its own phase lengths
    batches = [make_batch(c, 4, seed=10 + i) for i, c in enumerate(configs)]
    results = pop.train(params, states, batches, record=("bp_angle",))
    for i, c in enumerate(configs):
        alone = TorchEngine(c).train(alone_params[i], alone_states[i], batches[i],
                                     record=("bp_angle",))
        np.testing.assert_allclose(results[i].loss_out, alone.loss_out, **CLOSE)
        np.testing.assert_allclose(results[i].loss_hidden, alone.loss_hidden, **CLOSE)
        assert np.array_equal(results[i].correct, alone.correct)
        assert_params_close(alone_params[i], params[i])
        assert_states_close(alone_states[i], states[i])
    keys = [keys_for(5, seed=20 + i) for i in range(3)]
    pixels = pixels_for(5)
    tested = pop.test(params, pixels, keys, hidden=True)
    for i, c in enumerate(configs):
        alone = TorchEngine(c).test(params[i], pixels, keys[i], hidden=True)
        assert np.array_equal(tested[i].predictions, alone.predictions)
        np.testing.assert_allclose(tested[i].output_voltage, alone.output_voltage, **CLOSE)


def test_population_refuses_members_that_differ_in_the_model():
    a = make_config()
    b = make_config(model={"g_A": 0.1})
    with pytest.raises(SegdendError, match="member 1"):
        TorchPopulation([a, b])
    pop = TorchPopulation([a, a])
    p = initialise(a.model, 0)
    with pytest.raises(SegdendError, match="2 members"):
        pop.test([p], pixels_for(2), [keys_for(2)])


# ---------------------------------------------------------------------------------------------
# Devices


def test_device_and_support_messages():
    config = make_config(training={"device": "cuda"})
    if not CUDA:
        assert "no CUDA device" in unsupported_reason(config)
        with pytest.raises(SegdendError, match="use --set training.device=cpu"):
            TorchEngine(config)
    assert unsupported_reason(make_config()) is None
    from segdend.engines.registry import unsupported_reason as registry_reason
    assert registry_reason(make_config(training={"engine": "torch"}), "torch") is None
    eng = TorchEngine(make_config(training={"device": "auto"}))
    assert eng.device.type == ("cuda" if CUDA else "cpu")


@gpu
@needs_cuda
@pytest.mark.parametrize("case", ["two_hidden", "exact_kernel", "g_A", "random_plateaus",
                                  "spiking_feedback_noisy_symmetric_broadcast", "rate",
                                  "spiking_rule_burst", "rate_rule_burst"])
def test_cuda_float64_matches_reference(case):
    config = case_config(case, (7, 5, 3))
    ref_side, eng_side = run_both(config, device="cuda")
    assert eng_side[0].device.type == "cuda"
    check_train_equal(ref_side, eng_side)
    ref, p, eng = ref_side[0], ref_side[1], eng_side[0]
    pixels, keys = pixels_for(6), keys_for(6)
    want, got = ref.test(p, pixels, keys), eng.test(p, pixels, keys)
    assert np.array_equal(got.predictions, want.predictions)
    np.testing.assert_allclose(got.output_voltage, want.output_voltage, **CLOSE)
