"""Shared fixtures (helpers live in tests/_helpers.py)."""

from pathlib import Path

import pytest
from _helpers import (  # noqa: F401  (re-exported)
    HAVE_MNIST,
    MNIST_DIR,
    NO_MNIST,
    tiny_config,
    tiny_dataset,
    write_small_mnist,
)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not HAVE_MNIST:
        pytest.skip(NO_MNIST)
    return MNIST_DIR


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory) -> Path:
    """120 training and 30 test images of real MNIST (or random digits) as IDX files."""
    return write_small_mnist(tmp_path_factory.mktemp("mnist"))
