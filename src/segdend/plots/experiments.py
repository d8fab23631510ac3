"""One function per figure of the paper's experiments, each a function of analysis results.

Every function takes the ``results`` dict of an experiment's analysis (see
:mod:`segdend.experiments`) and a path, draws one figure, marks the published value where
the paper gives one (hollow diamond or dashed level labelled outside the axes, "published"
in the legend), labels shortened runs ("shortened: E of 60 epochs"), saves PNG and PDF, and
returns their paths. Several seeds are drawn as thin light lines (or small dots) with their
mean bold, and final values as mean and sd over seeds; one seed is drawn as one line.
Figures are 7 in wide for two panels or more, 3.5 in for one; legends sit outside the axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from segdend.plots.common import (
    COLUMN_WIDTH,
    PAGE_WIDTH,
    SEED_ALPHA,
    add_note,
    colour,
    empty_panel,
    examples_axis,
    figure_legend,
    mark_published,
    new_figure,
    plot_seeds,
    published_handle,
    published_levels,
    save_figure,
    seed_handles,
    seed_mean,
    style,
    wrap,
)


def _title(results: dict[str, Any], width: float = PAGE_WIDTH, fontsize: float = 9) -> str:
    fig = results.get("figure", "")
    text = f"{results.get('title', results.get('experiment', ''))}" + (f" ({fig})" if fig else "")
    return wrap(text, width, fontsize)


def _legend(ax, **kwargs) -> None:
    """A legend, when something in the panel has a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _finite(values) -> np.ndarray:
    a = _arr(values)
    return a[np.isfinite(a)]


def _mean_sd(values) -> tuple[float, float, int]:
    ok = _finite(values)
    mean = float(ok.mean()) if ok.size else float("nan")
    sd = float(ok.std(ddof=1)) if ok.size > 1 else 0.0
    return mean, sd, int(ok.size)


def _n_seeds(results: dict[str, Any]) -> int:
    """The largest number of seeds of any condition."""
    return max((len(c.get("seeds") or c.get("test_error") or [])
                for c in results["conditions"].values()), default=0)


# ---------------------------------------------------------------------------------------------
# Test error per condition


def _final_errors_panel(ax, results: dict[str, Any], labels: list[str], xlabel: str,
                        connect: bool = False) -> None:
    """Per condition: mean final test error (bar, or point joined to the next), sd over seeds
    (error bar, with two seeds or more), each seed (small dot) and the published value
    (hollow diamond). The mean (± sd) is written under the condition's name, not on the
    data."""
    conds = list(results["conditions"])
    means, ticks, top = [], [], 1.0
    for i, cond in enumerate(conds):
        c = results["conditions"][cond]
        ok = _finite(c.get("test_error", []))
        mean, sd, n = _mean_sd(ok)
        means.append(mean)
        if not connect:
            ax.bar(i, mean if np.isfinite(mean) else 0, width=0.6, color=colour(i), alpha=0.35,
                   edgecolor=colour(i))
        if np.isfinite(mean):
            ax.errorbar(i, mean, yerr=sd if n > 1 else None, fmt="o" if connect else "none",
                        color=colour(i), ecolor="0.15" if not connect else colour(i),
                        elinewidth=1.2, capsize=3, ms=5, zorder=5)
        if n > 1 or not connect:  # one seed joined to the next: its point is the mean
            jitter = np.linspace(-0.15, 0.15, n) if n > 1 else np.zeros(n)
            ax.scatter(i + jitter, ok, s=8, color="0.2", alpha=0.7 if n > 1 else 1.0,
                       zorder=4, linewidths=0)
        if c.get("published") is not None:
            mark_published(ax, i, c["published"], label=False)
            top = max(top, float(c["published"]))
        if ok.size:
            top = max(top, float(ok.max()), mean + sd)
        value = "n/a" if not np.isfinite(mean) else f"{mean:.2f}" + (f" ± {sd:.2f}" if n > 1
                                                                        else "")
        ticks.append(f"{labels[i]}\n{value}")
    if connect:
        ax.plot(range(len(conds)), means, color="0.5", lw=1, zorder=2)
        pub = [results["conditions"][c].get("published") for c in conds]
        if all(p is not None for p in pub):
            ax.plot(range(len(conds)), pub, ls="--", color="black", lw=0.8, zorder=2)
    ax.set_xticks(range(len(conds)), ticks)
    ax.set_xlim(-0.6, len(conds) - 0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0, top * 1.1)
    n = _n_seeds(results)
    ax.set_title("final test error" + (f" (mean ± sd of {n} seeds)" if n > 1 else ""),
                 fontsize=8)


