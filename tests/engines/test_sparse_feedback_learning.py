"""Sparse feedback keeps its silenced synapses under feedback learning (MODEL.md 7: the
mask is fixed). Before, ``Params.Y_mask`` was stored and checkpointed but never read, so
feedback learning regrew the zeroed entries in every engine."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import tiny_config
from variants import N_IN, make_batch

from segdend.engines.numba_engine import NumbaEngine
from segdend.engines.reference import ReferenceEngine
from segdend.network import initialise


def engines():
    found = [ReferenceEngine, NumbaEngine]
    try:
        from segdend.engines.torch_engine import TorchEngine
        found.append(TorchEngine)
    except ImportError:
        pass
    return found


@pytest.mark.parametrize("mode", ["spiking", "rate"])
@pytest.mark.parametrize("engine_cls", engines(), ids=lambda e: e.name)
def test_silenced_feedback_stays_silent_and_the_rest_learns(engine_cls, mode):
    config = tiny_config((7, 5, 3), n_inputs=N_IN,
                         model={"mode": mode, "feedback_sparsity": 0.5},
                         training={"feedback_learning": True, "eta_feedback": [0.5, 0.5]})
    params = initialise(config.model, seed=3)
    before = [y.copy() for y in params.Y]
    engine = engine_cls(config)
    engine.train(params, engine.new_state(), make_batch(config, 6, seed=4))
    for m, (y0, y1, mask) in enumerate(zip(before, params.Y, params.Y_mask, strict=True)):
        silent = mask == 0
        assert silent.mean() == pytest.approx(0.5, abs=0.05)
        np.testing.assert_array_equal(y1[silent], 0.0, err_msg=f"Y[{m}] regrew")
        assert np.any(y1[~silent] != y0[~silent]), f"Y[{m}] did not learn"
