"""The real MNIST files, where a copy is at hand (SEGDEND_TEST_MNIST, default ../shared/data/mnist)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from _helpers import HAVE_MNIST, MNIST_DIR, NO_MNIST

from segdend.data import idx_bytes, load_mnist
from segdend.data.layout import MNIST_MD5


@pytest.mark.skipif(not HAVE_MNIST, reason=NO_MNIST)
def test_real_mnist_files() -> None:
    mnist = load_mnist(MNIST_DIR, download=False)

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
