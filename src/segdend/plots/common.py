"""What every figure shares: style, colours, the "shortened" label, published markers, seeds
and their mean, saving.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global
backend), at the width of a journal page (7 in) for two panels or a column (3.5 in) for one,
with 7-8-pt text, and saved as PNG (200 dpi) and PDF side by side. No label is drawn over
data: published levels are labelled outside the right edge of their axes, legends sit
outside the axes.

Several seeds of a condition are drawn as thin light lines with their mean bold
(:func:`plot_seeds`); a single seed is drawn as one ordinary line.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

PAGE_WIDTH = 7.0  # inches: a full journal page width (two panels)
COLUMN_WIDTH = 3.5  # inches: one column (one panel)
SEED_LW, SEED_ALPHA = 0.7, 0.35  # each seed: thin and light
MEAN_LW = 2.0  # the mean over seeds: bold
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.2,
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
PUBLISHED = "black"
NOTE_COLOUR = "#b2182b"


def colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The figures' rc settings, for the duration of one figure's drawing."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(height: float = 2.8, width: float = PAGE_WIDTH) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def note_of(results: dict[str, Any]) -> str:
    """The label of a shortened or otherwise non-paper run ("" for a full reproduction)."""
    return str(results.get("meta", {}).get("note", "") or "")


def add_note(fig: Figure, results: dict[str, Any]) -> None:
    """Write the "shortened: E of P epochs ..." label across the top of the figure."""
    note = note_of(results)
    if note:
        # Above everything else; saving with a tight bounding box keeps it in the file.
        fig.text(0.0, 1.0, wrap(note, fig.get_figwidth(), 8.8), ha="left", va="bottom",
                 color=NOTE_COLOUR, fontsize=8, fontweight="bold")


def wrap(text: str, width_in: float, fontsize: float = 9) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points."""
    chars = max(16, int(width_in * 72 / (0.58 * fontsize)))
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n"))


def mark_published(ax, x, y, *, label: bool = True, colour_: str = PUBLISHED) -> None:
    """A hollow diamond at the published value, labelled "published" in the legend."""
    ax.scatter([x], [y], marker="D", s=36, facecolors="none", edgecolors=colour_,
               linewidths=1.3, zorder=6, label="published" if label else None)


def published_handle(label: str = "published", *, diamond: bool = False,
                     dashed: bool = True) -> Line2D:
    """A legend entry for published values (dashed level, hollow diamond, or both)."""
    return Line2D([], [], color=PUBLISHED, ls="--" if dashed else "none", lw=1.0,
                  marker="D" if diamond else None, ms=5, mfc="none", mew=1.2, label=label)


def published_levels(ax, levels: Sequence[tuple[float, str, str]], fontsize: float = 7) -> None:
    """Dashed horizontal lines at published levels ``(y, text, colour)``, each text just
    outside the right edge of the axes (never over the data), moved apart vertically where
    two would touch. Call it once the y limits are final."""
    levels = [(float(y), text, c) for y, text, c in levels if y is not None]
    for y, _, c in levels:
        line = ax.axhline(y, ls="--", lw=0.9, color=c, zorder=1)
        line.set_gid("published")
    if not levels:
        return
    to_axes = ax.transScale + ax.transLimits
    dpi = ax.get_figure(root=True).dpi
    height = ax.bbox.height * 72 / dpi * 0.85  # points; constrained layout shrinks it a bit
    want = [to_axes.transform((0.0, y))[1] * height for y, _, _ in levels]
    order = np.argsort(want)
    gap = 1.2 * fontsize
    placed = np.array(want, dtype=float)
    for a, b in zip(order[:-1], order[1:], strict=True):
        placed[b] = max(placed[b], placed[a] + gap)
    for (y, text, c), dy in zip(levels, placed - np.array(want), strict=True):
        ann = ax.annotate(text, xy=(1.0, y), xycoords=("axes fraction", "data"),
                          xytext=(3, dy), textcoords="offset points", ha="left", va="center",
                          fontsize=fontsize, color=c, annotation_clip=False)
        ann.set_gid("published")


def published_line(ax, y: float, text: str, colour_: str = PUBLISHED) -> None:
    """A dashed horizontal line at a published level, its text outside the right edge."""
    published_levels(ax, [(y, text, colour_)])


