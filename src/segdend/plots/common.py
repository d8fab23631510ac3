"""What every figure shares: style, colours, the "shortened" label, published markers, saving.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global
backend), at the width of a journal page (7 in) with 8-pt text, and saved as PNG (200 dpi)
and PDF side by side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

PAGE_WIDTH = 7.0  # inches: a full journal page width
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
        fig.text(0.0, 1.0, note, ha="left", va="bottom", color=NOTE_COLOUR, fontsize=8,
                 fontweight="bold")


def mark_published(ax, x, y, *, label: bool = True, colour_: str = PUBLISHED) -> None:
    """A hollow diamond at the published value, labelled "published" in the legend."""
    ax.scatter([x], [y], marker="D", s=36, facecolors="none", edgecolors=colour_,
               linewidths=1.3, zorder=6, label="published" if label else None)


def published_line(ax, y: float, text: str, colour_: str = PUBLISHED) -> None:
    """A dashed horizontal line at a published level, with its text at the right end."""
    ax.axhline(y, ls="--", lw=1.0, color=colour_, zorder=1)
    ax.annotate(text, xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(-2, 2),
                textcoords="offset points", ha="right", va="bottom", fontsize=7, color=colour_)


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