def _epoch_axis(ax, epochs: list[int]) -> None:
    """Whole-epoch ticks (every epoch when there are few)."""
    if epochs and max(epochs) - min(epochs) < 10:
        ax.set_xticks(range(int(min(epochs)), int(max(epochs)) + 1))
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _curves_panel(ax, results: dict[str, Any], labels: list[str]) -> list[Line2D]:
    """Test error against epoch per condition (each seed thin, the mean bold), published
    levels dashed in the condition's colour and labelled right of the axes. Returns the
    legend entries of the conditions."""
    drawn, epochs, handles, levels = False, [], [], []
    for i, (cond, label) in enumerate(zip(results["conditions"], labels, strict=True)):
        c = results["conditions"][cond]
        curves = [(cv["epoch"], _arr(cv["test_error"])) for cv in c.get("curves", [])
                  if cv.get("epoch")]
        if plot_seeds(ax, curves, colour(i), None):
            drawn = True
            epochs += [e for x, _ in curves for e in x]
        name = label.split("\n")[0] if "\n(" in label else label.replace("\n", " ")
        handles.append(Line2D([], [], color=colour(i), lw=1.6, label=name))
        if c.get("published") is not None:
            levels.append((c["published"], f"{c['published']:g}", colour(i)))
    if not drawn:
        empty_panel(ax, "no tested epoch yet")
        return handles
    _epoch_axis(ax, epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_ylim(bottom=0)
    ax.set_title("test error during training", fontsize=8)
    published_levels(ax, levels)
    return handles


def _errors_figure(results: dict[str, Any], path: Path, labels: list[str], xlabel: str,
                   connect: bool, legend_labels: list[str] | None = None) -> list[Path]:
    with style():
        fig = new_figure(3.2)
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.25]})
        _final_errors_panel(left, results, labels, xlabel, connect=connect)
        cond_handles = _curves_panel(right, results, legend_labels or labels)
        n = _n_seeds(results)
        dot = Line2D([], [], color="0.2", ls="none", marker="o", ms=3,
                     label="each seed (dot)") if n > 1 else None
        pub = published_handle("published (◇, dashed)", diamond=True) if any(
            c.get("published") is not None for c in results["conditions"].values()) else None
        figure_legend(fig, [*cond_handles, dot, *seed_handles(n), pub],
                      ncol=min(4, len(cond_handles) + 1) if len(cond_handles) > 2 else 6)
        fig.suptitle(_title(results), fontsize=9)
        add_note(fig, results)
        return save_figure(fig, path)


def comparison_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Final test error per condition (mean, sd over seeds, each seed, published value) and
    the test-error curves (Fig. 6-S1, 8B, 8-S1, 8D, 9B and the baselines)."""
    labels = [c.replace("_", "\n") for c in results["conditions"]]
    names = [c.replace("_", " ") for c in results["conditions"]]
    return _errors_figure(results, path, labels, "condition", False, names)


DEPTH_LABELS = {"shallow": "0\n(10)", "h1": "1\n(500, 10)", "h2": "2\n(500, 100, 10)"}
DEPTH_NAMES = {"shallow": "0 hidden (10)", "h1": "1 hidden (500, 10)",
               "h2": "2 hidden (500, 100, 10)"}


def depth_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Test error against the number of hidden layers, with the published 8.3/4.1/3.2%
    (Fig. 6B), and the test-error curves."""
    labels = [DEPTH_LABELS.get(c, c) for c in results["conditions"]]
    names = [DEPTH_NAMES.get(c, c) for c in results["conditions"]]
    return _errors_figure(results, path, labels, "hidden layers", True, names)


# ---------------------------------------------------------------------------------------------
# Loss correlation (Fig. 5B/C)


def _r_matrix(curve: dict[str, Any]) -> np.ndarray:
    return _arr([x for row in curve["r"] for x in row]).reshape(len(curve["r"]), -1)


