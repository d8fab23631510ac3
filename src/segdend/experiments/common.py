"""The part of every analysis that is the same: per-condition test errors over seeds."""

from __future__ import annotations

from typing import Any

from segdend.experiments.base import Experiment, RunDirs
from segdend.rundir import read_run_info
from segdend.runfiles import config_of, run_outcome, test_curve


def base_results(exp: Experiment, run_dirs: RunDirs) -> dict[str, Any]:
    """What was run and how it did: per condition the seeds, run directories, statuses,
    final test errors (mean over repeated tests of each run), the spread of those repeats,
    the test-error curve of each seed, and ``value`` (the test errors, to be replaced by
    experiments that measure something else) with the published value beside it."""
    conditions: dict[str, Any] = {}
    for cond in exp.conditions:
        dirs = run_dirs.get(cond, [])
        outcomes = [run_outcome(d) for d in dirs]
        curves = [test_curve(d) for d in dirs]
        errors = [o["test_error"] for o in outcomes]
        conditions[cond] = {
            "seeds": [config_of(d).training.seed for d in dirs],
            "run_dirs": [str(d) for d in dirs],
            "status": [o["status"] for o in outcomes],
            "engine": sorted({o["engine"] for o in outcomes if o["engine"]}),
            "epochs_done": [o["epochs_done"] for o in outcomes],
            "test_error": errors,
            "test_error_repeat_sd": [o["test_error_repeat_sd"] for o in outcomes],
            "test_repeats": [o["test_repeats"] for o in outcomes],
            "curves": [{"epoch": e, "test_error": t} for e, t in curves],
            "value": list(errors),
            "published": exp.published.get(cond),
        }
    return {
        "experiment": exp.id, "title": exp.title, "figure": exp.figure, "claim": exp.claim,
        "measure": exp.measure, "measure_label": exp.measure_label,
        "paper_epochs": exp.epochs, "conditions": conditions,
    }


def usable_runs(res: dict[str, Any], dirs) -> list:
    """The runs an analysis can use: those that did not diverge (the others are listed in
    ``res["problems"]``)."""
    out = []
    for d in dirs:
        if (read_run_info(d) or {}).get("status") == "diverged":
            note = f"{d}: diverged; left out of the analysis"
            if note not in res.setdefault("problems", []):
                res["problems"].append(note)
        else:
            out.append(d)
    return out


def first_run(res: dict[str, Any], run_dirs: RunDirs, condition: str):
    """The first usable seed's run directory of ``condition`` (raises if there is none)."""
    from segdend.errors import SegdendError

    dirs = usable_runs(res, run_dirs.get(condition) or [])
    if not dirs:
        raise SegdendError(f"no usable run of condition {condition!r} to analyse")
    return dirs[0]
