"""Evaluating a trained run: repeated stochastic tests of a checkpoint (MODEL.md 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segdend.checkpoint import checkpoint_params
from segdend.config import apply_overrides, config_from_dict
from segdend.engines.registry import get_engine
from segdend.errors import SegdendError
from segdend.network import check_shapes
from segdend.rundir import load_run_config
from segdend.train import load_dataset, test_error, test_keys

EVALUATE = 3  # purpose path component: evaluation tests, apart from training-time tests


def checkpoint_path(run_dir: Path, checkpoint: str | None) -> Path:
    run_dir = Path(run_dir)
    if checkpoint in (None, "latest"):
        return run_dir / "checkpoints" / "latest.safetensors"
    if checkpoint.isdigit():
        return run_dir / "checkpoints" / f"epoch_{int(checkpoint):03d}.safetensors"
    return Path(checkpoint)


def evaluate_run(run_dir: Path, *, checkpoint: str | None = None, repeats: int = 1,
                 test_examples: int | None = None, data_dir: str | None = None,
                 engine: str | None = None) -> dict[str, Any]:
    """Mean, sd, min and max test error of a run's checkpoint over ``repeats`` tests."""
    config = load_run_config(run_dir)
    over = [f'data.data_dir="{data_dir}"'] if data_dir else []
    if engine:
        over.append(f'training.engine="{engine}"')
    if over:
        config = config_from_dict(apply_overrides(config.model_dump(mode="json"), over))
    path = checkpoint_path(run_dir, checkpoint)
    params, meta = checkpoint_params(path)
    check_shapes(config.model, params)
    data = load_dataset(config)
    n = min(test_examples or len(data.test_labels), len(data.test_labels))
    eng = get_engine(config)
    if config.model.mode == "rate":
        repeats_used = 1  # deterministic: repeats would all agree
    else:
        repeats_used = repeats
    errors = []
    for r in range(repeats_used):
        keys = test_keys(config, (EVALUATE, int(meta.get("examples_seen", 0)), r), n)
        errors.append(test_error(eng, params, data.test_images[:n], data.test_labels[:n], keys))
    if not errors:
        raise SegdendError("nothing was evaluated")
    e = np.array(errors)
    return {"run_dir": str(run_dir), "checkpoint": str(path), "epoch": meta.get("epoch"),
            "examples_seen": meta.get("examples_seen"), "repeats": len(errors),
            "test_images": n, "full_test_set": n == len(data.test_labels),
            "test_error_mean": float(e.mean()),
            "test_error_sd": float(e.std(ddof=1)) if len(e) > 1 else 0.0,
            "test_error_min": float(e.min()), "test_error_max": float(e.max()),
            "test_errors": [float(x) for x in e], "engine": eng.name}
