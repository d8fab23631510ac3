"""The real MNIST files, where a copy is at hand (SEGDEND_TEST_MNIST, default /work/shared)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from segdend.data import idx_bytes, load_mnist
from segdend.data.layout import MNIST_MD5

REAL_MNIST = Path(os.environ.get("SEGDEND_TEST_MNIST", "/work/shared/data/mnist"))


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"no MNIST copy at {REAL_MNIST}")
def test_real_mnist_files() -> None:
    mnist = load_mnist(REAL_MNIST, download=False)

    assert mnist.train_images.shape == (60000, 784)
    assert mnist.train_labels.shape == (60000,)
    assert mnist.test_images.shape == (10000, 784)
    assert mnist.test_labels.shape == (10000,)
    for array in (mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels):
        assert array.dtype == np.uint8
    for labels in (mnist.train_labels, mnist.test_labels):
        assert set(np.unique(labels).tolist()) == set(range(10))
    assert mnist.train_images.max() == 255

    rebuilt = {
        "train_images": idx_bytes(mnist.train_images.reshape(-1, 28, 28)),
        "train_labels": idx_bytes(mnist.train_labels),
        "test_images": idx_bytes(mnist.test_images.reshape(-1, 28, 28)),
        "test_labels": idx_bytes(mnist.test_labels),
    }
    for key, data in rebuilt.items():
        assert hashlib.md5(data).hexdigest() == MNIST_MD5[key], key
