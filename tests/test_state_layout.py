"""The carried state's checkpoint layout: runs checkpointed before the state was typed
(``tests/fixtures/state_layout``, written by the old code) resume to the same outcome, and
``State.to_arrays``/``from_arrays`` keep exactly that layout."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import tiny_dataset

from segdend.checkpoint import load_checkpoint
from segdend.train import run_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))

import make_state_layout_fixture as fx  # noqa: E402

FIELDS = ("v", "history", "trace_L", "trace_s", "s", "phi")


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
    for k, a in want.items():
        if engine == "torch":  # its CPU kernels may sum in another order
            np.testing.assert_allclose(got[k], a, rtol=1e-10, atol=1e-12, err_msg=k)
        else:
            assert np.array_equal(got[k], a), k
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k}  # noqa: E731
                          for r in rows]
    got_rows, want_rows = strip(got_meta["metrics"]), strip(want_meta["metrics"])
    if engine == "torch":
        want_rows = [{k: pytest.approx(v, rel=1e-10) for k, v in r.items()} for r in want_rows]
    assert got_rows == want_rows
