"""Analyse the runs of scripts/run_results.py and commit-sized outputs into results/.

For every experiment of run_results.PLAN whose runs are finished, `segdend reproduce` (same
options, so it only analyses and draws) writes the figure and summary; this script then copies
into results/: summary.csv (one row per condition), each run's metrics.csv, each figure (PNG),
and rewrites the README's results table between its markers. Checkpoints stay out.

Before the analysis, the final weights of every run of an experiment measured by test error
get FINAL_TESTS repeated stochastic tests on the full test set (`segdend evaluate --repeats
N --save`, kept in the run's evaluations/ and copied to results/), as the paper reports means
of 20 repeated tests; the summary's test error is then their mean.

    python scripts/collect_results.py --data-dir DIR [--final-tests 20] [--max-seeds N]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_results import (  # noqa: E402
    COMMON,
    PLAN,
    committed_twins,
    finished,
    options,
    restore_committed,
    share_identical_run,
)

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def main() -> None:
    from segdend.experiments import get_experiment
    from segdend.experiments.runner import plan_runs, reproduce
    from segdend.report import write_report

    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--runs", default="runs/results")
    ap.add_argument("--results", default="results")
    ap.add_argument("--max-seeds", type=int, default=None,
                    help="collect only the first N seeds of each experiment (while the others "
                    "still train)")
    ap.add_argument("--only", default=None,
                    help="comma-separated experiment ids to collect (default: every one of the plan)")
    ap.add_argument("--final-tests", type=int, default=20,
                    help="repeated tests of each run's final weights (0: none)")
    args = ap.parse_args()
    runs, results = Path(args.runs), Path(args.results)
    done = []
    only = set(args.only.split(",")) if args.only else None
    for exp_id, epochs, _conds, seeds in PLAN:
        if only is not None and exp_id not in only:
            continue
        seeds = min(seeds, args.max_seeds or seeds)
        exp = get_experiment(exp_id)
        opts = options(exp_id, epochs, seeds, args.data_dir, runs)
        out = opts.pop("out")
        planned = plan_runs(exp, out, **opts)
        for r in planned:
            restore_committed(exp, r, results)
            if not finished(r.run_dir, epochs):
                share_identical_run(r, runs, needs_weights=exp.measure != "test_error")
        if not all(finished(r.run_dir, epochs) for r in planned):
            print(f"{exp_id}: not all runs finished; skipped")
            continue
        if exp.measure == "test_error" and args.final_tests > 1:
            for r in planned:
                final_tests(r.run_dir, epochs, args.final_tests, args.data_dir)
        reproduce(exp, out=out, seeds=seeds, epochs=epochs, data_dir=args.data_dir,
                  mode="spiking", overrides=COMMON, progress=False)
        dest = results / exp_id
        dest.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest / "runs", ignore_errors=True)  # regenerated from the runs below
        for r in planned:
            target = dest / "runs" / r.condition / r.run_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for name in ("metrics.csv", "run.json"):
                shutil.copy2(r.run_dir / name, target / name)
            copy_config(r.run_dir / "config.json", target / "config.json", args.data_dir)
            if (r.run_dir / "evaluations").is_dir():
                shutil.copytree(r.run_dir / "evaluations", target / "evaluations",
                                dirs_exist_ok=True)
        write_prefix_checks(exp_id, planned, results, dest)
        for f in out.glob(f"{exp_id}.png"):
            shutil.copy2(f, dest / f.name)
        for name in ("summary.csv", "results.json", "experiment.json"):
            if (out / name).is_file():
                shutil.copy2(out / name, dest / name)
        done.append(exp_id)
    if not done:
        print("nothing finished yet")
        return
    # The report and the summary from results/ itself: experiments not collected this time
    # keep their committed rows and figures.
    write_report(results)
    rows = list(csv.DictReader(open(results / "summary.csv")))
    write_readme_table(rows)
    import compare_conditions
    compare_conditions.main_for(results)
    print(f"results/ updated for {', '.join(done)}")


def copy_config(src: Path, dst: Path, data_dir: str) -> None:
    """Copy a run's config.json, naming its data directory as given on the command line
    (e.g. ../shared/data/mnist) where the run recorded an absolute path of this machine: the
    data are not part of a run's fingerprint, and a committed record names no machine path."""
    config = json.loads(src.read_text())
    data = config.get("data", {})
    if Path(str(data.get("data_dir", ""))).is_absolute():
        data["data_dir"] = data_dir
    dst.write_text(json.dumps(config, indent=2) + "\n")


