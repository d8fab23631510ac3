"""One function per figure of the paper's experiments, each a function of analysis results.

Every function takes the ``results`` dict of an experiment's analysis (see
:mod:`segdend.experiments`) and a path, draws one figure, marks the published value where
the paper gives one (hollow diamond or dashed line, labelled "published"), labels shortened
runs ("shortened: E of 60 epochs"), saves PNG and PDF, and returns their paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from segdend.plots.common import (
    add_note,
    colour,
    empty_panel,
    mark_published,
    new_figure,
    published_line,
    save_figure,
    style,
)


def _title(results: dict[str, Any]) -> str:
    fig = results.get("figure", "")
    return f"{results.get('title', results.get('experiment', ''))}" + (f" ({fig})" if fig else "")


def _legend(ax, **kwargs) -> None:
    """A legend, when something in the panel has a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# ---------------------------------------------------------------------------------------------
# Test error per condition


def _final_errors_panel(ax, results: dict[str, Any], labels: list[str], xlabel: str,
                        connect: bool = False) -> None:
    conds = list(results["conditions"])
    means, any_published = [], False
    for i, cond in enumerate(conds):
        c = results["conditions"][cond]
        errs = _arr(c.get("test_error", []))
        ok = errs[np.isfinite(errs)]
        mean = float(ok.mean()) if ok.size else np.nan
        sd = float(ok.std(ddof=1)) if ok.size > 1 else 0.0
        means.append(mean)
        if not connect:
            ax.bar(i, mean if np.isfinite(mean) else 0, width=0.6, color=colour(i), alpha=0.35,
                   edgecolor=colour(i))
        ax.errorbar(i, mean, yerr=sd, fmt="o" if connect else "none", color=colour(i),
                    capsize=3, ms=4)
        jitter = np.linspace(-0.12, 0.12, ok.size) if ok.size > 1 else np.zeros(ok.size)
        ax.scatter(i + jitter, ok, s=9, color="0.2", zorder=4,
                   label="seeds" if i == 0 and ok.size else None)
        if c.get("published") is not None:
            mark_published(ax, i, c["published"], label=not any_published)
            any_published = True
        if np.isfinite(mean):
            ax.annotate(f"{mean:.2f}", (i, mean), xytext=(6, 0), textcoords="offset points",
                        fontsize=7, va="center")
    if connect:
        ax.plot(range(len(conds)), means, color="0.5", lw=1, zorder=2)
        pub = [results["conditions"][c].get("published") for c in conds]
        if all(p is not None for p in pub):
            ax.plot(range(len(conds)), pub, ls="--", color="black", lw=0.8, zorder=2)
    ax.set_xticks(range(len(conds)), labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0, max(ax.get_ylim()[1], 1.0) * 1.12)
    _legend(ax, loc="upper left", ncol=2)


