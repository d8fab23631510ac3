"""The dataset a run trained on, loaded once per data source, and its sizes.

The readers of a run directory (metrics, losses, recordings, weights) live one floor down in
:mod:`segdend.runfiles`; they are re-exported here for the callers that read runs through this
module.
"""

from __future__ import annotations

from typing import Any

from segdend.config import RunConfig
from segdend.runfiles import (  # noqa: F401 - re-exported
    config_of,
    epoch_files,
    final_params,
    load_arrays,
    params_after_epoch,
    read_csv,
    record_series,
    run_outcome,
    test_curve,
)

_DATA_CACHE: dict[tuple, Any] = {}


def dataset_for(config: RunConfig):
    """The :class:`~segdend.train.Dataset` a run trained on (cached per data source)."""
    from segdend.train import load_dataset

    key = (config.data.data_dir, config.data.cache_dir, config.training.validation)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep at most one copy of MNIST in memory
        _DATA_CACHE[key] = load_dataset(config)
    return _DATA_CACHE[key]


def remember_dataset(config: RunConfig, data) -> None:
    """Let analyses reuse a dataset already loaded for training."""
    _DATA_CACHE.clear()
    _DATA_CACHE[(config.data.data_dir, config.data.cache_dir, config.training.validation)] = data


def n_train_of(config: RunConfig, data) -> int:
    n_all = len(data.train_labels)
    return min(config.training.train_examples or n_all, n_all)


def n_test_of(config: RunConfig, data) -> int:
    n_all = len(data.test_labels)
    return min(config.training.test_examples or n_all, n_all)