def loss_corr_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Hidden vs output loss of one class in one epoch (Fig. 5B) and the per-class
    correlation over epochs (Fig. 5C), with the published r = 0.61 (class 2, epoch 2).
    With several seeds each class's line is its mean over seeds, the mean over classes is
    drawn thin per seed and bold over seeds."""
    lc = results["loss_corr"]
    cond = next(iter(results["conditions"]))
    c = results["conditions"][cond]
    published = c.get("published")
    curves = [cv for cv in lc["curves"] if cv.get("epochs")]
    n = len(curves)
    with style():
        fig = new_figure(3.0)
        left, right = fig.subplots(1, 2)
        sc = lc.get("scatter")
        if sc and sc["loss_out"]:
            left.scatter(sc["loss_out"], sc["loss_hidden"], s=3, alpha=0.5, color=colour(0),
                         rasterized=True)
            r = sc["r"]
            seed = (c.get("seeds") or [None])[0]
            lines = [f'class "{sc["class"]}", epoch {sc["epoch"]}'
                     + (f" (seed {seed})" if n > 1 and seed is not None else "")
                     + ": r = " + ("n/a" if r is None or not np.isfinite(r) else f"{r:.2f}")]
            mean, sd, k = _mean_sd(c.get("value", []))
            if k > 1:
                lines.append(f"mean of {k} seeds r = {mean:.2f} ± {sd:.2f}")
            if published is not None:
                lines.append(f"published r = {published:g}")
            left.set_title("\n".join(lines), fontsize=8)
            left.set_xlabel("output loss")
            left.set_ylabel("hidden loss")
        else:
            empty_panel(left, "no examples of the class")
        band = lc.get("published_band")
        if band:
            right.axhspan(band[0], band[1], color="0.88", zorder=0, label="published range")
        if curves:
            per_class = [(cv["epochs"], _r_matrix(cv)) for cv in curves]
            n_class = max(r.shape[1] for _, r in per_class)
            for k in range(n_class):
                m = seed_mean([(x, r[:, k]) for x, r in per_class if r.shape[1] > k])
                if m is not None or n == 1:
                    x, y = m if m is not None else (per_class[0][0], per_class[0][1][:, k])
                    right.plot(x, y, "-o", ms=2, lw=0.7, alpha=0.7, color=colour(k),
                               label=str(k))
            plot_seeds(right, [(x, np.nanmean(r, axis=1)) for x, r in per_class], "black",
                       f"mean of classes and {n} seeds" if n > 1 else "mean of classes",
                       marker="", lw=2.2)
        pub_epoch = lc.get("published_epoch")
        if published is not None and pub_epoch is not None:
            mark_published(right, pub_epoch, published)
        epochs = [e for cv in curves for e in cv["epochs"]]
        _epoch_axis(right, epochs + ([pub_epoch] if pub_epoch is not None else []))
        right.set_xlabel("epoch")
        right.set_ylabel("Pearson r (hidden vs output loss)")
        right.set_title("per digit class" + (f" (mean of {n} seeds)" if n > 1 else ""),
                        fontsize=8)
        handles, _ = right.get_legend_handles_labels()
        if n > 1:
            handles.append(Line2D([], [], color="black", lw=0.7, alpha=2 * SEED_ALPHA,
                                  label="mean of classes, each seed"))
        if handles:
            right.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5),
                         fontsize=6, handlelength=1.5)
        fig.suptitle(_title(results), fontsize=9)
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Jacobian condition (Fig. 5-S1)


def jacobian_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Largest eigenvalue of (I - J)^T (I - J) against examples seen (each seed thin, their
    mean bold), with the published condition (below 1 during the first epoch)."""
    jac = results["jacobian"]
    curves = [(cv["examples"], _arr(cv["eigenvalue"])) for cv in jac["curves"]
              if cv.get("examples")]
    sources = sorted({cv.get("source", "") for cv in jac["curves"] if cv.get("source")})
    with style():
        fig = new_figure(3.4, COLUMN_WIDTH)
        ax = fig.subplots()
        top = 1.0
        for _, y in curves:
            if np.isfinite(y).any():
                top = max(top, float(np.nanmax(y)))
        label = f"mean of {len(curves)} seeds" if len(curves) > 1 else "eigenvalue"
        plot_seeds(ax, curves, colour(0), label)
        threshold = jac.get("threshold", 1.0)
        if top > 20:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, top * 1.1)
        published_levels(ax, [(threshold, f"{threshold:g}", "black")])
        if not curves:
            empty_panel(ax, "no eigenvalue recorded")
        examples_axis(ax)
        ax.set_xlabel("training examples")
        ax.set_ylabel("max eigenvalue of (I-J)ᵀ(I-J)")
        title = _title(results, COLUMN_WIDTH)
        if sources:
            title += "\n" + wrap("J from " + "; ".join(sources), COLUMN_WIDTH, 7)
        ax.set_title(title, fontsize=8)
        handles = [Line2D([], [], color=colour(0), lw=1.6, label=label)] if curves else []
        figure_legend(fig, [*handles, *seed_handles(len(curves), colour(0))[:1],
                            published_handle("published: falls below 1 in epoch 1")],
                      ncol=2, fontsize=6)
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Angle to backprop (Fig. 7A)


