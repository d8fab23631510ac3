"""Train the runs behind results/ two at a time, then let `segdend reproduce` analyse them.

Each (experiment, condition) becomes one run directory under runs/results/ID/runs/COND/seed0
with exactly the config `segdend reproduce ID` builds for the same options, so reproduce then
skips the finished runs and only analyses and draws. Usage:

    python scripts/run_results.py --data-dir DIR [--workers 2] [--only ID,ID]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

# (experiment, epochs, conditions in priority order, seeds), in the order they train; fewer
# epochs than the paper are labelled "shortened" on every figure and in the summary.
# Conditions left out of a list are copied from an identical finished run by
# collect_results.py (symmetric's `regular` is sparse's; plateau_times' `synchronous` and
# segregation's `gA_0` are depth's networks; burst's `regular` is sparse's; tsne's `h2` seeds
# are depth's `h2` networks, copied with their weights where this machine has them; baselines'
# `backprop` is receptive_fields' and its `local` depth's `h1`).
PLAN = [
    ("depth", 60, ["h1", "h2", "shallow"], 3),
    ("loss_corr", 2, ["h1"], 3),
    ("jacobian", 1, ["h1"], 3),
    ("traces", 1, ["h1"], 1),
    ("bp_angle", 10, ["spiking_feedback", "rate_feedback"], 2),
    ("sparse", 60, ["regular", "sparse"], 3),
    ("symmetric", 60, ["symmetric", "noisy_symmetric"], 3),
    ("tsne", 60, ["h2"], 3),
    ("sparse_amp", 20, ["regular", "sparse_x5", "sparse_x1"], 2),
    ("plateau_times", 60, ["random"], 3),
    ("receptive_fields", 60, ["backprop", "local"], 2),
    ("baselines", 60, ["feedback_alignment"], 2),
    ("burst", 60, ["burst"], 2),
    ("segregation", 60, ["gA_0.05", "gA_0.6"], 2),
]
COMMON = ["training.test_every=5"]


def options(exp_id: str, epochs: int, seeds: int, data_dir: str, out: Path) -> dict:
    return {"seeds": seeds, "epochs": epochs, "data_dir": data_dir, "mode": "spiking",
            "overrides": COMMON, "out": out / exp_id}


def finished(run_dir: Path, epochs: int) -> bool:
    """Whether the run finished with at least ``epochs`` epochs (one finished at 10 epochs is
    not done for a 60-epoch plan: it is resumed and extended)."""
    from segdend.experiments.runs import run_outcome

    outcome = run_outcome(run_dir)
    return outcome["status"] == "finished" and outcome["epochs_done"] >= epochs


def restore_committed(exp, run, results: Path = Path("results")) -> bool:
    """Put a run committed under results/ back in place of a missing run directory.

    Only the small files are committed (config, run record, metrics, repeated final tests),
    which is all the analysis of a test-error experiment reads; so a finished run trained on
    another machine or in an earlier session counts as finished here and is not retrained.
    Runs whose analysis needs weights or recordings are not restored."""
    import shutil

    if exp.measure != "test_error" or (run.run_dir / "run.json").is_file():
        return False
    src = results / exp.id / "runs" / run.condition / run.run_dir.name
    if not (src / "run.json").is_file() or not (src / "evaluations").is_dir():
        src = identical_committed_run(run, results)
        if src is None:
            return False
    shutil.copytree(src, run.run_dir, dirs_exist_ok=True)
    return True


def committed_twins(run, results: Path):
    """Committed runs (under ``results``, any experiment) with the same trajectory-determining
    config as ``run``, whatever their epochs: each as (run directory, its config)."""
    from segdend.checkpoint import config_fingerprint
    from segdend.rundir import load_run_config

    want = config_fingerprint(run.config.to_json())
    for info in sorted(results.glob("*/runs/*/seed*/run.json")):
        cfg = load_run_config(info.parent)
        if config_fingerprint(cfg.to_json()) == want:
            yield info.parent, cfg


def identical_committed_run(run, results: Path) -> Path | None:
    """A committed run of any experiment with the same trajectory-determining config and
    epochs (depth's `h1` seed 2 is sparse's `regular` seed 2), with its repeated tests."""
    for other, cfg in committed_twins(run, results):
        if ((other / "evaluations").is_dir()
                and cfg.training.epochs == run.config.training.epochs):
            return other
    return None


def share_identical_run(run, runs: Path, needs_weights: bool = False) -> bool:
    """Reuse a finished run with the same trajectory-determining config (e.g. the `regular`
    condition that sparse and symmetric both compare against, which is also depth's `h1`)
    instead of training it twice: runs are deterministic, so the copy is the run. Only a run
    directory that does not exist yet is filled; one that holds a run (even an unfinished
    one, which may be training now) is never touched. Returns whether it copied."""
    if (run.run_dir / "run.json").is_file():
        return False
    import shutil

    from segdend.checkpoint import config_fingerprint
    from segdend.rundir import load_run_config

    want = config_fingerprint(run.config.to_json())
    for info in runs.glob("*/runs/*/seed*/run.json"):
        other = info.parent
        if other == run.run_dir or not finished(other, run.config.training.epochs):
            continue
        if needs_weights and not (other / "checkpoints" / "latest.safetensors").is_file():
            continue  # restored from results/ without its weights: no use to this analysis
        cfg = load_run_config(other)
        if (config_fingerprint(cfg.to_json()) == want
                and cfg.training.epochs == run.config.training.epochs):
            shutil.copytree(other, run.run_dir, ignore=shutil.ignore_patterns("*.lock"))
            print(f"{run.run_dir}: reusing the identical finished run {other}")
            return True
    return False


def train_one(job: tuple) -> str:
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    from segdend.experiments import get_experiment
    from segdend.experiments.runner import plan_runs
    from segdend.train import run_config

    exp_id, epochs, cond, seeds, seed_index, data_dir, out = job
    exp = get_experiment(exp_id)
    opts = options(exp_id, epochs, seeds, data_dir, out)
    name = f"{exp_id}/{cond}/seed{seed_index}"
    for run in plan_runs(exp, opts.pop("out"), **opts):
        if run.condition != cond or run.seed_index != seed_index:
            continue
        t0 = time.time()
        if restore_committed(exp, run) and finished(run.run_dir, epochs):
            return f"{name}: restored from results/"
        if (share_identical_run(run, out, needs_weights=exp.measure != "test_error")
                and finished(run.run_dir, epochs)):
            return f"{name}: the identical finished run, copied"
        if finished(run.run_dir, epochs):
            return f"{name}: already finished"
        result = run_config(run.config, resume=(run.run_dir / "run.json").is_file())
        return (f"{name}: {result.metrics[-1].get('test_error')}% after "
                f"{epochs} epochs, {time.time() - t0:.0f} s")
    return f"{name}: no such condition"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", default="runs/results")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default=None,
                    help="comma-separated experiment ids to train (default: the whole plan)")
    args = ap.parse_args()
    out = Path(args.out)
    only = set(args.only.split(",")) if args.only else None
    # Short runs (a few epochs) first, then the plan's order, seed by seed.
    jobs = sorted(((e, n, c, seeds, i, args.data_dir, out)
                   for e, n, conds, seeds in PLAN for i in range(seeds) for c in conds
                   if only is None or e in only),
                  key=lambda j: (j[1] > 2, [p[0] for p in PLAN].index(j[0]), j[4]))
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        for line in pool.imap_unordered(train_one, jobs):
            print(line, flush=True)


if __name__ == "__main__":
    main()
