"""Short runs of every engine and variant against the committed record of their outcome.

``tests/fixtures/engine_runs.npz`` was written by ``tests/fixtures/make_engine_fixtures.py``
before the engines were optimised or restructured. An optimisation or a refactor must leave
these runs unchanged: bit for bit for the reference and Numba engines, to 1e-10 with identical
predictions and ``correct`` flags for Torch (whose CPU kernels may sum in another order).
Paper-sized Numba runs are kept as SHA-256 digests of all their arrays.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))

import make_engine_fixtures as fx  # noqa: E402

STORE = np.load(FIXTURES / "engine_runs.npz")
EXACT_KEYS = ("correct", "test_predictions")


def stored(engine: str, variant: str) -> dict[str, np.ndarray]:
    prefix = f"{engine}/{variant}/"
    return {k[len(prefix):]: STORE[k] for k in STORE.files if k.startswith(prefix)}


@pytest.mark.parametrize("engine", ["reference", "numba", "torch"])
@pytest.mark.parametrize("variant", list(fx.VARIANTS))
def test_short_run_is_unchanged(engine, variant):
    if engine == "torch":
        pytest.importorskip("torch")
    want = stored(engine, variant)
    assert want, f"no fixture for {engine}/{variant}: regenerate engine_runs.npz"
    layers, sections = fx.VARIANTS[variant]
    got = fx.run_case(fx.engines()[engine], layers, sections, fx.N_IN, fx.N_TRAIN, fx.N_TEST)
    assert set(got) == set(want)
    for name, x in want.items():
        if engine == "torch" and name not in EXACT_KEYS:
            np.testing.assert_allclose(got[name], x, rtol=1e-10, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], x, err_msg=name)


@pytest.mark.parametrize("variant", list(fx.LARGE))
def test_paper_sized_numba_run_is_unchanged(variant):
    from segdend.engines.numba_engine import NumbaEngine
    layers, sections = fx.LARGE[variant]
    got = fx.run_case(NumbaEngine, layers, sections, 784, fx.N_LARGE_TRAIN, fx.N_LARGE_TEST)
    np.testing.assert_array_equal(got["loss_out"], STORE[f"large/{variant}/loss_out"])
    assert fx.digest(got) == str(STORE[f"large/{variant}/digest"])
