"""The feedback variants of ``feedback.FEEDBACK_VARIANTS``: one function each, checked against
MODEL.md section 7's formula, and the same function in every engine's binding (the compiled
dispatch of the Numba engine on its transposed layout, the torch helpers per member).
Every engine running every variant in training is tested by the equivalence tests
(``variants.py``) and the fixtures."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from _helpers import tiny_config
from numba.typed import List

from segdend import feedback, rng
from segdend.engines import _numba_prims as prims
from segdend.engines.numba_engine import NumbaEngine
from segdend.engines.reference import ReferenceEngine
from segdend.errors import SegdendError

SD = 0.05
KEY = np.uint64(0x9E3779B97F4A7C15)


def network(layers, broadcast, seed=0):
    """Random W (bottom-up, on 6 inputs) and Y (one per hidden layer) for ``layers``."""
    gen = np.random.default_rng(seed)
    sizes = (6, *layers)
    W = [gen.normal(size=(sizes[m + 1], sizes[m])) for m in range(len(layers))]
    Y = [gen.normal(size=(sizes[m + 1], sizes[-1] if broadcast else sizes[m + 2]))
         for m in range(len(layers) - 1)]
    return W, Y


def model_formula(name, W, Y, broadcast, key, sd):
    """MODEL.md 7 written out: symmetric ``Y = W[M-1].T`` for the last hidden layer and, in
    broadcast mode, ``Y[m] = W[m+1].T @ Y[m+1]`` below (layer-wise ``W[m+1].T``); noisy adds
    ``sd * rng.layer_normals(key, 0, m + 1, size)`` after; random keeps Y."""
    if name == "random":
        return [y.copy() for y in Y]
    sym = [None] * len(Y)
    for m in reversed(range(len(Y))):
        sym[m] = W[m + 1].T @ sym[m + 1] if broadcast and m < len(Y) - 1 else W[m + 1].T
    if name == "symmetric":
        return sym
    assert name == "noisy_symmetric"
    return [s + sd * rng.layer_normals(key, 0, m + 1, s.size).reshape(s.shape)
            for m, s in enumerate(sym)]


CASES = [(layers, broadcast) for layers in ((4, 3), (5, 4, 3), (5, 4, 4, 3))
         for broadcast in (True, False)]


def test_every_variant_has_the_common_signature_and_a_formula_here():
    want = list(inspect.signature(feedback.feedback_random).parameters)
    assert want == ["W", "Y", "broadcast", "noise_key", "noise_sd"]
    for name, variant in feedback.FEEDBACK_VARIANTS.items():
        assert variant.name == name
        assert list(inspect.signature(variant.refresh).parameters) == want, name
        W, Y = network((5, 4, 3), True)
        model_formula(name, W, Y, True, KEY, SD)  # a new variant needs its formula above


@pytest.mark.parametrize("name", list(feedback.FEEDBACK_VARIANTS))
@pytest.mark.parametrize(("layers", "broadcast"), CASES)
def test_each_variant_is_the_model_formula(name, layers, broadcast):
    W, Y = network(layers, broadcast)
    before = [y.copy() for y in Y]
    got = feedback.FEEDBACK_VARIANTS[name].refresh(W, Y, broadcast, KEY, SD)
    want = model_formula(name, W, Y, broadcast, KEY, SD)
    assert len(got) == len(Y)
    for g, w, y, b in zip(got, want, Y, before, strict=True):
        assert g.shape == y.shape
        np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(y, b)  # the input is left alone
    variant = feedback.FEEDBACK_VARIANTS[name]
    assert variant.derived == (name != "random")
    if not variant.draws:  # a variant that does not draw ignores the key
        other = variant.refresh(W, Y, broadcast, KEY + np.uint64(1), SD)
        for g, o in zip(got, other, strict=True):
            np.testing.assert_array_equal(g, o)


def test_noise_is_redrawn_per_key_with_the_configured_spread():
    W, Y = network((60, 50, 10), True)
    noisy = feedback.feedback_noisy_symmetric
    a, b = noisy(W, Y, True, KEY, 0.5), noisy(W, Y, True, KEY + np.uint64(1), 0.5)
    sym = feedback.feedback_symmetric(W, Y, True, KEY, 0.5)
    for x, y, s in zip(a, b, sym, strict=True):
        assert not np.array_equal(x, y)
        assert abs(np.std(x - s) - 0.5) < 0.05


def _layout(W, Y):
    """The Numba engine's layout: ``W[m].T`` and ``Y.T``, C-contiguous."""
    return (List([np.ascontiguousarray(w.T) for w in W]),
            List([np.ascontiguousarray(y.T) for y in Y]))


