"""The one list of variants every fast engine is tested on against the reference, and the
helpers both equivalence tests use (``test_numba_engine.py``, ``test_torch_engine.py``).

A variant is ``name -> (layers, sections)`` (``sections`` as for ``tiny_config``). The rule
variants are generated from :data:`segdend.plasticity.HIDDEN_RULES`, in spiking and in rate
mode, so a new learning rule is covered by every engine's equivalence test without an edit
here; likewise the feedback variants from :data:`segdend.feedback.FEEDBACK_VARIANTS`, in
spiking and rate mode with both wirings, so a new feedback variant is covered too.
``TORCH_SKIP`` names variants the torch engine does not run, each with its reason
(empty today).
"""

from __future__ import annotations

import numpy as np

from segdend import rng
from segdend.engines.base import TrainBatch
from segdend.feedback import FEEDBACK_VARIANTS
from segdend.plasticity import HIDDEN_RULES

N_IN = 30

BASE = {
    "default": ((8, 3), {}),
    "two_hidden": ((7, 5, 3), {}),
    "exact_kernel": ((7, 5, 3), {"model": {"kernel": "exact"}}),
    "three_taps": ((8, 3), {"model": {"kernel_taps": 3}}),
    "layerwise": ((7, 5, 3), {"model": {"feedback_wiring": "layerwise"}}),
    "g_A": ((8, 3), {"model": {"g_A": 0.3}}),
    "g_A_layerwise_deep": ((6, 5, 4, 3), {"model": {"g_A": 0.3, "feedback_wiring": "layerwise"}}),
    "g_A_exact_rates": ((7, 5, 3), {"model": {"g_A": 0.05, "kernel": "exact",
                                              "feedback_signal": "rates"}}),
    "feedback_rates": ((8, 3), {"model": {"feedback_signal": "rates"}}),
    "random_plateaus": ((7, 5, 3), {"model": {"plateau_times": "random"}}),
    "settle": ((8, 3), {"phases": {"integration": "settle"}}),
    "settle_0_random_plateaus": ((7, 5, 3), {"phases": {"integration": "settle", "settle": 0},
                                             "model": {"plateau_times": "random"}}),
    "feedback_alignment_layerwise": ((7, 5, 3), {"training": {
        "learning_rule": "feedback_alignment"}, "model": {"feedback_wiring": "layerwise"}}),
    "burst_scaled_layerwise": ((7, 5, 3), {"training": {"learning_rule": "burst",
                                                        "burst_scale": 3.0},
                                           "model": {"feedback_wiring": "layerwise"}}),
    "feedback_learning": ((7, 5, 3), {"training": {"feedback_learning": True,
                                                   "eta_feedback": [0.1, 0.05]}}),
    "sparse_feedback": ((8, 3), {"model": {"feedback_sparsity": 0.5}}),
    "sparse_feedback_learning": ((7, 5, 3), {"model": {"feedback_sparsity": 0.5},
                                             "training": {"feedback_learning": True,
                                                          "eta_feedback": [0.1, 0.05]}}),
    "rate_sparse_feedback_learning": ((7, 5, 3), {
        "model": {"mode": "rate", "feedback_sparsity": 0.5},
        "training": {"feedback_learning": True, "eta_feedback": [0.1, 0.05]}}),
    "shallow": ((3,), {}),
    "rate": ((8, 3), {"model": {"mode": "rate"}}),
    "rate_two_hidden_layerwise": ((7, 5, 3), {"model": {"mode": "rate",
                                                        "feedback_wiring": "layerwise"}}),
    "rate_noisy_feedback_learning": ((7, 5, 3), {
        "model": {"mode": "rate", "feedback": "noisy_symmetric"},
        "training": {"feedback_learning": True, "eta_feedback": [0.1, 0.05]}}),
    "rate_shallow": ((3,), {"model": {"mode": "rate"}}),
}

RULES = {
    f"{mode}_rule_{name}": ((7, 5, 3), {"model": {"mode": mode},
                                        "training": {"learning_rule": name}})
    for name in HIDDEN_RULES for mode in ("spiking", "rate")
}
"""Every rule of the registry, two hidden layers, in both modes."""

FEEDBACK = {
    f"{mode}_feedback_{name}_{wiring}": ((7, 5, 3), {"model": {
        "mode": mode, "feedback": name, "feedback_wiring": wiring}})
    for name in FEEDBACK_VARIANTS for mode in ("spiking", "rate")
    for wiring in ("broadcast", "layerwise")
}
"""Every feedback variant of the registry, two hidden layers, in both modes and wirings."""

VARIANTS = {**BASE, **RULES, **FEEDBACK}

TORCH_SKIP: dict[str, str] = {}
"""Variants the torch engine is not tested on, with the reason."""


def stream_keys(seed: int, n: int, epoch: int = 0) -> list[np.ndarray]:
    """Per-example keys of every stream of a :class:`TrainBatch`, as ``train.make_batch``
    derives them: spikes, plateau delays, feedback noise, a rule's draws."""
    return [rng.derive_keys(rng.derive_key(seed, purpose, epoch), np.arange(n))
            for purpose in (rng.TRAIN_SPIKES, rng.PLATEAU, rng.FEEDBACK_NOISE, rng.BURST)]


def make_batch(config, n: int, seed: int = 0) -> TrainBatch:
    """Random images with zero pixels, labels, phase lengths 50..60 and stream keys."""
    gen = np.random.default_rng(seed)
    pixels = gen.random((n, config.model.n_inputs))
    pixels[pixels < 0.35] = 0.0
    labels = gen.integers(0, config.model.layers[-1], n)
    lengths = gen.integers(50, 61, size=(n, 2))
    return TrainBatch(pixels, labels, lengths, *stream_keys(seed, n))
