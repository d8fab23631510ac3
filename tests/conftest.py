"""Shared fixtures (helpers live in tests/_helpers.py)."""

from pathlib import Path

import pytest
from _helpers import MNIST_DIR, tiny_config, tiny_dataset  # noqa: F401  (re-exported)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {MNIST_DIR} (set SEGDEND_TEST_MNIST)")
    return MNIST_DIR