def examples_axis(ax) -> None:
    """Ticks of a "training examples" axis as 0, 200k, 400k, ..., 1.2M (no long numbers)."""
    def fmt(x, _pos):
        if abs(x) >= 1e6:
            return f"{x / 1e6:g}M"
        return f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(fmt))


def seed_mean(curves: Sequence[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean over seeds of curves ``(x, y)``: at the x values all of them share, else
    interpolated onto the first curve's x within the range all of them cover."""
    curves = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in curves]
    curves = [(x, y) for x, y in curves if x.size]
    if not curves:
        return None
    common = curves[0][0]
    for x, _ in curves[1:]:
        common = np.intersect1d(common, x)
    if common.size >= 2 or (common.size and all(x.size == 1 for x, _ in curves)):
        ys = [y[np.searchsorted(x, common)] if np.all(np.diff(x) > 0)
              else np.array([y[np.flatnonzero(x == c)[0]] for c in common]) for x, y in curves]
        return common, np.nanmean(ys, axis=0)
    lo, hi = max(x.min() for x, _ in curves), min(x.max() for x, _ in curves)
    grid = curves[0][0][(curves[0][0] >= lo) & (curves[0][0] <= hi)]
    if grid.size < 2:
        return None
    return grid, np.nanmean([np.interp(grid, x, y) for x, y in curves], axis=0)


def plot_seeds(ax, curves: Sequence[tuple[Any, Any]], colour_: str, label: str | None, *,
               marker: str = "o", ms: float = 2.5, lw: float = 1.2, seed_lw: float = SEED_LW,
               mean_lw: float = MEAN_LW) -> bool:
    """One condition's curves ``(x, y)``, one per seed: a single seed as one ordinary line
    (gid "single"), several as thin light lines (gid "seed") with their mean bold (gid
    "mean", the one carrying ``label``). Returns whether anything was drawn."""
    curves = [(x, y) for x, y in curves if len(x)]
    fmt = "-" + marker if marker else "-"
    if not curves:
        return False
    if len(curves) == 1:
        (line,) = ax.plot(curves[0][0], curves[0][1], fmt, ms=ms, lw=lw, color=colour_,
                          label=label)
        line.set_gid("single")
        return True
    for x, y in curves:
        (line,) = ax.plot(x, y, "-", lw=seed_lw, alpha=SEED_ALPHA, color=colour_, zorder=2)
        line.set_gid("seed")
    mean = seed_mean(curves)
    if mean is not None:
        (line,) = ax.plot(mean[0], mean[1], fmt, ms=ms, lw=mean_lw, color=colour_,
                          label=label, zorder=3)
        line.set_gid("mean")
    return True


def seed_handles(n: int, colour_: str = "0.3", *, seed_lw: float = SEED_LW,
                 mean_lw: float = MEAN_LW) -> list[Line2D]:
    """Legend entries that say how seeds are drawn (none for a single seed)."""
    if n < 2:
        return []
    return [Line2D([], [], color=colour_, lw=seed_lw, alpha=min(1.0, 2 * SEED_ALPHA),
                   label="each seed (thin)"),
            Line2D([], [], color=colour_, lw=max(mean_lw, 1.6),
                   label=f"mean of {n} seeds (bold)")]


def figure_legend(fig, handles: Sequence[Any], ncol: int | None = None, **kwargs) -> None:
    """A legend below all panels, outside every axes (nothing covers data)."""
    handles = [h for h in handles if h is not None and not str(h.get_label()).startswith("_")]
    if handles:
        fig.legend(handles=handles, loc="outside lower center",
                   ncol=ncol or min(len(handles), 4), **kwargs)


def save_figure(fig: Figure, path: Path) -> list[Path]:
    """Save ``fig`` as ``path``.png and ``path``.pdf (a .png/.pdf suffix is dropped first)."""
    path = Path(path)
    if path.suffix.lower() in (".png", ".pdf"):
        path = path.with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_name(path.name + ".png"), path.with_name(path.name + ".pdf")]
    fig.savefig(out[0], dpi=200, bbox_inches="tight", pad_inches=0.05)
    fig.savefig(out[1], bbox_inches="tight", pad_inches=0.05)
    return out


def empty_panel(ax, text: str) -> None:
    """A panel that says why it has nothing to show."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8,
            color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
