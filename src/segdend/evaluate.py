"""Evaluating a trained run: repeated stochastic tests of a checkpoint (MODEL.md 9)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segdend.checkpoint import checkpoint_params, config_fingerprint
from segdend.config import apply_overrides, config_from_dict, toml_literal
from segdend.engines.registry import get_engine, resolve_engine_name
from segdend.errors import SegdendError
from segdend.network import check_shapes
from segdend.rundir import load_run_config
from segdend.train import (
    check_data,
    check_memory,
    clamp_count,
    load_dataset,
    resolve_test_threads,
    test_error,
    test_keys,
    with_threads,
)

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
                 engine: str | None = None, log: Callable[[str], None] = lambda s: None,
                 on_chunk: Callable[[int], None] | None = None,
                 on_start: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Mean, sd, min and max test error of a run's checkpoint over ``repeats`` tests.

    ``test_examples`` follows the rule of ``training.test_examples`` (> 0; more than the test
    set is clamped, and ``log`` says so); the checkpoint must come from this run's config.
    ``on_start`` receives the number of images to test, ``on_chunk`` each chunk's count.
    """
    if repeats < 1:
        raise SegdendError(f"--repeats must be >= 1; got {repeats}")
    config = load_run_config(run_dir)
    over = [f"data.data_dir={toml_literal(str(data_dir))}"] if data_dir else []
    if engine:
        over.append(f"training.engine={toml_literal(engine)}")
    if test_examples is not None:
        over.append(f"training.test_examples={int(test_examples)}")
    if over:
        config = config_from_dict(apply_overrides(config.model_dump(mode="json"), over))
    check_memory(config.model)
    path = checkpoint_path(run_dir, checkpoint)
    params, meta = checkpoint_params(path)
    mine = config_fingerprint(config.to_json())
    if meta.get("config_fingerprint") != mine:
        raise SegdendError(
            f"checkpoint {path} was written by another run (config fingerprint "
            f"{meta.get('config_fingerprint')}, {run_dir} has {mine}: a different seed or "
            "config); evaluate it with its own run directory"
        )
    check_shapes(config.model, params)
    data = load_dataset(config, log=log)
    check_data(config, data)
    n, clamped = clamp_count("--test-examples", config.training.test_examples,
                             len(data.test_labels), "test images")
    if clamped:
        log(clamped)
    eng = get_engine(with_threads(config, resolve_test_threads(config),
                                  resolve_engine_name(config)))
    # rate mode is deterministic: repeats would all agree
    repeats_used = 1 if config.model.mode == "rate" else repeats
    if on_start is not None:
        on_start(repeats_used * n)
    errors = []
    for r in range(repeats_used):
        keys = test_keys(config, (EVALUATE, int(meta.get("examples_seen", 0)), r), n)
        errors.append(test_error(eng, params, data.test_images[:n], data.test_labels[:n], keys,
                                 on_chunk))
    e = np.array(errors)
    return {"run_dir": str(run_dir), "checkpoint": str(path), "epoch": meta.get("epoch"),
            "position": int(meta.get("position") or 0),
            "examples_seen": meta.get("examples_seen"), "repeats": len(errors),
            "repeats_asked": repeats, "mode": config.model.mode,
            "test_images": n, "full_test_set": n == len(data.test_labels),
            "test_error_mean": float(e.mean()),
            "test_error_sd": float(e.std(ddof=1)) if len(e) > 1 else 0.0,
            "test_error_min": float(e.min()), "test_error_max": float(e.max()),
            "test_errors": [float(x) for x in e], "engine": eng.name}