def _epoch_axis(ax, epochs: list[int]) -> None:
    """Whole-epoch ticks (every epoch when there are few)."""
    if epochs and max(epochs) - min(epochs) < 10:
        ax.set_xticks(range(int(min(epochs)), int(max(epochs)) + 1))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _curves_panel(ax, results: dict[str, Any], labels: list[str]) -> None:
    drawn, epochs = False, []
    for i, (cond, label) in enumerate(zip(results["conditions"], labels, strict=True)):
        for k, curve in enumerate(results["conditions"][cond].get("curves", [])):
            if not curve.get("epoch"):
                continue
            epochs += list(curve["epoch"])
            ax.plot(curve["epoch"], curve["test_error"], "-o", ms=2.5, color=colour(i),
                    alpha=0.9, label=label.replace("\n", " ") if k == 0 else None)
            drawn = True
        pub = results["conditions"][cond].get("published")
        if pub is not None:
            ax.axhline(pub, ls="--", lw=0.8, color=colour(i))
    if not drawn:
        empty_panel(ax, "no tested epoch yet")
        return
    _epoch_axis(ax, epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_ylim(bottom=0)
    ax.set_title("test error during training (dashed: published)")
    _legend(ax, loc="center left", bbox_to_anchor=(1.0, 0.5))


def comparison_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Final test error per condition (mean, sd over seeds, each seed, published value) and
    the test-error curves (Fig. 6-S1, 8B, 8-S1, 8D, 9B and the baselines)."""
    labels = [c.replace("_", "\n") for c in results["conditions"]]
    with style():
        fig = new_figure(2.8)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
        _final_errors_panel(left, results, labels, "condition")
        left.set_title("final test error (◇: published)")
        _curves_panel(right, results, labels)
        fig.suptitle(_title(results), fontsize=9)
        add_note(fig, results)
        return save_figure(fig, path)


DEPTH_LABELS = {"shallow": "0\n(10)", "h1": "1\n(500, 10)", "h2": "2\n(500, 100, 10)"}


def depth_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Test error against the number of hidden layers, with the published 8.3/4.1/3.2%
    (Fig. 6B), and the test-error curves."""
    labels = [DEPTH_LABELS.get(c, c) for c in results["conditions"]]
    with style():
        fig = new_figure(2.8)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
        _final_errors_panel(left, results, labels, "hidden layers", connect=True)
        left.set_title("final test error (◇: published)")
        _curves_panel(right, results, labels)
        fig.suptitle(_title(results), fontsize=9)
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Loss correlation (Fig. 5B/C)


def loss_corr_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Hidden vs output loss of one class in one epoch (Fig. 5B) and the per-class
    correlation over epochs (Fig. 5C), with the published r = 0.61 (class 2, epoch 2)."""
    lc = results["loss_corr"]
    cond = next(iter(results["conditions"]))
    with style():
        fig = new_figure(2.8)
        left, right = fig.subplots(1, 2)
        sc = lc.get("scatter")
        if sc and sc["loss_out"]:
            left.scatter(sc["loss_out"], sc["loss_hidden"], s=3, alpha=0.5, color=colour(0),
                         rasterized=True)
            r = sc["r"]
            left.set_title(f'class "{sc["class"]}", epoch {sc["epoch"]}: r = '
                           + ("n/a" if r is None or not np.isfinite(r) else f"{r:.2f}")
                           + f" (published {results['conditions'][cond]['published']})")
            left.set_xlabel("output loss")
            left.set_ylabel("hidden loss")
        else:
            empty_panel(left, "no examples of the class")
        for k, curve in enumerate(lc["curves"]):
            r = _arr([x for row in curve["r"] for x in row]).reshape(len(curve["r"]), -1)
            for c in range(r.shape[1]):
                right.plot(curve["epochs"], r[:, c], "-o", ms=2, lw=0.7, alpha=0.6,
                           color=colour(c), label=str(c) if k == 0 else None)
            right.plot(curve["epochs"], np.nanmean(r, axis=1), "-", lw=2.2, color="black",
                       label="mean" if k == 0 else None)
        band = lc.get("published_band")
        if band:
            right.axhspan(band[0], band[1], color="0.85", zorder=0, label="published range")
        pub = results["conditions"][cond].get("published")
        if pub is not None:
            mark_published(right, lc["published_epoch"], pub)
        _epoch_axis(right, [e for c in lc["curves"] for e in c["epochs"]]
                    + [lc["published_epoch"]])
        right.set_xlabel("epoch")
        right.set_ylabel("Pearson r (hidden vs output loss)")
        right.set_title("per digit class")
        _legend(right, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=6)
        fig.suptitle(_title(results), fontsize=9)
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Jacobian condition (Fig. 5-S1)


def jacobian_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Largest eigenvalue of (I - J)^T (I - J) against examples seen, with the published
    condition (below 1 during the first epoch)."""
    jac = results["jacobian"]
    with style():
        fig = new_figure(2.8, 4.5)
        ax = fig.subplots()
        top = 1.0
        for k, curve in enumerate(jac["curves"]):
            y = _arr(curve["eigenvalue"])
            if y.size:
                ax.plot(curve["examples"], y, "-o", ms=2.5, color=colour(k),
                        label=f"seed {k}" + (f" ({curve.get('source', '')})" if k == 0 else ""))
                top = max(top, float(np.nanmax(y)) if np.isfinite(y).any() else top)
        published_line(ax, jac.get("threshold", 1.0), "published: falls below 1 in epoch 1")
        if top > 20:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, top * 1.1)
        ax.set_xlabel("training examples")
        ax.set_ylabel("max eigenvalue of (I-J)ᵀ(I-J)")
        ax.set_title(_title(results))
        _legend(ax, loc="upper right", fontsize=6)
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Angle to backprop (Fig. 7A)


