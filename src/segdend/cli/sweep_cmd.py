"""``segdend sweep``: seeds x conditions on a Dask cluster, resumable, summarised."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from segdend.cli.app import app, console, report_errors, say
from segdend.errors import SegdendError

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config field in every run: section.key=value (TOML), repeatable.")]
GridOpt = Annotated[list[str] | None, typer.Option(
    "--grid", help="A sweep axis: section.key=v1,v2,... (TOML values; commas inside brackets "
    "are kept, e.g. training.eta=[0.1,0.1],[0.2,0.2]); repeatable, axes multiply.")]


@app.command()
@report_errors
def sweep(
    target: Annotated[str, typer.Argument(
        help="A preset (see `segdend presets`) or an experiment; prefix preset: or "
        "experiment: to choose explicitly.")],
    seeds: Annotated[int, typer.Option(help="Seeds per condition.")] = 1,
    seed_start: Annotated[int, typer.Option(help="First seed (seeds are consecutive).")] = 0,
    set_: SetOpt = None,
    grid: GridOpt = None,
    scheduler: Annotated[str | None, typer.Option(
        help="Address of a running Dask scheduler (tcp://host:8786); default: a local "
        "cluster.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Worker processes of the local cluster (default: one per core).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Sweep directory (default sweeps/<target>); runs go to OUT/<condition>/seed<k>.")
    ] = None,
    config: Annotated[Path | None, typer.Option(
        help="A TOML config file (applied after the preset).")] = None,
    mode: Annotated[str | None, typer.Option(help="spiking or rate.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    train_examples: Annotated[int | None, typer.Option(
        help="Use only the first N training images.")] = None,
    test_examples: Annotated[int | None, typer.Option(
        help="Test on the first N test images.")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="Directory with the four MNIST IDX files (must be readable by every worker).")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="auto, numba, torch or reference.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    retries: Annotated[int, typer.Option(
        help="Resubmissions of a run lost to a crash (each resumes from its checkpoint).")] = 2,
    dry_run: Annotated[bool, typer.Option(
        help="List the conditions and runs (and what would be done) without running.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a live table of the running runs.")] = True,
) -> None:
    """Run a preset or experiment over seeds and grid conditions on Dask, then summarise.

    Rerunning the same command skips finished runs and resumes unfinished ones; results go to
    OUT/summary.csv, OUT/summary.png (and .pdf), OUT/runs.csv and OUT/sweep.json.
    """
    from segdend.sweep import describe_plan, plan_sweep, run_sweep

    if workers is not None and workers < 1:
        raise SegdendError(f"--workers must be >= 1; got {workers}")
    if retries < 0:
        raise SegdendError(f"--retries must be >= 0; got {retries}")
    plan = plan_sweep(target, seeds=seeds, seed_start=seed_start, sets=set_ or [],
                      grids=grid or [], out=out, config_file=config, mode=mode, epochs=epochs,
                      train_examples=train_examples, test_examples=test_examples,
                      data_dir=data_dir, engine=engine, device=device)
    if dry_run:
        for line in describe_plan(plan):
            print(line)
        return
    live = console if progress and sys.stderr.isatty() else None
    try:
        result = run_sweep(plan, scheduler=scheduler, workers=workers, retries=retries,
                           log=say, console=live, command=["segdend", *sys.argv[1:]])
    except KeyboardInterrupt:
        say(f"interrupted; run the same command again to resume the sweep in {plan.out}")
        raise typer.Exit(130) from None
    _print_summary(result)
    if result.failed:
        say(f"{len(result.failed)} of {len(result.runs)} runs did not finish (see "
            f"{result.files['runs']}); run the same command again to retry them")
        raise typer.Exit(1)


def _print_summary(result) -> None:
    from rich.table import Table

    table = Table("condition", "seeds", "test error mean", "sd", "min", "max", box=None,
                  title=f"final test error (%), {result.plan.out}", title_justify="left")

    def num(v) -> str:
        return "-" if v is None else f"{v:.2f}"

    for row in result.summary:
        table.add_row(row["condition"], f"{row['seeds']}" + (f" ({row['failed']} failed)"
                                                             if row["failed"] else ""),
                      num(row["test_error_mean"]), num(row["test_error_sd"]),
                      num(row["test_error_min"]), num(row["test_error_max"]))
    console.print(table)
    say(f"wrote {result.files['summary']}, {result.files['figure']} (+ .pdf), "
        f"{result.files['runs']}")
