"""``segdend experiments``, ``segdend reproduce ID``, ``segdend plot PATH``, ``segdend report DIR``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from segdend.cli.app import app, report_errors, say
from segdend.errors import SegdendError


@app.command()
@report_errors
def experiments() -> None:
    """List the paper's experiments with their conditions (see docs/experiments.md)."""
    from segdend.cli.app import print_table
    from segdend.experiments import list_experiments

    print_table(("id", "figure", "what", "conditions", "epochs"),
                [(exp_id, exp.figure, exp.title, ", ".join(exp.conditions), str(exp.epochs))
                 for exp_id, exp in list_experiments().items()])


@app.command()
@report_errors
def reproduce(
    experiment: Annotated[str, typer.Argument(help="Experiment id (see `segdend experiments`).")],
    seeds: Annotated[int, typer.Option(help="Seeds per condition (0..N-1).")] = 1,
    epochs: Annotated[int | None, typer.Option(
        help="Epochs (default: the paper's; fewer are labelled 'shortened').")] = None,
    train_examples: Annotated[int | None, typer.Option(
        help="Use only the first N training images.")] = None,
    test_examples: Annotated[int | None, typer.Option(
        help="Test on the first N test images.")] = None,
    test_repeats: Annotated[int | None, typer.Option(
        help="Repeated tests of each tested epoch (the paper: 20, spiking mode).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="Directory with the four MNIST IDX files.")] = None,
    mode: Annotated[str, typer.Option(help="spiking (the paper) or rate.")] = "spiking",
    engine: Annotated[str | None, typer.Option(help="auto, numba, torch or reference.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output directory (default runs/reproduce/ID).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override any config field of every run: section.key=value.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per run.")] = True,
) -> None:
    """Run an experiment's conditions x seeds (resuming unfinished runs, skipping finished
    ones), analyse them and draw the figure."""
    from segdend.experiments import get_experiment
    from segdend.experiments import reproduce as run_experiment
    from segdend.train import TrainingInterrupted

    if mode not in ("spiking", "rate"):
        raise SegdendError(f"--mode must be 'spiking' or 'rate'; got {mode!r}")
    exp = get_experiment(experiment)
    try:
        res = run_experiment(exp, out=out, seeds=seeds, epochs=epochs,
                             train_examples=train_examples, test_examples=test_examples,
                             data_dir=str(data_dir) if data_dir else None, mode=mode,
                             engine=engine, test_repeats=test_repeats, overrides=set_ or [],
                             log=say, progress=progress and sys.stderr.isatty())
    except TrainingInterrupted as stop:
        say("stopped: run the same command again to continue from the last checkpoints")
        raise typer.Exit(stop.exit_code) from None
    for row in _rows(res.summary):
        say(f"  {row['condition']}: test error {row['test_error_mean'] or '-'}% "
            f"(sd {row['test_error_sd'] or '-'}), {row['measure']} {row['value_mean'] or '-'}"
            f", published {row['published'] or '-'}")
    say(f"done: {res.out} (figure {res.figures[0].name})")


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@app.command()
@report_errors
def plot(
    path: Annotated[Path, typer.Argument(help="A run directory, or an experiment directory "
                                              "written by `segdend reproduce`.")],
    out: Annotated[Path | None, typer.Option(
        help="Where to write the figures (default RUN_DIR/plots).")] = None,
    tensorboard: Annotated[bool, typer.Option(
        help="Also write TensorBoard event files (needs the `monitor` extra).")] = False,
) -> None:
    """Draw a run's learning curves and recordings (or redraw an experiment's figure)."""
    from segdend.rundir import ensure_dir

    if not path.is_dir():
        raise SegdendError(f"{path} is not a directory")
    if (path / "experiment.json").is_file():
        ensure_dir(path, option="experiment directory (it must be writable)")
    else:
        ensure_dir(out if out is not None else path / "plots", option="--out")
    if (path / "experiment.json").is_file():
        from segdend.experiments import reanalyse

        results = reanalyse(path)
        say(f"{path}: figure {path / (results['experiment'] + '.png')} redrawn")
        return
    from segdend.experiments.single_run import plot_run

    files = plot_run(path, out)
    say("wrote " + ", ".join(str(f) for f in files if f.suffix == ".png"))
    if tensorboard:
        from segdend.plots.tensorboard import write_tensorboard

        logdir = write_tensorboard(path)
        if logdir is None:
            say("tensorboard is not installed (pip install 'segdend[monitor]'); skipped")
        else:
            say(f"TensorBoard events in {logdir} (tensorboard --logdir {logdir})")


@app.command()
@report_errors
def report(
    directory: Annotated[Path, typer.Argument(help="A folder of experiment directories.")],
    out: Annotated[Path | None, typer.Option(
        help="HTML file to write (default DIR/report.html).")] = None,
) -> None:
    """Write one self-contained HTML page (and DIR/summary.csv) of the experiments under DIR."""
    from segdend.report import write_report

    page, summary = write_report(directory, out)
    say(f"wrote {page} and {summary}")
