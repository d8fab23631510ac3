"""The learning rules of ``plasticity.HIDDEN_RULES``: one function each, the same in every
engine's binding, chosen by name; the burst rule's statistics (Methods eq. 36-37)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from _helpers import tiny_config
from variants import N_IN, make_batch

from segdend import plasticity
from segdend.engines import _numba_prims as prims
from segdend.engines.numba_engine import NumbaEngine
from segdend.engines.reference import ReferenceEngine
from segdend.errors import SegdendError
from segdend.network import initialise

N, N_SRC, N_UP = 7, 3, 5


def rule_args(seed=0, scale=1.0):
    """Random arguments of the common rule signature (hidden layer of 7, source of 3, layer
    above of 5)."""
    gen = np.random.default_rng(seed)
    return dict(alpha_t=gen.random(N), alpha_f=gen.random(N), vbar_f=gen.normal(size=N) * 2,
                B_fa=gen.normal(size=(N, N_SRC)), e_fa_above=gen.normal(size=N_SRC),
                W_up_T=gen.normal(size=(N, N_UP)), e_bp_above=gen.normal(size=N_UP),
                u_t=gen.random(N), u_f=gen.random(N), phi_max=0.2, k_B=0.857,
                burst_scale=scale)


def test_every_rule_has_the_common_signature():
    want = list(inspect.signature(plasticity.rule_local).parameters)
    assert list(rule_args()) == want
    for name, rule in plasticity.HIDDEN_RULES.items():
        assert rule.name == name
        assert list(inspect.signature(rule.error).parameters) == want, name


def test_unknown_rule_is_named_with_the_choices():
    with pytest.raises(SegdendError) as err:
        plasticity.hidden_rule("hebbian")
    msg = str(err.value)
    assert "\n" not in msg and "'hebbian'" in msg and "`training.learning_rule`" in msg
    for name in plasticity.HIDDEN_RULES:
        assert name in msg
    with pytest.raises(SegdendError, match="hebbian"):
        ReferenceEngine(tiny_config(training={"learning_rule": "hebbian"}))


@pytest.mark.parametrize("name", list(plasticity.HIDDEN_RULES))
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_compiled_dispatch_runs_each_rule_of_the_registry(name, scale):
    """The Numba dispatch generated from the registry's order reaches every rule."""
    args = rule_args(seed=1, scale=scale)
    want = plasticity.HIDDEN_RULES[name].error(**args)
    got = prims.hidden_error(prims.rule_index(name), *args.values())
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("name", list(plasticity.HIDDEN_RULES))
def test_torch_binding_runs_each_rule_per_member(name):
    torch = pytest.importorskip("torch")
    from segdend.engines import _torch_ops as ops

    members = [rule_args(seed=s, scale=2.0) for s in range(3)]
    stacked = {k: (torch.as_tensor(np.stack([m[k] for m in members]))
                   if isinstance(v, np.ndarray) else v) for k, v in members[0].items()}
    got = ops.hidden_rule_error(name)(**stacked).numpy()
    for s, m in enumerate(members):
        np.testing.assert_allclose(got[s], plasticity.HIDDEN_RULES[name].error(**m),
                                   rtol=1e-13, atol=1e-16)


def test_burst_counts_have_the_plateaus_as_mean():
    """``N = Poisson(s alpha) / s``: the burst error averages to the local rule's, and its
    spread shrinks like 1/sqrt(s)."""
    gen = np.random.default_rng(3)
    args = rule_args(seed=2)
    local = plasticity.rule_local(**args)
    spread = {}
    for scale in (1.0, 16.0):
        draws = []
        for _ in range(4000):
            a = {**args, "u_t": gen.random(N), "u_f": gen.random(N), "burst_scale": scale}
            draws.append(plasticity.rule_burst(**a))
        draws = np.array(draws)
        sem = draws.std(axis=0) / np.sqrt(len(draws))
        assert np.all(np.abs(draws.mean(axis=0) - local) < 5 * sem + 1e-12)
        spread[scale] = draws.std(axis=0)
    np.testing.assert_allclose(spread[16.0] * 4, spread[1.0], rtol=0.15)


def test_burst_counts_are_integers_over_the_scale():
    args = rule_args(seed=4, scale=4.0)
    e = plasticity.rule_burst(**args)
    d = e / -(args["k_B"] * args["phi_max"] * prims.sigmoid_prime(args["vbar_f"]))
    np.testing.assert_allclose(d * 4.0, np.round(d * 4.0), atol=1e-9)


@pytest.mark.parametrize("engine", ["reference", "numba", "torch"])
def test_a_drawing_rule_needs_the_batch_burst_keys(engine):
    config = tiny_config((7, 5, 3), n_inputs=N_IN, training={"learning_rule": "burst"})
    if engine == "torch":
        pytest.importorskip("torch")
        from segdend.engines.torch_engine import TorchEngine as cls
    else:
        cls = ReferenceEngine if engine == "reference" else NumbaEngine
    eng = cls(config)
    batch = make_batch(config, 2)
    batch.burst_keys = None
    with pytest.raises(SegdendError, match="burst_keys"):
        eng.train(initialise(config.model, seed=0), eng.new_state(), batch)


def test_burst_rule_differs_from_local_and_draws_per_example():
    """Same spikes, other updates; other burst keys, other updates."""
    base = tiny_config((7, 5, 3), n_inputs=N_IN)
    burst = tiny_config((7, 5, 3), n_inputs=N_IN, training={"learning_rule": "burst"})
    batch = make_batch(base, 3, seed=5)
    out = {}
    for label, config, keys in (("local", base, batch.burst_keys),
                                ("burst", burst, batch.burst_keys),
                                ("burst_other", burst, batch.burst_keys + np.uint64(1))):
        eng = NumbaEngine(config)
        params = initialise(config.model, seed=1)
        b = make_batch(config, 3, seed=5)
        b.burst_keys = keys
        eng.train(params, eng.new_state(), b)
        out[label] = params
    for a, b in (("local", "burst"), ("burst", "burst_other")):
        assert not np.array_equal(out[a].W[0], out[b].W[0])


def test_config_checks_burst_scale():
    assert tiny_config().training.burst_scale == 1.0
    with pytest.raises(SegdendError, match=r"`training.burst_scale` must be a finite number > 0"):
        tiny_config(training={"burst_scale": 0.0})