def bp_angle_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Angle between the local and the backprop hidden update, smoothed over 100 examples,
    per feedback condition, with the published levels (~70 and ~40 degrees)."""
    ba = results["bp_angle"]
    with style():
        fig = new_figure(2.8, 4.8)
        ax = fig.subplots()
        for i, cond in enumerate(results["conditions"]):
            for k, curve in enumerate(ba["curves"].get(cond, [])):
                ax.plot(curve["examples"], _arr(curve["smoothed"]), lw=1, color=colour(i),
                        alpha=0.9, label=cond.replace("_", " ") if k == 0 else None)
            pub = results["conditions"][cond].get("published")
            if pub is not None:
                published_line(ax, pub, f"published ~{pub:g}° ({cond.replace('_', ' ')})",
                               colour(i))
        curves = next(iter(ba["curves"].values()), [])
        if curves:
            edges = np.cumsum(curves[0].get("epoch_sizes", []))[:-1]
            for e in edges:
                ax.axvline(e, color="0.85", lw=0.6, zorder=0)
        ax.axhline(90, color="0.6", lw=0.6, ls=":")
        ax.set_ylim(0, 100)
        ax.set_xlabel("training examples")
        ax.set_ylabel(f"angle to backprop (deg, {ba['window']}-example mean)")
        ax.set_title(_title(results))
        _legend(ax, loc="lower left")
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Receptive fields (Fig. 7B/C)


def receptive_fields_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Receptive fields of the local network beside their best match in the backprop network
    (Fig. 7B), and the distribution of maximum correlations vs the shuffled control (7C)."""
    rf = results["receptive_fields"]
    shown = rf.get("shown")
    with style():
        fig = new_figure(2.6)
        left, right = fig.subfigures(1, 2, width_ratios=[2.0, 1.0])
        if shown:
            n, side = len(shown["local"]), shown["side"]
            axes = left.subplots(2, n, squeeze=False)
            for j in range(n):
                for row, key in enumerate(("local", "backprop")):
                    img = np.asarray(shown[key][j]).reshape(side, side)
                    lim = float(np.abs(img - img.mean()).max()) or 1.0
                    axes[row, j].imshow(img - img.mean(), cmap="RdBu_r", vmin=-lim, vmax=lim)
                    axes[row, j].set_xticks([])
                    axes[row, j].set_yticks([])
                axes[0, j].set_title(f"r={shown['r'][j]:.2f}", fontsize=7)
            axes[0, 0].set_ylabel("local")
            axes[1, 0].set_ylabel("backprop")
            left.suptitle(_title(results), fontsize=9)
            ax = right.subplots()
            bins = np.linspace(-0.2, 1.0, 37)
            ax.hist(shown["max_r"], bins=bins, color=colour(0), alpha=0.7,
                    label="vs backprop fields")
            ax.hist(shown["max_r_shuffled"], bins=bins, color="0.5", alpha=0.7,
                    label="shuffled control")
            ax.set_xlabel("max Pearson r")
            ax.set_ylabel("hidden neurons")
            _legend(ax, loc="upper left")
            ax.set_title("published: far above shuffled", fontsize=7)
        else:
            empty_panel(left.subplots(), "no pair of runs to compare")
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# t-SNE (Fig. 6C)


