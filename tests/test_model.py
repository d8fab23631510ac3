"""The model description (``segdend.model``): what every engine reads, derived once."""

from __future__ import annotations

import pytest

from segdend import rng
from segdend.config import config_from_dict
from segdend.engines.limits import numba_unsupported_reason, torch_unsupported_reason
from segdend.errors import SegdendError
from segdend.model import describe, stream_extent
from segdend.network import feedback_shape


def _config(**model):
    layers = model.pop("layers", (7, 5, 3))
    training = model.pop("training", {})
    return config_from_dict({"model": {"n_inputs": 20, "layers": list(layers), **model},
                             "training": {"eta": [0.1] * len(layers), **training}})


@pytest.mark.parametrize("wiring, sources", [("broadcast", (3, 3)), ("layerwise", (2, 3))])
def test_feedback_sources_and_shapes(wiring, sources):
    cfg = _config(feedback_wiring=wiring)
    d = describe(cfg)
    assert d.sizes == (20, 7, 5, 3) and d.top == 3 and d.n_hidden == 2
    assert d.feedback_source == sources
    assert d.broadcast == (wiring == "broadcast")
    assert d.feedback_shapes == tuple(feedback_shape(cfg.model, m) for m in range(2))


def test_learning_rates_times_P():
    cfg = _config(phi_max=0.25, training={"eta": [0.1, 0.2, 0.3]})
    d = describe(cfg)
    assert d.P == (20 / 0.25, 20 / 0.25, 20 / 0.25**2)
    assert d.eta_P == tuple(e * p for e, p in zip((0.1, 0.2, 0.3), d.P, strict=True))
    assert d.scaled((0.1, 0.2, 0.3)) == d.eta_P
    assert d.eta_feedback is None
    fb = describe(_config(training={"eta": [0.1] * 3, "feedback_learning": True,
                                    "eta_feedback": [0.01, 0.02]}))
    assert fb.eta_feedback == (0.01, 0.02)


def test_segregation_rule_and_variant():
    assert describe(_config()).segregated
    assert not describe(_config(g_A=0.05)).segregated
    d = describe(_config(feedback="noisy_symmetric", training={"learning_rule": "burst"}))
    assert d.rule.name == "burst" and d.rule.draws
    assert d.feedback.name == "noisy_symmetric" and d.feedback.draws
    with pytest.raises(SegdendError, match="learning_rule"):
        describe(_config(training={"learning_rule": "nope"}))


def test_stream_limits_have_one_wording():
    big = _config(layers=(4200, 4200, 10), feedback="noisy_symmetric",
                  feedback_wiring="layerwise")
    ext = stream_extent(big)
    assert ext.units == 4200 * 4200 > rng.MAX_UNITS
    want = rng.counter_problem(ext.layers, ext.units, ext.steps)
    assert "unit field" in want
    assert numba_unsupported_reason(big) == want
    assert torch_unsupported_reason(big) == want
    assert stream_extent(_config(layers=(4200, 4200, 10))).problem() is None
    with pytest.raises(SegdendError, match="layer field"):
        _config(layers=(4,) * 16)