def write_prefix_checks(exp_id: str, planned, results: Path, dest: Path) -> None:
    """Runs are deterministic, so a run of E epochs must repeat, to the last digit, the first E
    epochs of any committed run as long or longer with the same trajectory-determining config (e.g.
    sparse_amp's 20-epoch `regular` seed k and the 60-epoch depth `h1` seed k). Every such pair
    is compared column by column (all of metrics.csv but the wall-clock seconds) and written to
    DEST/determinism.csv; a difference is printed, since it would mean a run is not
    reproducible."""
    rows = []
    for r in planned:
        mine = list(csv.DictReader(open(r.run_dir / "metrics.csv")))
        record = (r.run_dir / "run.json").read_text()
        for other, cfg in committed_twins(r, results):
            # a twin as long as this run counts too (tsne's seed 0 retrains depth's h2 seed 0);
            # a copy of the twin itself (the same run record) proves nothing
            if (other.parts[-4] == exp_id or cfg.training.epochs < r.config.training.epochs
                    or (other / "run.json").read_text() == record):
                continue
            theirs = list(csv.DictReader(open(other / "metrics.csv")))[:len(mine)]
            cols = [c for c in (mine[0] if mine else {}) if c != "seconds"]
            differ, worst = [], 0.0
            for a, b in zip(mine, theirs, strict=False):
                for c in cols:
                    if a[c] != b[c]:
                        differ.append(f"{c}@{a['epoch']}")
                        x, y = float(a[c] or "nan"), float(b[c] or "nan")
                        worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-300))
            same = len(theirs) == len(mine) and not differ
            info_a, info_b = (json.loads((d / "run.json").read_text())
                              for d in (r.run_dir, other))
            rows.append({"run": f"{r.condition}/{r.run_dir.name}",
                         "committed_run": str(other.relative_to(results)),
                         "epochs_compared": len(mine), "columns": " ".join(cols),
                         "identical": same, "differing": " ".join(differ),
                         "max_relative_difference": f"{worst:.3g}" if differ else "",
                         "revision": info_a.get("git_revision", ""),
                         "committed_revision": info_b.get("git_revision", "")})
            if not same:
                print(f"warning: {r.run_dir} differs from the first {len(mine)} epochs of "
                      f"{other} in {', '.join(differ) or 'length'}", flush=True)
            break
    if rows:
        with open(dest / "determinism.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def final_tests(run_dir: Path, epochs: int, repeats: int, data_dir: str) -> None:
    """Repeated full tests of the run's final weights, saved once in its evaluations/."""
    from segdend.evaluate import evaluate_run
    from segdend.experiments.runs import run_outcome
    from segdend.rundir import write_evaluation

    if run_outcome(run_dir)["test_repeats"] >= repeats:
        return
    res = evaluate_run(run_dir, checkpoint=str(epochs), repeats=repeats, data_dir=data_dir)
    print(f"{run_dir}: {repeats} tests of epoch {epochs}: {res['test_error_mean']:.2f}% "
          f"(sd {res['test_error_sd']:.2f}, {res['test_error_min']:.2f}-"
          f"{res['test_error_max']:.2f})", flush=True)
    write_evaluation(run_dir, res)


def write_readme_table(rows: list[dict]) -> None:
    lines = [BEGIN, "",
             "| experiment | condition | epochs (paper's) | seeds x tests | test error % "
             "| sd over seeds | sd over tests | measure | this run | published |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    def num(row: dict, key: str) -> str:
        value = row.get(key, "")
        return f"{float(value):.2f}" if value not in ("", None) else "n/a"

    for r in rows:
        seeds, tests = int(r["seeds"]), int(r.get("test_repeats") or 1)
        sd_seeds = num(r, "test_error_sd") if seeds > 1 else "-"
        sd_tests = num(r, "test_error_repeat_sd") if tests > 1 else "-"
        lines.append(f"| {r['experiment']} | {r['condition']} | {r['epochs']} "
                     f"({r.get('paper_epochs', '')}) | {seeds} x {tests} | "
                     f"{num(r, 'test_error_mean')} | {sd_seeds} | {sd_tests} | "
                     f"{r.get('measure', '')} | {num(r, 'value_mean')} | {r.get('published', '')} |")
    lines += ["", "Generated by `scripts/collect_results.py` from `results/summary.csv`.", END]
    readme = Path("README.md")
    text = readme.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:start] + "\n".join(lines) + text[stop:])


if __name__ == "__main__":
    main()
