"""Figures of one run (``segdend plot RUN_DIR``): learning curves and its recordings.

Each function takes the dict built by :func:`segdend.experiments.single_run.analyse_run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segdend.plots.common import (
    colour,
    empty_panel,
    examples_axis,
    new_figure,
    published_line,
    save_figure,
    style,
)


def learning_curves_figure(data: dict[str, Any], path: Path) -> list[Path]:
    """Test, training, validation and quick-test error against examples seen (metrics.csv,
    quick_tests.csv), and the per-example losses smoothed over 100 examples (losses/)."""
    with style():
        fig = new_figure(2.8)
        left, right = fig.subplots(1, 2)
        rows, quick = data.get("metrics", []), data.get("quick", [])
        drawn = False
        for key, label, i in (("test_error", "test", 0), ("train_error", "train (online)", 1),
                              ("validation_error", "validation", 2)):
            pts = [(r["examples_seen"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                x, y = zip(*pts, strict=True)
                left.plot(x, y, "-o", ms=2.5, color=colour(i), label=label)
                drawn = True
        if quick:
            left.plot([r["examples_seen"] for r in quick], [r["test_error"] for r in quick],
                      "-", lw=0.8, color=colour(3), label="quick tests")
            drawn = True
        if drawn:
            left.set_xlabel("training examples")
            examples_axis(left)
            left.set_ylabel("error (%)")
            left.set_ylim(bottom=0)
            left.legend()
        else:
            empty_panel(left, "no finished epoch or quick test yet")
        left.set_title(data.get("title", ""))
        losses = data.get("losses")
        if losses and losses.get("examples"):
            x = losses["examples"]
            right.plot(x, losses["loss_out"], color="black", label="output loss")
            for m, y in enumerate(losses.get("loss_hidden", [])):
                right.plot(x, y, color=colour(m + 1), label=f"hidden loss, layer {m + 1}")
            right.set_yscale("log")
            right.set_xlabel("training examples")
            examples_axis(right)
            right.set_ylabel(f"loss ({losses.get('window', 100)}-example mean)")
            right.legend()
        else:
            empty_panel(right, "no per-example losses yet (losses/epoch_NNN)")
        return save_figure(fig, path)


def recordings_figure(data: dict[str, Any], path: Path) -> list[Path]:
    """What the run recorded: the angle to backprop (records ``bp_angle``) and the Jacobian
    condition's eigenvalue (records ``ubar_f``)."""
    panels = [k for k in ("angle", "jacobian") if data.get(k)]
    with style():
        fig = new_figure(2.6, 3.5 * max(len(panels), 1))
        axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
        if not panels:
            empty_panel(axes[0], "no recordings")
        for ax, key in zip(axes, panels, strict=False):
            d = data[key]
            if key == "angle":
                ax.plot(d["examples"], d["smoothed"], color=colour(0))
                ax.set_ylim(0, 100)
                ax.set_ylabel("angle to backprop (deg)")
                ax.set_title(f"local vs backprop update ({d.get('window', 100)}-example mean)")
            else:
                y = np.array(d["eigenvalue"], dtype=float)
                ax.plot(d["examples"], y, "-o", ms=2.5, color=colour(1))
                published_line(ax, 1.0, "Theorem 1: < 1")
                if y.size and np.nanmax(y) > 20:
                    ax.set_yscale("log")
                ax.set_ylabel("max eigenvalue of (I-J)ᵀ(I-J)")
                ax.set_title(d.get("source", ""), fontsize=7)
            ax.set_xlabel("training examples")
            examples_axis(ax)
        fig.suptitle(data.get("title", ""), fontsize=9)
        return save_figure(fig, path)