def bp_angle_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Angle between the local and the backprop hidden update, smoothed over 100 examples,
    per feedback condition (each seed thin, their mean bold), with the published levels
    (~70 and ~40 degrees) dashed and labelled right of the axes."""
    ba = results["bp_angle"]
    with style():
        fig = new_figure(3.6, COLUMN_WIDTH)
        ax = fig.subplots()
        handles, levels, n = [], [], 0
        for i, cond in enumerate(results["conditions"]):
            curves = [(cv["examples"], _arr(cv["smoothed"]))
                      for cv in ba["curves"].get(cond, [])]
            n = max(n, len(curves))
            plot_seeds(ax, curves, colour(i), None, marker="", lw=1.0, seed_lw=0.5,
                       mean_lw=1.1)
            handles.append(Line2D([], [], color=colour(i), lw=1.6,
                                  label=cond.replace("_", " ")))
            pub = results["conditions"][cond].get("published")
            if pub is not None:
                levels.append((pub, f"~{pub:g}°", colour(i)))
        curves = next(iter(ba["curves"].values()), [])
        if curves:
            edges = np.cumsum(curves[0].get("epoch_sizes", []))[:-1]
            for e in edges:
                ax.axvline(e, color="0.88", lw=0.6, zorder=0)
        ax.axhline(90, color="0.6", lw=0.6, ls=":")
        ax.set_ylim(0, 100)
        examples_axis(ax)
        ax.set_xlabel("training examples (grey: epochs)")
        ax.set_ylabel(f"angle to backprop (deg, {ba['window']}-example mean)")
        ax.set_title(_title(results, COLUMN_WIDTH), fontsize=8)
        published_levels(ax, levels)
        figure_legend(fig, [*handles, *seed_handles(n, seed_lw=0.5, mean_lw=1.1),
                            published_handle("published (dashed)") if levels else None],
                      ncol=2)
        add_note(fig, results)
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Receptive fields (Fig. 7B/C)


def receptive_fields_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Receptive fields of the local network beside their best match in the backprop network
    (Fig. 7B), and the distribution of maximum correlations vs the shuffled control (7C).
    With several seed pairs, each pair's mean is a thin vertical line and the mean over
    pairs a bold one (the histograms and fields are of the first pair)."""
    rf = results["receptive_fields"]
    shown = rf.get("shown")
    means = _finite(rf.get("mean_max_r", []))
    controls = _finite(rf.get("mean_max_r_shuffled", []))
    with style():
        fig = new_figure(2.9)
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
            left.suptitle(_title(results, PAGE_WIDTH * 2 / 3)
                          + ("\n(first seed pair)" if len(means) > 1 else ""), fontsize=9)
            ax = right.subplots()
            bins = np.linspace(-0.2, 1.0, 37)
            ax.hist(shown["max_r"], bins=bins, color=colour(0), alpha=0.7,
                    label="vs backprop fields")
            ax.hist(shown["max_r_shuffled"], bins=bins, color="0.5", alpha=0.7,
                    label="shuffled control")
            if len(means) > 1:
                for values, c in ((means, colour(0)), (controls, "0.3")):
                    for v in values:
                        ax.axvline(v, color=c, lw=0.7, alpha=SEED_ALPHA * 2).set_gid("seed")
                    if values.size:
                        ax.axvline(values.mean(), color=c, lw=2.0).set_gid("mean")
            ax.set_xlabel("max Pearson r")
            ax.set_ylabel("hidden neurons")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            handles, _ = ax.get_legend_handles_labels()
            if len(means) > 1:
                handles += [Line2D([], [], color="0.3", lw=0.7, label="mean r, each pair"),
                            Line2D([], [], color="0.3", lw=2.0,
                                   label=f"mean of {len(means)} pairs")]
            right.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=6)
            lines = ["published: far above shuffled"]
            if means.size:
                m, sd, k = _mean_sd(means)
                mc, sdc, _ = _mean_sd(controls)
                pm = f" ± {sd:.2f}" if k > 1 else ""
                pc = f" ± {sdc:.2f}" if k > 1 else ""
                lines += [f"mean max r {m:.2f}{pm}", f"shuffled control {mc:.2f}{pc}"]
            ax.set_title("\n".join(lines), fontsize=7)
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
        fig = new_figure(2.9)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, p in zip(axes, panels, strict=True):
            for d in range(10):
                pick = labels == d
                if pick.any():
                    ax.scatter(np.asarray(p["x"])[pick], np.asarray(p["y"])[pick], s=2,
                               color=colour(d), label=str(d), rasterized=True)
            ax.set_title(f"{p['layer']}\nsilhouette {_silhouette_text(ts, p)}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        _legend(axes[-1], loc="center left", bbox_to_anchor=(1.02, 0.5), markerscale=3,
                fontsize=6, title="digit", title_fontsize=6)
        fig.suptitle(_title(results) + "\npublished: clusters become cleaner layer by layer",
                     fontsize=9)
        add_note(fig, results)
        return save_figure(fig, path)