def tsne_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """t-SNE embeddings of test-set activity at the input and each hidden layer, coloured by
    digit, with the silhouette score of each (higher: cleaner clusters)."""
    ts = results["tsne"]
    labels = np.asarray(ts["labels"])
    panels = ts["panels"]
    with style():
        fig = new_figure(2.6)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, p in zip(axes, panels, strict=True):
            for d in range(10):
                pick = labels == d
                if pick.any():
                    ax.scatter(np.asarray(p["x"])[pick], np.asarray(p["y"])[pick], s=2,
                               color=colour(d), label=str(d), rasterized=True)
            s = p.get("silhouette")
            ax.set_title(f"{p['layer']}\nsilhouette "
                         + ("n/a" if s is None or not np.isfinite(s) else f"{s:.2f}"))
            ax.set_xticks([])
            ax.set_yticks([])
        _legend(axes[-1], loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3,
                        fontsize=6)
        fig.suptitle(_title(results) + " (published: clusters become cleaner layer by layer)",
                     fontsize=8)
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Voltage traces (Fig. 3C, 9A)


def traces_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Basal, apical and somatic voltages of example hidden neurons through a forward and a
    target phase with their plateau potentials, the output somata, and a spike raster."""
    tr = results["traces"]
    length, (first, n) = tr["length"], tr["window"]
    hidden = tr["hidden"]
    with style():
        fig = new_figure(1.25 * (len(hidden) + 2) + 0.5)
        axes = fig.subplots(len(hidden) + 2, 1, sharex=True)
        t = np.arange(2 * length)
        for ax in axes:
            for start in (first, length + first):
                ax.axvspan(start, start + n, color="0.92", zorder=0)
            ax.axvline(length, color="0.4", lw=0.8, ls=":")
        for ax, h in zip(axes, hidden, strict=False):
            ax.plot(t, h["basal"], color="0.55", lw=0.9, label="basal")
            ax.plot(t, h["soma"], color="black", lw=1.0, label="soma")
            ax.plot(t, h["apical"], color=colour(1), lw=1.0, label="apical")
            ax.set_ylabel(f"hidden {h['neuron']}\nvoltage")
            ax.text(first, 1.0, f"α_f = {h['alpha_f']:.3f}", transform=ax.get_xaxis_transform(),
                    fontsize=7, va="top")
            ax.text(length + first, 1.0, f"α_t = {h['alpha_t']:.3f}",
                    transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        _legend(axes[0], loc="upper left", ncol=3, bbox_to_anchor=(0.0, 1.35))
        axes[0].set_title(f"{_title(results)}: digit {tr['label']} (predicted "
                          f"{tr['predicted']}); grey: integration windows (plateaus)",
                          fontsize=8, loc="right")
        ax = axes[len(hidden)]
        for o in tr["output"]:
            ax.plot(t, o["soma"], color=colour(0) if o["is_label"] else colour(3),
                    label=f"unit {o['unit']}" + (" (label)" if o["is_label"] else ""))
        ax.set_ylabel("output\nsoma")
        _legend(ax, loc="upper left", fontsize=6)
        ax = axes[-1]
        rh, ro = tr["raster_hidden"], tr["raster_output"]
        off = tr["n_raster_hidden"] + 3
        ax.scatter(rh["t"], rh["unit"], s=1.5, marker="|", color="black")
        ax.scatter(ro["t"], np.asarray(ro["unit"], dtype=int) + off, s=3, marker="|",
                   color=colour(0))
        ax.set_yticks([tr["n_raster_hidden"] / 2, off + tr["n_output"] / 2], ["hidden", "output"])
        ax.set_xlabel("time step (forward phase | target phase)")
        add_note(fig, results)
        return save_figure(fig, path)
