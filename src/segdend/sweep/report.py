"""A sweep's records: runs.csv, summary.csv, summary.png/.pdf and sweep.json.

Everything here is read back from the run directories (config.json, run.json, metrics.csv),
not from the Dask tasks, so the summary of a rerun sweep whose runs were all skipped is the
same as the first one's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segdend.checkpoint import atomic_write_bytes, atomic_write_text
from segdend.sweep.state import final_test_error

if TYPE_CHECKING:
    from segdend.sweep.plan import SweepPlan

RUN_COLUMNS = ("condition", "seed", "training_seed", "status", "action", "attempts", "epochs", "epochs_done",
               "test_error", "engine", "seconds", "run_dir", "error")
SUMMARY_COLUMNS = ("condition", "overrides", "seeds", "seed_list", "failed", "epochs",
                   "test_error_mean", "test_error_sd", "test_error_min", "test_error_max")


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    except OSError:
        return []


def _status(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "run.json").read_text()).get("status", "unknown"))
    except (OSError, ValueError):
        return "not started"


def run_records(plan: SweepPlan, outcomes: Mapping[str, Any] | None = None
                ) -> list[dict[str, Any]]:
    """One record per run of ``plan``, read from its directory (``outcomes``: the sweep's
    per-run bookkeeping, for the action taken, attempts and error messages)."""
    out = []
    for spec in plan.runs:
        run_dir = Path(spec.run_dir)
        epochs = spec.config.training.epochs
        rows = _metrics(run_dir)
        status = _status(run_dir)
        err = final_test_error(run_dir, epochs) if status == "finished" else None
        if status == "finished" and err is None:
            status = "incomplete"
        o = (outcomes or {}).get(spec.label)
        seconds = sum(float(r.get("seconds") or 0) for r in rows)
        out.append({
            "condition": spec.condition, "seed": spec.seed,
            "training_seed": spec.config.training.seed, "status": status,
            "action": getattr(o, "record", {}).get("action") or getattr(o, "action", ""),
            "attempts": getattr(o, "attempts", 0), "epochs": epochs, "epochs_done": len(rows),
            "test_error": err, "engine": _engine(run_dir), "seconds": round(seconds, 3),
            "run_dir": str(run_dir.relative_to(plan.out)) if run_dir.is_relative_to(plan.out)
            else str(run_dir),
            "error": getattr(o, "error", "") if status != "finished" else "",
        })
    return out


def _engine(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "run.json").read_text()).get("engine", ""))
    except (OSError, ValueError):
        return ""


def summarise(plan: SweepPlan, runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per condition: the final test error's mean, sd (n-1), min and max over the
    seeds that finished."""
    rows = []
    for cond in plan.conditions:
        mine = [r for r in runs if r["condition"] == cond.name]
        errs = [float(r["test_error"]) for r in mine if r["test_error"] is not None]
        seeds = [r["seed"] for r in mine if r["test_error"] is not None]
        rows.append({
            "condition": cond.name,
            "overrides": "; ".join(([f"preset={cond.preset}"] if cond.preset != plan.target.preset
                                    else []) + list(cond.overrides)),
            "seeds": len(errs), "seed_list": " ".join(map(str, seeds)),
            "failed": len(mine) - len(errs),
            "epochs": mine[0]["epochs"] if mine else "",
            "test_error_mean": statistics.fmean(errs) if errs else None,
            "test_error_sd": statistics.stdev(errs) if len(errs) > 1 else None,
            "test_error_min": min(errs) if errs else None,
            "test_error_max": max(errs) if errs else None,
        })
    return rows


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
    return buf.getvalue()


def plot_summary(plan: SweepPlan, runs: Sequence[Mapping[str, Any]],
                 summary: Sequence[Mapping[str, Any]], path: Path) -> list[Path]:
    """A point plot of the final test error per condition: every seed, and mean +- sd.
    Written as ``path`` (PNG) and the same name with ``.pdf``; returns both paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [row["condition"] for row in summary]
    width = min(3.0 + 0.9 * len(names), 16.0)
    fig = Figure(figsize=(width, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    n_seeds = max(len(plan.seeds), 1)
    for i, row in enumerate(summary):
        errs = [(r["seed"], float(r["test_error"])) for r in runs
                if r["condition"] == row["condition"] and r["test_error"] is not None]
        if errs:
            offsets = [(plan.seeds.index(s) - (n_seeds - 1) / 2) * 0.25 / n_seeds
                       if s in plan.seeds else 0.0 for s, _ in errs]
            ax.scatter([i + 0.18 + d for d in offsets], [e for _, e in errs], s=16,
                       color="0.45", alpha=0.8, zorder=2,
                       label="seeds" if i == 0 else None)
        if row["test_error_mean"] is not None:
            sd = row["test_error_sd"] or 0.0
            ax.errorbar([i], [row["test_error_mean"]], yerr=[sd], fmt="o", color="C0",
                        capsize=4, markersize=7, zorder=3,
                        label="mean ± sd" if i == 0 else None)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30 if max(map(len, names), default=0) > 12 else 0,
                       ha="right" if max(map(len, names), default=0) > 12 else "center")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("final test error (%)")
    epochs = {row["epochs"] for row in summary}
    ep = f", {epochs.pop()} epoch(s)" if len(epochs) == 1 else ""
    ax.set_title(f"{plan.target.name}: {len(plan.seeds)} seed(s){ep}")
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    written = []
    for p in (path, path.with_suffix(".pdf")):
        buf = io.BytesIO()
        fig.savefig(buf, format=p.suffix.lstrip("."), dpi=150)
        atomic_write_bytes(p, buf.getvalue())
        written.append(p)
    return written


def write_reports(plan: SweepPlan, outcomes: Mapping[str, Any] | None = None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Path]]:
    """Write runs.csv, summary.csv and summary.png/.pdf into the sweep's directory."""
    runs = run_records(plan, outcomes)
    summary = summarise(plan, runs)
    files = {"runs": plan.out / "runs.csv", "summary": plan.out / "summary.csv"}
    atomic_write_text(files["runs"], _csv_text(runs, RUN_COLUMNS))
    atomic_write_text(files["summary"], _csv_text(summary, SUMMARY_COLUMNS))
    png, pdf = plot_summary(plan, runs, summary, plan.out / "summary.png")
    files.update(figure=png, figure_pdf=pdf)
    return runs, summary, files


def write_sweep_json(plan: SweepPlan, command: Sequence[str] | None, *, state: str,
                     counts: Mapping[str, int] | None = None) -> Path:
    """Record the sweep (command, options, conditions, runs) in ``OUT/sweep.json``; each
    invocation is appended to its ``history``."""
    from segdend import __version__

    path = plan.out / "sweep.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    history = list(old.get("history", []))
    if state == "running":
        history.append({"started": now, "command": list(command) if command else None})
    elif history:
        history[-1] = {**history[-1], "ended": now, "state": state, **(
            {"counts": dict(counts)} if counts else {})}
    data = {
        "command": list(command) if command else None,
        "target": plan.target.name, "kind": plan.target.kind, "preset": plan.target.preset,
        "options": plan.options,
        "conditions": {c.name: {"preset": c.preset, "overrides": list(c.overrides)}
                       for c in plan.conditions},
        "seeds": plan.seeds,
        "runs": [{"condition": r.condition, "seed": r.seed,
                  "run_dir": str(Path(r.run_dir).relative_to(plan.out))} for r in plan.runs],
        "segdend_version": __version__,
        "state": state, "updated": now, "history": history,
    }
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
