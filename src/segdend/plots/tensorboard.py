"""Optional monitoring: a run's metrics and smoothed per-example losses as TensorBoard events.

Needs the ``tensorboard`` package (``pip install segdend[monitor]``); without it
:func:`write_tensorboard` does nothing and returns None, so callers can say so in one line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SMOOTH = 100  # examples averaged into each loss point
EVERY = 100  # one loss point per this many examples


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def write_tensorboard(run_dir: Path, logdir: Path | None = None) -> Path | None:
    """Convert ``metrics.csv``, ``quick_tests.csv``, the per-example losses (``losses/``,
    smoothed over 100 examples) and the angle to backprop (``records/``, if recorded) into
    TensorBoard event files in ``logdir`` (default ``RUN_DIR/tensorboard``), replacing the
    event files written there before. Returns the log directory, or None when the
    ``tensorboard`` package is not installed."""
    if not tensorboard_available():
        return None
    from torch.utils.tensorboard import SummaryWriter

    from segdend.analysis import smooth
    from segdend.runfiles import epoch_files, load_arrays, read_csv

    run_dir = Path(run_dir)
    logdir = Path(logdir) if logdir is not None else run_dir / "tensorboard"
    logdir.mkdir(parents=True, exist_ok=True)
    for old in logdir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for row in read_csv(run_dir / "metrics.csv"):
            step = int(row["examples_seen"])
            for key, value in row.items():
                if key in ("epoch", "examples_seen", "seconds") or value is None:
                    continue
                group = "error" if key.endswith(("error", "error_sd")) else "epoch_mean"
                writer.add_scalar(f"{group}/{key}", float(value), step)
            writer.add_scalar("time/seconds_per_epoch", float(row.get("seconds") or 0), step)
        for row in read_csv(run_dir / "quick_tests.csv"):
            writer.add_scalar("error/quick_test", float(row["test_error"]),
                              int(row["examples_seen"]))
        series: dict[str, list[np.ndarray]] = {}
        for _, path in epoch_files(run_dir, "losses"):
            a = load_arrays(path)
            series.setdefault("loss/out", []).append(a["loss_out"])
            for m in range(a["loss_hidden"].shape[1] if a["loss_hidden"].ndim == 2 else 0):
                series.setdefault(f"loss/hidden{m}", []).append(a["loss_hidden"][:, m])
        for _, path in epoch_files(run_dir, "records"):
            a = load_arrays(path)
            if "bp_angle" in a:
                series.setdefault("angle/bp_angle_deg", []).append(a["bp_angle"][:, 0])
        for tag, parts in series.items():
            y = smooth(np.concatenate(parts), SMOOTH)
            for i in range(EVERY - 1, len(y), EVERY):
                if np.isfinite(y[i]):
                    writer.add_scalar(tag, float(y[i]), i + 1)
        writer.flush()
    finally:
        writer.close()
    return logdir
