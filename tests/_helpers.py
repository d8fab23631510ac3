"""Shared test helpers: tiny configs and data, where real MNIST lives."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from segdend.config import config_from_dict
from segdend.train import Dataset

MNIST_ENV = "SEGDEND_TEST_MNIST"


def mnist_test_dir() -> Path:
    """Where the tests look for the real MNIST files: ``$SEGDEND_TEST_MNIST``, else the
    shared data folder beside the checkout (``../shared/data/mnist``, as the README says)."""
    env = os.environ.get(MNIST_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"


MNIST_DIR = mnist_test_dir()
HAVE_MNIST = (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
NO_MNIST = f"real MNIST not found in {MNIST_DIR} (set {MNIST_ENV})"


def write_small_mnist(out: Path, n_train: int = 120, n_test: int = 30) -> Path:
    """The first images of real MNIST (or random digits) as a small, valid IDX directory."""
    from segdend.data import write_idx

    if HAVE_MNIST:
        def take(name, off, n, shape):
            with gzip.open(MNIST_DIR / name) as f:
                raw = f.read(off + n * int(np.prod(shape)))
            return np.frombuffer(raw[off:], np.uint8).reshape(n, *shape)
        arrays = {
            "train-images-idx3-ubyte": take("train-images-idx3-ubyte.gz", 16, n_train, (28, 28)),
            "train-labels-idx1-ubyte": take("train-labels-idx1-ubyte.gz", 8, n_train, ()),
            "t10k-images-idx3-ubyte": take("t10k-images-idx3-ubyte.gz", 16, n_test, (28, 28)),
            "t10k-labels-idx1-ubyte": take("t10k-labels-idx1-ubyte.gz", 8, n_test, ()),
        }
    else:
        gen = np.random.default_rng(0)
        arrays = {
            "train-images-idx3-ubyte": gen.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train-labels-idx1-ubyte": gen.integers(0, 10, n_train, dtype=np.uint8),
            "t10k-images-idx3-ubyte": gen.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": gen.integers(0, 10, n_test, dtype=np.uint8),
        }
    out.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        write_idx(out / name, np.ascontiguousarray(a), gzip=False)
    return out


def tiny_config(layers=(8, 3), n_inputs=16, **sections):
    """A small network (default (8, 3) on 16 inputs, learning rates 0.21); ``sections``
    override nested fields, e.g. ``tiny_config(model={"mode": "rate"})``."""
    data = {"model": {"n_inputs": n_inputs, "layers": list(layers)},
            "training": {"eta": [0.21] * len(layers)}}
    for section, fields in sections.items():
        data.setdefault(section, {}).update(fields)
    return config_from_dict(data)


def tiny_dataset(n_train=40, n_test=10, n_inputs=16, seed=0) -> Dataset:
    """Random images whose label is decided by which quarter of the pixels is brightest."""
    gen = np.random.default_rng(seed)

    def make(n):
        images = (gen.random((n, n_inputs)) * 80).astype(np.uint8)
        labels = gen.integers(0, 3, size=n)
        for i, y in enumerate(labels):
            images[i, y * (n_inputs // 4):(y + 1) * (n_inputs // 4)] += 150
        return images, labels.astype(np.uint8)

    tr, trl = make(n_train)
    te, tel = make(n_test)
    return Dataset(tr, trl, te, tel, source="tiny synthetic")
