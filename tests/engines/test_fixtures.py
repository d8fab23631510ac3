"""Short runs of every engine and variant against the committed record of their outcome.

``tests/fixtures/engine_runs.npz`` was written by ``tests/fixtures/make_engine_fixtures.py``
before the engines were optimised or restructured. An optimisation or a refactor must leave
these runs unchanged: bit for bit for the Numba engine, on any CPU; to 1e-12 with identical
predictions and ``correct`` flags for the reference, whose NumPy ``@`` goes through BLAS (the
library picks a kernel, and so a summation order, for the CPU: OpenBLAS's AVX-512 and AVX2
kernels differ in the last bits); to 1e-10 for Torch (whose CPU kernels may sum in another
order). Paper-sized Numba runs are kept as SHA-256 digests of all their arrays. The Numba
engine's stored entries were rewritten once (``make_engine_fixtures.py --engine numba``) when
its dot products stopped going through BLAS: the new values agreed with the old to 1e-12 with
identical spikes.
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
        if engine == "numba" or name in EXACT_KEYS:
            np.testing.assert_array_equal(got[name], x, err_msg=name)
        elif engine == "torch":
            np.testing.assert_allclose(got[name], x, rtol=1e-10, atol=1e-12, err_msg=name)
        else:
            # an angle near 0 (the backprop rule against itself) is arccos of a cosine one
            # rounding below 1, i.e. ~1e-6 degrees whatever the order of the sums
            atol = 1e-5 if name == "record_bp_angle" else 1e-15
            np.testing.assert_allclose(got[name], x, rtol=1e-12, atol=atol, err_msg=name)


@pytest.mark.parametrize("variant", list(fx.LARGE))
def test_paper_sized_numba_run_is_unchanged(variant):
    from segdend.engines.numba_engine import NumbaEngine
    layers, sections = fx.LARGE[variant]
    got = fx.run_case(NumbaEngine, layers, sections, 784, fx.N_LARGE_TRAIN, fx.N_LARGE_TEST)
    np.testing.assert_array_equal(got["loss_out"], STORE[f"large/{variant}/loss_out"])
    assert fx.digest(got) == str(STORE[f"large/{variant}/digest"])


BLAS_KERNELS = ("Haswell", "Sandybridge")  # OpenBLAS kernels any x86-64 with AVX can run


def _openblas_x86() -> bool:
    import platform
    try:
        info = np.show_config(mode="dicts")
    except TypeError:  # NumPy < 2
        return False
    blas = info.get("Build Dependencies", {}).get("blas", {})
    return platform.machine() in ("x86_64", "AMD64") and "openblas" in str(blas.get("name"))


@pytest.mark.skipif(not _openblas_x86(), reason="needs NumPy with OpenBLAS on x86-64")
def test_numba_runs_do_not_depend_on_the_blas_kernel(tmp_path):
    """The same Numba runs under two of OpenBLAS's CPU kernels (forced with
    OPENBLAS_CORETYPE) give the same bits: nothing of a run goes through BLAS (losses,
    backprop and feedback-alignment errors, symmetric feedback, the bp angle, the exported
    state), so a committed result reproduces on any machine."""
    import os
    import subprocess
    script = (
        "import sys, numpy as np\n"
        f"sys.path[:0] = [{str(FIXTURES)!r}, {str(FIXTURES.parent)!r}]\n"
        "import make_engine_fixtures as fx\n"
        "from segdend.engines.numba_engine import NumbaEngine\n"
        "out = {}\n"
        "for v in ('symmetric', 'feedback_alignment', 'backprop', 'exact_kernel'):\n"
        "    layers, sections = fx.VARIANTS[v]\n"
        "    got = fx.run_case(NumbaEngine, layers, sections, fx.N_IN, fx.N_TRAIN, fx.N_TEST)\n"
        "    out |= {f'{v}/{k}': x for k, x in got.items()}\n"
        "np.savez(sys.argv[1], **out)\n")
    runs = []
    for kernel in BLAS_KERNELS:
        path = tmp_path / f"{kernel}.npz"
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "NUMBA_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        runs.append(np.load(path))
    first, second = runs
    assert sorted(first.files) == sorted(second.files)
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
