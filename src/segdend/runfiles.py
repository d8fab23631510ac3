"""Reading what a run saved: metrics, per-epoch losses and recordings, weights.

Run directories are laid out by :mod:`segdend.rundir` and :mod:`segdend.train`:
``metrics.csv``, ``quick_tests.csv``, ``losses/epoch_NNN.safetensors`` (``loss_out``,
``loss_hidden``, ``correct``, ``order``), ``records/epoch_NNN.safetensors`` (the recordings
asked for in ``output.record``), ``checkpoints/`` (``latest`` and ``epoch_NNN``) and, for
experiments trained in steps, ``snapshots/``. Everything here only reads; the numbers are
handed to the pure functions of :mod:`segdend.analysis`. (The dataset a run trained on is
loaded, once, by :mod:`segdend.experiments.runs`.)
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from segdend.checkpoint import checkpoint_params
from segdend.config import RunConfig
from segdend.errors import SegdendError
from segdend.network import Params, initialise
from segdend.rundir import final_evaluation, load_run_config, read_run_info

_EPOCH_FILE = re.compile(r"epoch_(\d+)\.safetensors$")


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file with numbers parsed (empty cells become None); [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.append({k: _number(v) for k, v in row.items()})
    return rows


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def test_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """Epochs that were tested and their test error (%), from metrics.csv."""
    rows = [r for r in read_csv(Path(run_dir) / "metrics.csv") if r.get("test_error") is not None]
    return [int(r["epoch"]) for r in rows], [float(r["test_error"]) for r in rows]


def run_outcome(run_dir: Path) -> dict[str, Any]:
    """The final tested state of a run: test error, spread of its repeated tests, epochs done,
    status; NaN test error when the run never finished a tested epoch (e.g. diverged)."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir) or {}
    try:
        config = load_run_config(run_dir)
    except SegdendError:
        config = None
    rows = read_csv(run_dir / "metrics.csv")
    tested = [r for r in rows if r.get("test_error") is not None]
    last = tested[-1] if tested else {}
    out = {
        "run_dir": str(run_dir),
        "status": info.get("status", "missing"),
        "engine": info.get("engine", ""),
        "epochs_done": int(rows[-1]["epoch"]) if rows else 0,
        "test_error": float(last.get("test_error", math.nan)) if last else math.nan,
        "test_error_repeat_sd": float(last.get("test_error_sd") or 0.0) if last else math.nan,
        "test_repeats": (config.training.test_repeats if config else 1) if last else 0,
        "train_error": float(rows[-1]["train_error"]) if rows else math.nan,
    }
    # A saved evaluation of the final weights with more repeated tests (`segdend evaluate
    # --save`; the paper's numbers are means of 20) stands for the run's final test error.
    evaluation = final_evaluation(run_dir, out["epochs_done"]) if tested else None
    if (evaluation is not None and int(tested[-1]["epoch"]) == out["epochs_done"]
            and evaluation["repeats"] > out["test_repeats"]
            and config is not None and _covers_training_tests(config, evaluation)):
        out.update(test_error=float(evaluation["test_error_mean"]),
                   test_error_repeat_sd=float(evaluation["test_error_sd"]),
                   test_repeats=int(evaluation["repeats"]))
    return out


def _covers_training_tests(config: RunConfig, evaluation: dict[str, Any]) -> bool:
    """Whether an evaluation tested at least the images the run's own tests used."""
    wanted = config.training.test_examples
    if wanted is None:
        return bool(evaluation.get("full_test_set"))
    return int(evaluation.get("test_images", 0)) >= wanted


def epoch_files(run_dir: Path, kind: str) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of ``losses`` or ``records`` files, in epoch order."""
    folder = Path(run_dir) / kind
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _EPOCH_FILE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file (raises SegdendError when unreadable)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise SegdendError(f"cannot read {path}: {err}") from None


def record_series(run_dir: Path, name: str) -> tuple[np.ndarray, list[int]]:
    """A per-example recording over all finished epochs, concatenated, and the number of
    examples of each epoch. Raises SegdendError when the run recorded no ``name``."""
    parts = []
    for _, path in epoch_files(run_dir, "records"):
        arrays = load_arrays(path)
        if name in arrays:
            parts.append(arrays[name])
    if not parts:
        raise SegdendError(
            f"{run_dir} has no `{name}` recordings (records/epoch_NNN.safetensors); train it "
            f"with output.record=[\"{name}\"] and an engine that records it"
        )
    return np.concatenate(parts), [len(p) for p in parts]


def config_of(run_dir: Path) -> RunConfig:
    return load_run_config(Path(run_dir))


def final_params(run_dir: Path) -> Params:
    """The run's latest weights (its initial weights when it has not trained yet).

    A run that trained but whose checkpoints are not there (e.g. one restored from the small
    files committed under results/) raises: silently analysing its initial weights instead
    would be wrong."""
    path = Path(run_dir) / "checkpoints" / "latest.safetensors"
    if path.is_file():
        return checkpoint_params(path)[0]
    rows = read_csv(Path(run_dir) / "metrics.csv")
    if rows:
        raise SegdendError(
            f"{run_dir} trained {rows[-1]['epoch']} epochs but its weights "
            "(checkpoints/latest.safetensors) are not there; copy its checkpoints back or "
            "train it again (runs are deterministic: the same seed gives the same weights)")
    cfg = config_of(run_dir)
    return initialise(cfg.model, cfg.training.seed)


def params_after_epoch(run_dir: Path, epoch: int, config: RunConfig) -> Params | None:
    """Weights at the end of ``epoch`` (0: the initial weights, rebuilt from the seed), or
    None when that checkpoint is missing."""
    if epoch == 0:
        return initialise(config.model, config.training.seed)
    path = Path(run_dir) / "checkpoints" / f"epoch_{epoch:03d}.safetensors"
    return checkpoint_params(path)[0] if path.is_file() else None
