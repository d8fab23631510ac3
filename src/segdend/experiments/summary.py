"""An experiment's summary.csv: one row per condition of its analysis results.

Written by :func:`segdend.experiments.runner.finish` beside each experiment's results, and
read back by the report (:mod:`segdend.report`) for all of them together.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from segdend.analysis import mean_sd
from segdend.checkpoint import atomic_write_text

SUMMARY_COLUMNS = [
    "experiment", "condition", "seeds", "epochs", "paper_epochs", "test_error_mean",
    "test_error_sd", "test_error_repeat_sd", "test_repeats", "measure", "value_mean", "value_sd", "published",
    "mode", "train_examples", "test_examples", "status", "note",
]
"""Columns of summary.csv. ``test_error_sd`` is the spread over seeds (0 for one seed),
``test_error_repeat_sd`` the mean spread of each run's repeated tests of its final weights
and ``test_repeats`` how many there were (training-time tests, or a saved ``segdend evaluate
--save`` with more repeats); ``value_*`` is the
experiment's own measure (``measure``; the test error for most), ``published`` the paper's
value of that measure (empty where the paper gives none)."""


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per condition of an experiment's analysis results (see SUMMARY_COLUMNS)."""
    meta = results.get("meta", {})
    rows = []
    for cond, c in results["conditions"].items():
        stats = condition_stats(c)
        done = [e for e in c.get("epochs_done", []) if e is not None]
        rows.append({
            "experiment": results["experiment"], "condition": cond,
            "seeds": len(c.get("seeds", [])),
            "epochs": min(done) if done else meta.get("epochs", ""),
            "paper_epochs": results.get("paper_epochs", ""),
            **{k: _num(v) for k, v in stats.items()},
            "measure": results.get("measure", "test_error"),
            "published": "" if c.get("published") is None else c["published"],
            "mode": meta.get("mode", ""), "train_examples": meta.get("train_examples", ""),
            "test_examples": meta.get("test_examples", ""),
            "status": ",".join(sorted(set(c.get("status", [])))),
            "note": meta.get("note", ""),
        })
    return rows


def _num(x: Any) -> Any:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    return round(float(x), 6)


def write_summary_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write ``rows`` with :data:`SUMMARY_COLUMNS` first (any extra columns after)."""
    keys = list(SUMMARY_COLUMNS)
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(path), buf.getvalue())
    return Path(path)


def condition_stats(cond: dict[str, Any]) -> dict[str, float]:
    """Mean and spread over seeds of a condition's test error and value, and the number of
    repeated tests behind each run's final error (the fewest of any seed)."""
    te_mean, te_sd = mean_sd(cond.get("test_error", []))
    rep = [x for x in cond.get("test_error_repeat_sd", []) if x is not None]
    v_mean, v_sd = mean_sd([v for v in cond.get("value", []) if v is not None])
    return {"test_error_mean": te_mean, "test_error_sd": te_sd,
            "test_error_repeat_sd": float(np.nanmean(rep)) if rep and np.isfinite(rep).any()
            else float("nan"),
            "test_repeats": min(cond["test_repeats"]) if cond.get("test_repeats") else None,
            "value_mean": v_mean, "value_sd": v_sd}