@pytest.mark.parametrize("name", list(feedback.FEEDBACK_VARIANTS))
@pytest.mark.parametrize(("layers", "broadcast"), CASES)
def test_compiled_dispatch_runs_each_variant_on_the_layout(name, layers, broadcast):
    """The Numba dispatch generated from the registry's order reaches every variant, with
    the helpers for the transposed layout."""
    W, Y = network(layers, broadcast, seed=1)
    want = feedback.FEEDBACK_VARIANTS[name].refresh(W, Y, broadcast, KEY, SD)
    WT, YT = _layout(W, Y)
    got = prims.refresh_variant(prims.feedback_index(name), WT, YT, broadcast, KEY, SD)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.T, w, rtol=1e-13, atol=1e-15)


def test_compiled_helpers_are_the_numpy_helpers_in_the_layout():
    gen = np.random.default_rng(2)
    W, Y_up = gen.normal(size=(5, 4)), gen.normal(size=(5, 3))
    np.testing.assert_array_equal(prims.fb_transposed(np.ascontiguousarray(W.T)).T,
                                  feedback.transposed(W))
    np.testing.assert_allclose(
        prims.fb_transpose_matmul(np.ascontiguousarray(W.T), np.ascontiguousarray(Y_up.T)).T,
        feedback.transpose_matmul(W, Y_up), rtol=1e-14)
    Y = gen.normal(size=(4, 3))
    np.testing.assert_array_equal(
        prims.fb_add_normals(np.ascontiguousarray(Y.T), SD, KEY, 2).T,
        feedback.add_normals(Y, SD, KEY, 2))


@pytest.mark.parametrize("name", list(feedback.FEEDBACK_VARIANTS))
@pytest.mark.parametrize(("layers", "broadcast"), CASES)
def test_torch_binding_runs_each_variant_per_member(name, layers, broadcast):
    torch = pytest.importorskip("torch")
    from segdend.engines import _torch_ops as ops
    from segdend.engines import _torch_rng as trng

    members = [network(layers, broadcast, seed=s) for s in range(3)]
    keys = np.array([KEY + np.uint64(s) for s in range(3)], dtype=np.uint64)
    W = [torch.as_tensor(np.stack([m[0][i] for m in members])) for i in range(len(layers))]
    Y = [torch.as_tensor(np.stack([m[1][i] for m in members])) for i in range(len(layers) - 1)]
    got = ops.feedback_refresh(name)(W, Y, broadcast, torch.as_tensor(trng.keys_as_int64(keys)),
                                     SD)
    for s, (Ws, Ys) in enumerate(members):
        want = feedback.FEEDBACK_VARIANTS[name].refresh(Ws, Ys, broadcast, keys[s], SD)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g[s].numpy(), w, rtol=1e-13, atol=1e-15)


def test_unknown_variant_is_named_with_the_choices():
    with pytest.raises(SegdendError) as err:
        feedback.feedback_variant("transposed")
    msg = str(err.value)
    assert "\n" not in msg and "'transposed'" in msg and "`model.feedback`" in msg
    for name in feedback.FEEDBACK_VARIANTS:
        assert name in msg
    config = tiny_config((7, 5, 3), model={"feedback": "transposed"})
    for cls in (ReferenceEngine, NumbaEngine):
        with pytest.raises(SegdendError, match="transposed"):
            cls(config)


def test_torch_engine_refuses_an_unknown_variant():
    pytest.importorskip("torch")
    from segdend.engines.torch_engine import TorchEngine

    with pytest.raises(SegdendError, match="transposed"):
        TorchEngine(tiny_config((7, 5, 3), model={"feedback": "transposed"}))


def test_config_wants_a_name():
    assert tiny_config().model.feedback == "random"
    with pytest.raises(SegdendError, match=r"model.feedback"):
        tiny_config(model={"feedback": "noisy symmetric"})
