"""The carried state's checkpoint layout: runs checkpointed before the state was typed
(``tests/fixtures/state_layout``, written by the old code) resume to the same outcome, and
``State.to_arrays``/``from_arrays`` keep exactly that layout."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import tiny_config, tiny_dataset

from segdend.checkpoint import load_checkpoint
from segdend.engines.base import LAYER_FIELDS, State
from segdend.errors import SegdendError
from segdend.network import initialise
from segdend.train import find_divergence, run_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

import make_state_layout_fixture as fx  # noqa: E402

FIELDS = ("v", "history", "trace_L", "trace_s", "s", "phi")  # as the old code wrote them


def old_keys(n_layers: int) -> set[str]:
    """The state's keys as the old ``engines.base.cleared_state`` named them."""
    return {f"state.{k}{l}" for l in range(n_layers) for k in FIELDS}


@pytest.mark.parametrize("engine", fx.ENGINES)
def test_run_checkpointed_in_the_old_layout_resumes_to_the_old_outcome(engine, tmp_path):
    if engine == "torch":
        pytest.importorskip("torch")
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "state_layout" / engine / "run", run)
    before, meta = load_checkpoint(run / "checkpoints" / "latest.safetensors")
    assert {k for k in before if k.startswith("state.")} == old_keys(3)
    assert meta["position"] == fx.STOP_AT
    run_config(fx.config(run, engine), data=tiny_dataset(), resume=True)
    got, got_meta = load_checkpoint(run / "checkpoints" / "latest.safetensors")
    want, want_meta = load_checkpoint(FIXTURES / "state_layout" / engine / "final.safetensors")
    assert got.keys() == want.keys()
    # Numba: bit for bit on any CPU. Torch's CPU kernels may sum in another order; the
    # reference's NumPy ``@`` goes through BLAS, whose kernel (and summation order) depends
    # on the CPU (see tests/engines/test_fixtures.py).
    rel = {"numba": 0.0, "reference": 1e-12, "torch": 1e-10}[engine]
    for k, a in want.items():
        if rel:
            np.testing.assert_allclose(got[k], a, rtol=rel, atol=rel * 1e-2, err_msg=k)
        else:
            assert np.array_equal(got[k], a), k
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k}  # noqa: E731
                          for r in rows]
    got_rows, want_rows = strip(got_meta["metrics"]), strip(want_meta["metrics"])
    if rel:
        want_rows = [{k: pytest.approx(v, rel=rel) for k, v in r.items()} for r in want_rows]
    assert got_rows == want_rows


def test_to_arrays_names_every_field_of_every_layer_in_the_old_order():
    state = State.cleared((4, 3, 2), taps=5)
    arrays = state.to_arrays()
    assert list(arrays) == [f"{k}{l}" for l in range(3) for k in FIELDS]
    assert arrays["history1"].shape == (5, 3) and arrays["phi2"].shape == (2,)
    assert arrays["v1"] is state.layers[1].v  # the arrays themselves


def test_from_arrays_round_trips_and_copies():
    gen = np.random.default_rng(0)
    state = State.cleared((4, 3, 2), taps=5)
    for layer in state.layers:
        for k in LAYER_FIELDS:
            getattr(layer, k)[...] = gen.random(getattr(layer, k).shape)
    arrays = state.to_arrays()
    back = State.from_arrays(arrays)
    assert back.to_arrays().keys() == arrays.keys()
    for k, a in arrays.items():
        assert np.array_equal(back.to_arrays()[k], a) and back.to_arrays()[k] is not a, k
    copy = state.copy()
    copy.layers[0].history[0, 0] += 1.0
    assert state.layers[0].history[0, 0] != copy.layers[0].history[0, 0]


def test_from_arrays_refuses_missing_and_unknown_names():
    arrays = State.cleared((4, 3), taps=2).to_arrays()
    with pytest.raises(SegdendError, match="lacks trace_s1"):
        State.from_arrays({k: v for k, v in arrays.items() if k != "trace_s1"})
    with pytest.raises(SegdendError, match="unknown arrays s2"):
        State.from_arrays({**arrays, "s2": np.zeros(3)})


def test_divergence_names_the_layer_and_field():
    state = State.cleared((4, 3, 2), taps=2)
    params = initialise(tiny_config(layers=(3, 2), n_inputs=4).model, 0)
    assert find_divergence(params, state) is None
    state.layers[2].v[0] = np.nan
    assert find_divergence(params, state) == "somatic voltages of layer 1"
    state.layers[2].v[0] = 0.0
    state.layers[1].trace_L[1] = np.inf
    assert find_divergence(params, state) == "neuron state trace_L1"
