"""Shared test helpers: tiny configs and data, where real MNIST lives."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segdend.config import config_from_dict
from segdend.train import Dataset

MNIST_DIR = Path(os.environ.get("SEGDEND_TEST_MNIST", "/work/shared/data/mnist"))
if not MNIST_DIR.is_dir():
    MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


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
