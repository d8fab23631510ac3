"""``segdend train``, ``segdend evaluate`` and ``segdend presets``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from segdend.cli.app import app, console, plural, report_errors, say
from segdend.errors import SegdendError

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override any config field: section.key=value (TOML value), repeatable.")]


@app.command()
@report_errors
def train(
    preset: Annotated[str | None, typer.Option(help="Preset name (see `segdend presets`).")] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML config file (applied after the preset).")] = None,
    mode: Annotated[str | None, typer.Option(help="spiking or rate.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    train_examples: Annotated[int | None, typer.Option(help="Use only the first N training images.")] = None,
    test_examples: Annotated[int | None, typer.Option(help="Test on the first N test images.")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Directory with the four MNIST IDX files.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory.")] = None,
    engine: Annotated[str | None, typer.Option(help="auto, numba, torch or reference.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    set_: SetOpt = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train a network online on MNIST (default: paper-h1, spiking), testing every epoch.

    Ctrl-C or SIGTERM writes a checkpoint (or, during start-up, stops at once);
    `--resume RUN_DIR` continues bit for bit.
    """
    from segdend.presets import DEFAULT_PRESET, build_config
    from segdend.train import TrainingInterrupted, run_config

    shortcuts = {"model.mode": mode, "training.epochs": epochs,
                 "training.train_examples": train_examples,
                 "training.test_examples": test_examples, "training.seed": seed,
                 "data.data_dir": str(data_dir) if data_dir else None,
                 "output.out": str(out) if out else None, "training.engine": engine,
                 "training.device": device, "output.overwrite": overwrite or None}
    if resume is not None:
        if out is not None or overwrite:
            raise SegdendError(f"--resume continues the run in {resume} itself; drop "
                               f"{'--out' if out is not None else '--overwrite'} (to start a new "
                               "run elsewhere, leave out --resume)")
        if preset or config or mode or seed is not None or train_examples or set_:
            raise SegdendError("--resume continues a run with its own config.json; only --epochs, "
                               "--data-dir, --engine, --device and --test-examples may be given")
        from segdend.config import apply_overrides, config_from_dict
        from segdend.lifecycle import run_state
        from segdend.rundir import load_run_config

        if not (resume / "config.json").is_file():  # no run, not a run, or a damaged one
            run_state(resume, build_config(DEFAULT_PRESET), intent="resume").check()
        saved = load_run_config(resume).model_dump(mode="json")
        shortcuts.update({"output.out": str(resume), "output.overwrite": None})
        data = apply_overrides(saved, [f"{k}={json.dumps(v)}" for k, v in shortcuts.items()
                                       if v is not None])
        cfg = config_from_dict(data)
    else:
        cfg = build_config(preset or DEFAULT_PRESET, config_file=config, overrides=set_ or [],
                           **shortcuts)
    try:
        result = run_config(cfg, resume=resume is not None, progress=progress and sys.stderr.isatty(),
                            log=say, console=console)
    except TrainingInterrupted as stop:
        again = f"continue with `segdend train --resume {stop.run_dir}`"
        if stop.saved:
            say(f"stopped: checkpoint written; {again}")
        elif stop.started:
            say(f"stopped: {again} (from its last checkpoint)")
        else:
            say("stopped during start-up; nothing was trained")
        raise typer.Exit(stop.exit_code) from None
    except KeyboardInterrupt:  # a second Ctrl-C inside a library that swallowed the first
        say("stopped; `segdend train --resume RUN_DIR` continues from the last checkpoint")
        raise typer.Exit(130) from None
    last = result.metrics[-1] if result.metrics else {}
    test = last.get("test_error", "")
    test = f"{test:.2f}%" if isinstance(test, float) else "not tested"
    say(f"done: {result.run_dir} ({plural(len(result.metrics), 'epoch')}, final test error "
        f"{test})")


@app.command()
@report_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    checkpoint: Annotated[str | None, typer.Option(
        help="'latest' (default), an epoch number, or a checkpoint file.")] = None,
    repeats: Annotated[int, typer.Option(help="Repeated stochastic tests (spiking mode).")] = 1,
    test_examples: Annotated[int | None, typer.Option(help="Test on the first N images.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Directory with the MNIST IDX files.")] = None,
    engine: Annotated[str | None, typer.Option(help="auto, numba, torch or reference.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    save: Annotated[bool, typer.Option(
        "--save", help="Keep the result in RUN_DIR/evaluations/ (reports then use it as the "
        "run's final test error).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Test error of a trained run: mean and spread over repeated tests."""
    from segdend.evaluate import evaluate_run
    from segdend.rundir import ensure_dir, write_evaluation

    if save:  # before the (long) tests: can the result be kept?
        ensure_dir(run_dir / "evaluations", option="run directory for --save")
    with _EvaluateProgress(progress and sys.stderr.isatty() and not as_json) as bar:
        try:
            res = evaluate_run(run_dir, checkpoint=checkpoint, repeats=repeats,
                               test_examples=test_examples,
                               data_dir=str(data_dir) if data_dir else None, engine=engine,
                               log=_warnings_only if as_json else say, on_start=bar.start,
                               on_chunk=bar.advance)
        except KeyboardInterrupt:
            say("stopped; nothing was saved")
            raise typer.Exit(130) from None
    if save:
        res["saved"] = str(write_evaluation(run_dir, res))
    if as_json:
        print(json.dumps(res))
        return
    n = res["repeats"]
    note = (f" (rate mode is deterministic: 1 test instead of {repeats})"
            if n != repeats else "")
    where = (f"epoch {res['epoch'] + 1}, example {res['position']:,} (mid-epoch checkpoint)"
             if res.get("position") else f"after epoch {res['epoch']}")
    spread = (f" (sd {res['test_error_sd']:.2f}, min {res['test_error_min']:.2f}, "
              f"max {res['test_error_max']:.2f})" if n > 1 else "")
    say(f"{run_dir}: test error {res['test_error_mean']:.2f}%{spread} over "
        f"{plural(n, 'test')} of {res['test_images']:,} images{note}, checkpoint "
        f"{res['checkpoint']} ({where})" + (f"; saved {res['saved']}" if save else ""))


def _warnings_only(line: str) -> None:
    """With --json, stdout holds the JSON alone and stderr only what needs attention."""
    if line.startswith("warning:") or " is more than the " in line:
        say(line)


class _EvaluateProgress:
    """A progress bar over the images of all repeats, on the console of the log lines."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress = None

    def __enter__(self) -> _EvaluateProgress:
        return self

    def start(self, total: int) -> None:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._progress = Progress("evaluate", BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), console=console)
            self._progress.start()
            self._task = self._progress.add_task("evaluate", total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


@app.command()
@report_errors
def presets(
    show: Annotated[str | None, typer.Option(help="Print one preset's full resolved config.")] = None,
) -> None:
    """List the named presets with one-line descriptions."""
    from segdend.cli.app import print_table
    from segdend.presets import build_config, list_presets

    if show:
        import tomli_w

        print(tomli_w.dumps(build_config(show).model_dump(mode="json", exclude_none=True)))
        return
    print_table(("preset", "description"), list(list_presets().items()))