def _silhouette_text(ts: dict[str, Any], panel: dict[str, Any]) -> str:
    """The panel's silhouette; with several seeds their mean +- sd (the panel is seed 1's)."""
    values = [v for v in (ts.get("silhouette_by_seed") or {}).get(panel["layer"], [])
              if v is not None and np.isfinite(v)]
    if len(values) > 1:
        return f"{np.mean(values):.2f} \u00b1 {np.std(values, ddof=1):.2f} ({len(values)} seeds)"
    s = panel.get("silhouette")
    return "n/a" if s is None or not np.isfinite(s) else f"{s:.2f}"


# ---------------------------------------------------------------------------------------------
# Voltage traces (Fig. 3C, 9A)


def traces_figure(results: dict[str, Any], path: Path) -> list[Path]:
    """Basal, apical and somatic voltages of example hidden neurons through a forward and a
    target phase with their plateau potentials, the output somata, and a spike raster."""
    tr = results["traces"]
    length, (first, n) = tr["length"], tr["window"]
    hidden = tr["hidden"]
    with style():
        fig = new_figure(1.25 * (len(hidden) + 2) + 0.8)
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
            # Above the panel, over its plateau windows: never on the traces.
            for x, text in ((first, f"α_f = {h['alpha_f']:.3f}"),
                            (length + first, f"α_t = {h['alpha_t']:.3f}")):
                ax.annotate(text, xy=(x, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(0, 1), textcoords="offset points", fontsize=7,
                            va="bottom", annotation_clip=False)
        _legend(axes[0], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6)
        ax = axes[len(hidden)]
        for o in tr["output"]:
            ax.plot(t, o["soma"], color=colour(0) if o["is_label"] else colour(3),
                    label=f"unit {o['unit']}" + (" (label)" if o["is_label"] else ""))
        ax.set_ylabel("output\nsoma")
        _legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6)
        ax = axes[-1]
        rh, ro = tr["raster_hidden"], tr["raster_output"]
        off = tr["n_raster_hidden"] + 3
        ax.scatter(rh["t"], rh["unit"], s=1.5, marker="|", color="black")
        ax.scatter(ro["t"], np.asarray(ro["unit"], dtype=int) + off, s=3, marker="|",
                   color=colour(0))
        ax.set_yticks([tr["n_raster_hidden"] / 2, off + tr["n_output"] / 2], ["hidden", "output"])
        ax.set_xlabel("time step (forward phase | target phase)")
        fig.suptitle(wrap(f"{_title(results, 1e3)}: digit {tr['label']} (predicted "
                          f"{tr['predicted']}); grey: integration windows (plateaus)",
                          PAGE_WIDTH), fontsize=9)
        add_note(fig, results)
        return save_figure(fig, path)
