"""Experiments about how learning works: loss correlation (Fig. 5B/C), the Jacobian condition
of Theorem 1 (Fig. 5-S1) and the angle to backprop (Fig. 7A).

Also the run-level curves that ``segdend plot RUN_DIR`` draws from a run's recordings
(:func:`angle_curve`, :func:`jacobian_curve`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segdend import analysis, plots
from segdend.config import RunConfig
from segdend.errors import SegdendError
from segdend.experiments.base import Experiment, RunDirs
from segdend.experiments.common import base_results, usable_runs
from segdend.experiments.runs import dataset_for
from segdend.runfiles import (
    config_of,
    epoch_files,
    load_arrays,
    params_after_epoch,
    record_series,
)

JACOBIAN_WINDOW = 100  # examples averaged into J (MODEL.md 10)
ANGLE_WINDOW = 100  # smoothing of the angle to backprop (MODEL.md 10)
LOSS_CORR_EPOCH = 2  # the paper's r = 0.61 is class "2" in epoch 2
LOSS_CORR_CLASS = 2
MAX_POINTS = 2000  # points of a curve or scatter kept for a figure


# ---------------------------------------------------------------------------------------------
# Loss correlation (Fig. 5B/C)


def loss_correlations(run_dir: Path) -> dict[str, Any]:
    """Per finished epoch, Pearson r between the hidden loss (first hidden layer) and the
    output loss of the examples of each digit class, from ``losses/epoch_NNN``."""
    cfg = config_of(run_dir)
    data = dataset_for(cfg)
    epochs, r, per_epoch = [], [], {}
    for epoch, path in epoch_files(run_dir, "losses"):
        a = load_arrays(path)
        if a["loss_hidden"].ndim != 2 or a["loss_hidden"].shape[1] == 0:
            raise SegdendError(f"{run_dir} has no hidden layer: no hidden loss to correlate")
        labels = np.asarray(data.train_labels)[a["order"]]
        lh, lo = a["loss_hidden"][:, 0], a["loss_out"]
        epochs.append(epoch)
        r.append(analysis.loss_correlation_by_class(lh, lo, labels))
        per_epoch[epoch] = (lh, lo, labels)
    if not epochs:
        raise SegdendError(f"{run_dir} has no finished epoch (losses/epoch_NNN.safetensors)")
    return {"epochs": epochs, "r": np.array(r), "losses": per_epoch}


def analyse_loss_corr(exp: Experiment, run_dirs: RunDirs) -> dict[str, Any]:
    res = base_results(exp, run_dirs)
    cond = next(iter(exp.conditions))
    curves, values, scatter, used = [], [], None, None
    for i, run_dir in enumerate(usable_runs(res, run_dirs[cond])):
        lc = loss_correlations(run_dir)
        epoch = LOSS_CORR_EPOCH if LOSS_CORR_EPOCH in lc["epochs"] else lc["epochs"][-1]
        used = epoch
        row = lc["epochs"].index(epoch)
        values.append(float(lc["r"][row, LOSS_CORR_CLASS]))
        curves.append({"epochs": lc["epochs"], "r": lc["r"].tolist()})
        if i == 0:
            lh, lo, labels = lc["losses"][epoch]
            pick = np.flatnonzero(labels == LOSS_CORR_CLASS)
            if len(pick) > MAX_POINTS:
                pick = np.sort(np.random.default_rng(0).choice(pick, MAX_POINTS, replace=False))
            scatter = {"epoch": epoch, "class": LOSS_CORR_CLASS,
                       "loss_hidden": lh[pick].tolist(), "loss_out": lo[pick].tolist(),
                       "r": values[-1]}
    res["conditions"][cond]["value"] = values
    res["loss_corr"] = {"curves": curves, "scatter": scatter, "epoch": used,
                        "class": LOSS_CORR_CLASS, "published_epoch": LOSS_CORR_EPOCH,
                        "published_band": [0.2, 0.6]}
    return res


LOSS_CORR = Experiment(
    id="loss_corr",
    title="Correlation of hidden and output losses",
    figure="Fig. 5B/C",
    preset="paper-h1",
    conditions={"h1": []},
    epochs=2,
    published={"h1": 0.61},
    claim='r = 0.61 for class "2" in epoch 2; mostly 0.2-0.6 over training; lower in epoch 1',
    measure="loss_corr_r",
    measure_label='Pearson r, class "2", epoch 2 (or the last)',
    analyse_fn=analyse_loss_corr,
    plot_fn=plots.loss_corr_figure,
)


# ---------------------------------------------------------------------------------------------
# Jacobian condition (Fig. 5, supplement 1)


def _last_layers(config: RunConfig) -> tuple[int, int]:
    n = len(config.model.layers)
    if n < 2:
        raise SegdendError("the Jacobian condition needs a hidden layer; use a network with one")
    return n - 1, n - 2


def jacobian_snapshot(run_dir: Path, examples_seen: int, config: RunConfig) -> Path:
    """Save what J needs at this point of training: the current output and last feedback
    weights and the last 100 recorded ``ubar_f`` (``snapshots/jacobian_NNNNNNNNN``)."""
    from safetensors.numpy import save

    from segdend.checkpoint import atomic_write_bytes, load_checkpoint

    run_dir = Path(run_dir)
    out_layer, fb_layer = _last_layers(config)
    arrays, meta = load_checkpoint(run_dir / "checkpoints" / "latest.safetensors")
    ubar = arrays.get("partial.record.ubar_f")
    if ubar is None or len(ubar) == 0:  # the epoch just ended: its recordings are on disk
        path = run_dir / "records" / f"epoch_{int(meta['epoch']):03d}.safetensors"
        ubar = load_arrays(path).get("ubar_f") if path.is_file() else None
    if ubar is None:
        raise SegdendError(f"{run_dir} recorded no ubar_f; the jacobian experiment needs "
                           "output.record=[\"ubar_f\"] and an engine that records it")
    path = run_dir / "snapshots" / f"jacobian_{examples_seen:09d}.safetensors"
    atomic_write_bytes(path, save({
        "W_out": np.ascontiguousarray(arrays[f"params.W{out_layer}"]),
        "Y": np.ascontiguousarray(arrays[f"params.Y{fb_layer}"]),
        "ubar_f": np.ascontiguousarray(ubar[-JACOBIAN_WINDOW:]),
        "examples_seen": np.array([examples_seen], dtype=np.int64)}))
    return path


def jacobian_curve(run_dir: Path) -> dict[str, Any]:
    """Largest eigenvalue of ``(I - J)^T (I - J)`` along training.

    From ``snapshots/`` when the run was trained in steps (J of the last 100 examples with the
    weights at the end of those examples: exact per step), otherwise from the recorded
    ``ubar_f`` of each epoch with the weights of the nearest epoch checkpoint (the start or
    the end of that epoch; the paper uses each example's own weights, so mid-epoch values
    are an approximation).
    """
    from segdend.model import describe

    run_dir = Path(run_dir)
    cfg = config_of(run_dir)
    c = describe(cfg).constants
    snaps = sorted((run_dir / "snapshots").glob("jacobian_*.safetensors"))
    xs, ys = [], []
    if snaps:
        for p in snaps:
            a = load_arrays(p)
            xs.append(int(a["examples_seen"][0]))
            ys.append(analysis.jacobian_eigenvalue(a["ubar_f"], a["W_out"], a["Y"],
                                                   phi_max=c.phi_max, k_D=c.k_D))
        return {"examples": xs, "eigenvalue": ys, "source": "snapshots (exact per step)"}
    out_layer, fb_layer = _last_layers(cfg)
    ubar, sizes = record_series(run_dir, "ubar_f")
    start = 0
    for epoch, n in enumerate(sizes, start=1):
        step = max(JACOBIAN_WINDOW, n // 50)
        ends = list(range(min(step, n), n + 1, step))
        if not ends or ends[-1] != n:
            ends.append(n)
        before, after = params_after_epoch(run_dir, epoch - 1, cfg), params_after_epoch(
            run_dir, epoch, cfg)
        for end in ends:
            params = before if (end < n / 2 and before is not None) or after is None else after
            if params is None:
                continue
            window = ubar[start + max(0, end - JACOBIAN_WINDOW):start + end]
            xs.append(start + end)
            ys.append(analysis.jacobian_eigenvalue(window, params.W[out_layer],
                                                   params.Y[fb_layer], phi_max=c.phi_max,
                                                   k_D=c.k_D))
        start += n
    return {"examples": xs, "eigenvalue": ys,
            "source": "recorded ubar_f with the nearest epoch checkpoint (approximation)"}


def analyse_jacobian(exp: Experiment, run_dirs: RunDirs) -> dict[str, Any]:
    res = base_results(exp, run_dirs)
    cond = next(iter(exp.conditions))
    curves, values, below = [], [], []
    for run_dir in usable_runs(res, run_dirs[cond]):
        curve = jacobian_curve(run_dir)
        curves.append(curve)
        ev = np.asarray(curve["eigenvalue"], dtype=float)
        values.append(float(ev[-1]) if ev.size else float("nan"))
        hit = np.flatnonzero(ev < 1.0)
        below.append(int(curve["examples"][hit[0]]) if hit.size else None)
    res["conditions"][cond]["value"] = values
    res["jacobian"] = {"curves": curves, "first_below_1": below, "threshold": 1.0}
    return res


JACOBIAN = Experiment(
    id="jacobian",
    title="Theorem 1's condition: largest eigenvalue of (I-J)ᵀ(I-J)",
    figure="Fig. 5, supplement 1",
    preset="paper-h1",
    conditions={"h1": []},
    epochs=1,
    published={"h1": None},
    claim="the eigenvalue falls below 1 during the first epoch (J approaches the identity)",
    measure="jacobian_max_eigenvalue",
    measure_label="max eigenvalue of (I-J)^T(I-J) at the end",
    record=("ubar_f",),
    snapshots=50,
    snapshot_fn=jacobian_snapshot,
    analyse_fn=analyse_jacobian,
    plot_fn=plots.jacobian_figure,
)


# ---------------------------------------------------------------------------------------------
# Angle to backprop (Fig. 7A)


def angle_curve(run_dir: Path, layer: int = 0, window: int = ANGLE_WINDOW) -> dict[str, Any]:
    """Per-example angle (degrees) between the local and the backprop update of hidden layer
    ``layer`` over all finished epochs, and its ``window``-example moving average."""
    angles, sizes = record_series(run_dir, "bp_angle")
    a = angles[:, layer] if angles.ndim == 2 else angles
    return {"examples": np.arange(1, len(a) + 1), "angle": a,
            "smoothed": analysis.smooth(a, window), "epoch_sizes": sizes}


def analyse_bp_angle(exp: Experiment, run_dirs: RunDirs) -> dict[str, Any]:
    res = base_results(exp, run_dirs)
    curves: dict[str, list[dict[str, Any]]] = {}
    for cond in exp.conditions:
        values, curves[cond] = [], []
        for run_dir in usable_runs(res, run_dirs[cond]):
            c = angle_curve(run_dir)
            tail = c["angle"][-max(1, len(c["angle"]) // 10):]
            values.append(float(np.nanmean(tail)) if np.isfinite(tail).any() else float("nan"))
            x, y = analysis.downsample(c["examples"], c["smoothed"], MAX_POINTS)
            settled = c["smoothed"][ANGLE_WINDOW - 1:] if len(c["smoothed"]) >= ANGLE_WINDOW \
                else c["smoothed"]
            curves[cond].append({"examples": x.tolist(), "smoothed": y.tolist(),
                                 "epoch_sizes": c["epoch_sizes"],
                                 "min_smoothed": float(np.nanmin(settled))
                                 if np.isfinite(settled).any() else float("nan")})
        res["conditions"][cond]["value"] = values
    res["bp_angle"] = {"curves": curves, "window": ANGLE_WINDOW,
                       "published_dip": {"spiking_feedback": 65.0, "rate_feedback": 35.0}}
    return res


BP_ANGLE = Experiment(
    id="bp_angle",
    title="Angle between the local and the backprop hidden updates",
    figure="Fig. 7A",
    preset="paper-h1",
    conditions={"spiking_feedback": [], "rate_feedback": ['model.feedback_signal="rates"']},
    epochs=10,
    published={"spiking_feedback": 70.0, "rate_feedback": 40.0},
    claim="spiking feedback: drops to ~65 deg then settles near ~70 deg; rate feedback: ~35 "
          "deg then ~40 deg",
    measure="bp_angle_deg",
    measure_label="angle to backprop (deg), last 10% of examples",
    record=("bp_angle",),
    spiking_only="rate mode has no spikes: spiking and rate feedback coincide",
    analyse_fn=analyse_bp_angle,
    plot_fn=plots.bp_angle_figure,
)
