"""``segdend reproduce ID``: run an experiment's conditions x seeds, analyse, draw, summarise.

Layout of the output directory (default ``runs/reproduce/ID``)::

    experiment.json        what was run: conditions, presets, overrides, seeds, epochs, ...
    runs/COND/seedS/       one run directory per condition and seed (segdend.train.run_config)
    results.json           the analysis (NaN written as null)
    summary.csv            one row per condition (see segdend.experiments.summary.SUMMARY_COLUMNS)
    ID.png, ID.pdf         the figure

Runs are trained one after the other. What each run directory needs is decided by
:func:`segdend.lifecycle.run_state` (intent ``continue``, the rules of ``segdend sweep`` too): a
run that already finished is skipped, one finished after fewer epochs is extended, an
unfinished one is resumed from its last checkpoint (so an interrupted reproduction continues
where it stopped), one that diverged is skipped, one that never trained is started again; a
run directory holding a different config is refused, before anything is trained.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segdend.checkpoint import atomic_write_text
from segdend.config import RunConfig
from segdend.errors import DivergenceError, SegdendError
from segdend.experiments.base import PAPER_TEST_EXAMPLES, Experiment
from segdend.experiments.runs import n_test_of, n_train_of, remember_dataset
from segdend.lifecycle import Outcome, RunState, run_state
from segdend.rundir import load_run_config

MIN_STEP = 100  # examples between snapshots of a stepped run, at least


@dataclass
class PlannedRun:
    condition: str
    seed_index: int
    run_dir: Path
    config: RunConfig
    note: str = ""


@dataclass
class Reproduction:
    out: Path
    results: dict[str, Any]
    figures: list[Path]
    summary: Path


def plan_runs(exp: Experiment, out: Path, *, seeds: int = 1, epochs: int | None = None,
              train_examples: int | None = None, test_examples: int | None = None,
              data_dir: str | None = None, mode: str = "spiking", engine: str | None = None,
              test_repeats: int | None = None, overrides: list[str] | tuple[str, ...] = ()
              ) -> list[PlannedRun]:
    """The validated config and run directory of every condition x seed (nothing runs)."""
    if seeds < 1:
        raise SegdendError(f"--seeds must be >= 1; got {seeds}")
    if mode == "rate" and exp.rate_mode_invalid:
        raise SegdendError(f"experiment {exp.id} cannot run in rate mode ({exp.spiking_only}); "
                           "use --mode spiking")
    runs: list[PlannedRun] = []
    missing: list[str] = []
    engine_given = engine not in (None, "auto")
    for cond in exp.conditions:
        for k in range(seeds):
            run_dir = Path(out) / "runs" / cond / f"seed{exp.seed_for(cond, k)}"
            shortcuts = {"model.mode": mode, "training.epochs": epochs or exp.epochs,
                         "training.train_examples": train_examples,
                         "training.test_examples": test_examples, "data.data_dir": data_dir,
                         "training.engine": engine, "training.test_repeats": test_repeats,
                         "output.out": str(run_dir)}
            cfg = exp.build_config(cond, k, overrides=list(overrides), **shortcuts)
            if k == 0:  # the engine, and so what it records, is the same for every seed
                missing = [r for r in exp.record if r not in engine_records(cfg)]
            if missing and engine_given:
                raise SegdendError(
                    f"engine {engine} does not record {', '.join(missing)}, which experiment "
                    f"{exp.id} needs; use --engine reference (or auto)")
            if missing:  # the fastest engine cannot record it: the reference engine can
                cfg = exp.build_config(cond, k, overrides=list(overrides),
                                       **{**shortcuts, "training.engine": "reference"})
            note = (f"engine reference: the fastest engine does not record "
                    f"{', '.join(missing)}") if missing else ""
            runs.append(PlannedRun(cond, k, run_dir, cfg, note))
    return runs


def engine_records(config: RunConfig) -> set[str]:
    """The recordings the engine ``config`` resolves to provides, as that engine declares them
    (``engines.registry.ENGINES``; no engine is built)."""
    from segdend.engines.registry import engine_info, resolve_engine_name

    return set(engine_info(resolve_engine_name(config)).records)


def shortened_note(exp: Experiment, config: RunConfig, n_train: int, n_test: int) -> str:
    """The figure label of a run shorter than the paper's ("shortened: 1 of 60 epochs, ...")
    and of rate mode; "" for a full reproduction."""
    parts = []
    if config.training.epochs < exp.epochs:
        parts.append(f"{config.training.epochs} of {exp.epochs} epochs")
    if exp.paper_train_examples and n_train < exp.paper_train_examples:
        parts.append(f"{n_train} of {exp.paper_train_examples} training examples")
    if exp.paper_train_examples and n_test < PAPER_TEST_EXAMPLES:
        parts.append(f"tested on {n_test} of {PAPER_TEST_EXAMPLES} test images")
    note = "shortened: " + ", ".join(parts) if parts else ""
    if config.model.mode != "spiking":
        note += ("; " if note else "") + f"{config.model.mode} mode (the paper: spiking)"
    return note


def reproduce(exp: Experiment, *, out: Path | None = None, seeds: int = 1,
              epochs: int | None = None, train_examples: int | None = None,
              test_examples: int | None = None, data_dir: str | None = None,
              mode: str = "spiking", engine: str | None = None,
              test_repeats: int | None = None, overrides: list[str] | tuple[str, ...] = (),
              log: Callable[[str], None] = lambda s: None, progress: bool = False,
              data=None) -> Reproduction:
    """Run (or resume) every condition x seed of ``exp``, then analyse and draw it.

    ``data`` (a :class:`~segdend.train.Dataset`) skips loading MNIST (tests). Returns the
    output directory, the analysis results, the figure files and the summary file.
    """
    from segdend.train import load_dataset

    out = Path(out) if out is not None else Path("runs") / "reproduce" / exp.id
    runs = plan_runs(exp, out, seeds=seeds, epochs=epochs, train_examples=train_examples,
                     test_examples=test_examples, data_dir=data_dir, mode=mode, engine=engine,
                     test_repeats=test_repeats, overrides=overrides)
    if mode == "rate" and exp.spiking_only:
        log(f"note: {exp.id} in rate mode: {exp.spiking_only}")
    states = [_run_state(run) for run in runs]  # refuse before anything is written or trained
    first = runs[0].config
    if data is None:
        data = load_dataset(first, log=log)
    remember_dataset(first, data)
    n_train, n_test = n_train_of(first, data), n_test_of(first, data)
    manifest = _manifest(exp, runs, out, n_train, n_test, overrides)
    manifest["note"] = shortened_note(exp, first, n_train, n_test)
    _write_json(out / "experiment.json", manifest)
    for i, (run, state) in enumerate(zip(runs, states, strict=True), start=1):
        log(f"[{exp.id} {i}/{len(runs)}] {run.condition}, seed {run.config.training.seed}: "
            f"{run.run_dir}" + (f" ({run.note})" if run.note else ""))
        _run_one(exp, run, state, data, log, progress)
    run_dirs = {c: [r.run_dir for r in runs if r.condition == c] for c in exp.conditions}
    results = finish(exp, out, run_dirs, manifest)
    figures = [out / f"{exp.id}.png", out / f"{exp.id}.pdf"]
    log(f"{exp.id}: figure {figures[0]}, summary {out / 'summary.csv'}")
    return Reproduction(out, results, figures, out / "summary.csv")


def finish(exp: Experiment, out: Path, run_dirs: dict[str, list[Path]],
           manifest: dict[str, Any]) -> dict[str, Any]:
    """Analyse the runs, save results.json, the figure and summary.csv; mark it done."""
    from segdend.experiments.summary import summary_rows, write_summary_csv

    results = exp.analyse(run_dirs)
    results["meta"] = {"note": manifest.get("note", ""), "mode": manifest.get("mode"),
                       "epochs": manifest.get("epochs"), "seeds": manifest.get("seeds"),
                       "train_examples": manifest.get("train_examples"),
                       "test_examples": manifest.get("test_examples")}
    results = to_jsonable(results)
    _write_json(out / "results.json", results)
    exp.plot(results, out / exp.id)
    write_summary_csv(summary_rows(results), out / "summary.csv")
    manifest.update({"status": "done", "figure": f"{exp.id}.png",
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "engines": sorted({e for c in results["conditions"].values()
                                        for e in c.get("engine", [])})})
    _write_json(out / "experiment.json", manifest)
    return results


def reanalyse(out: Path) -> dict[str, Any]:
    """Analyse and draw an experiment directory again from its saved runs."""
    from segdend.experiments.registry import get_experiment

    out = Path(out)
    manifest = json.loads((out / "experiment.json").read_text())
    exp = get_experiment(manifest["experiment"])
    run_dirs = {c: [Path(p) if Path(p).is_absolute() else out / p
                    for p in manifest["conditions"][c]["run_dirs"]] for c in exp.conditions}
    from segdend.experiments.runs import dataset_for

    dataset_for(load_run_config(next(iter(run_dirs.values()))[0]))
    return finish(exp, out, run_dirs, manifest)


# ---------------------------------------------------------------------------------------------


def _run_one(exp: Experiment, run: PlannedRun, state: RunState, data, log,
             progress: bool) -> None:
    from segdend.train import run_config

    cfg, run_dir = run.config, run.run_dir
    done = state.epochs_done
    if state.outcome is Outcome.DIVERGED:
        log(f"  skipped: the run diverged earlier (see {run_dir / 'log.txt'})")
        return
    if state.outcome is Outcome.FINISHED:
        log(f"  skipped: already finished ({done} epochs)")
        return
    if state.outcome is Outcome.RESUME:
        log(f"  resuming ({state.status}, {done} epochs done)")
    elif state.reason:
        log(f"  {state.reason}")
    try:
        if exp.snapshots and exp.snapshot_fn is not None:
            _run_in_steps(exp, cfg, run_dir, data, state.resumes, log)
        else:
            run_config(cfg, resume=state.resumes, data=data, log=_indent(log), progress=progress)
    except DivergenceError as err:
        log(f"  diverged: {err}")


def _run_state(run: PlannedRun) -> RunState:
    """What a planned run's directory needs (:func:`segdend.lifecycle.run_state`); raises when
    it cannot be reused (a run of another config, files that are not a run, ...)."""
    return run_state(run.run_dir, run.config, asker="the reproduction").check()


def _run_in_steps(exp: Experiment, cfg: RunConfig, run_dir: Path, data, resume: bool,
                  log) -> None:
    """Train in steps of about n_train / exp.snapshots examples (at least 100), calling the
    experiment's snapshot function after each (e.g. to keep the weights J needs)."""
    from segdend.checkpoint import load_checkpoint
    from segdend.train import run_config

    n_train = n_train_of(cfg, data)
    step = max(MIN_STEP, math.ceil(n_train / exp.snapshots))
    seen = 0
    latest = run_dir / "checkpoints" / "latest.safetensors"
    if resume and latest.is_file():
        seen = int(load_checkpoint(latest)[1].get("examples_seen", 0))
    total = cfg.training.epochs * n_train
    def quiet(line: str) -> None:  # after the first step: only the epochs' results
        if line.startswith("epoch"):
            log("  " + line)

    while seen < total:
        epoch, position = divmod(seen, n_train)
        stop = epoch * n_train + min((position // step + 1) * step, n_train)
        run_config(cfg, resume=resume, data=data, stop_after=stop,
                   log=quiet if resume else _indent(log))
        resume = True
        exp.snapshot_fn(run_dir, stop, cfg)
        seen = stop


def _indent(log):
    return lambda line: log("  " + line)


def _manifest(exp: Experiment, runs: list[PlannedRun], out: Path, n_train: int, n_test: int,
              overrides) -> dict[str, Any]:
    first = runs[0].config
    conds: dict[str, Any] = {}
    for r in runs:
        c = conds.setdefault(r.condition, {
            "preset": exp.preset_for(r.condition),
            "overrides": exp.condition_overrides(r.condition) + list(overrides),
            "seeds": [], "run_dirs": [], "published": exp.published.get(r.condition)})
        c["seeds"].append(r.config.training.seed)
        c["run_dirs"].append(str(r.run_dir.relative_to(out)))
    return {
        "experiment": exp.id, "title": exp.title, "figure_ref": exp.figure, "claim": exp.claim,
        "measure": exp.measure, "measure_label": exp.measure_label, "extra": exp.extra,
        "conditions": conds, "seeds": len(runs) // max(len(exp.conditions), 1),
        "epochs": first.training.epochs, "paper_epochs": exp.epochs,
        "mode": first.model.mode, "engine": first.training.engine,
        "train_examples": n_train, "test_examples": n_test,
        "test_repeats": first.training.test_repeats,
        "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: arrays to lists, NumPy scalars to numbers, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(to_jsonable(data), indent=1) + "\n")
