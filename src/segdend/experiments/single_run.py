"""One run's curves for ``segdend plot RUN_DIR``: learning curves and whatever it recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segdend import analysis
from segdend.errors import SegdendError
from segdend.runfiles import epoch_files, load_arrays, read_csv

LOSS_WINDOW = 100
MAX_POINTS = 2000


def analyse_run(run_dir: Path) -> dict[str, Any]:
    """Everything :mod:`segdend.plots.run` draws for one run directory."""
    from segdend.experiments.learning import angle_curve, jacobian_curve

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise SegdendError(f"{run_dir} is not a segdend run directory (no config.json)")
    data: dict[str, Any] = {"title": run_dir.name,
                            "metrics": read_csv(run_dir / "metrics.csv"),
                            "quick": read_csv(run_dir / "quick_tests.csv")}
    outs, hiddens = [], []
    for _, path in epoch_files(run_dir, "losses"):
        a = load_arrays(path)
        outs.append(a["loss_out"])
        hiddens.append(a["loss_hidden"].reshape(len(a["loss_out"]), -1))
    if outs:
        lo, lh = np.concatenate(outs), np.concatenate(hiddens)
        x = np.arange(1, len(lo) + 1)
        xs, ys = analysis.downsample(x, analysis.smooth(lo, LOSS_WINDOW), MAX_POINTS)
        hidden = [analysis.downsample(x, analysis.smooth(lh[:, m], LOSS_WINDOW), MAX_POINTS)[1]
                  .tolist() for m in range(lh.shape[1])]
        data["losses"] = {"examples": xs.tolist(), "loss_out": ys.tolist(),
                          "loss_hidden": hidden, "window": LOSS_WINDOW}
    recorded = set()
    for _, path in epoch_files(run_dir, "records"):
        recorded.update(load_arrays(path))
    if "bp_angle" in recorded:
        c = angle_curve(run_dir)
        x, y = analysis.downsample(c["examples"], c["smoothed"], MAX_POINTS)
        data["angle"] = {"examples": x.tolist(), "smoothed": y.tolist(), "window": LOSS_WINDOW}
    if "ubar_f" in recorded or any((run_dir / "snapshots").glob("jacobian_*")):
        data["jacobian"] = jacobian_curve(run_dir)
    return data


def plot_run(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Draw a run's figures into ``out`` (default ``RUN_DIR/plots``); returns the files."""
    from segdend.plots import learning_curves_figure, recordings_figure

    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "plots"
    data = analyse_run(run_dir)
    files = learning_curves_figure(data, out / "learning_curves")
    if data.get("angle") or data.get("jacobian"):
        files += recordings_figure(data, out / "recordings")
    return files
