"""One run's directory as a sweep sees it: what to do with it (new, resume, finished,
diverged, or refuse: :func:`segdend.lifecycle.run_state`, the rules of ``segdend train`` and
``segdend reproduce`` too), how far its checkpoint got, and its final test error."""

from __future__ import annotations

from pathlib import Path

from segdend.config import RunConfig
from segdend.lifecycle import Outcome, RunState, checkpoint_position
from segdend.lifecycle import run_state as rundir_run_state

__all__ = ["SWEEP_STATES", "checkpoint_position", "final_test_error", "run_lifecycle",
           "run_state"]


SWEEP_STATES = {Outcome.NEW: "new", Outcome.REPLACE: "new", Outcome.RESUME: "resume",
                Outcome.EXTEND: "resume", Outcome.FINISHED: "finished",
                Outcome.DIVERGED: "diverged"}
"""The sweep's word for each outcome of :func:`segdend.lifecycle.run_state` but ``REFUSED``."""


def run_lifecycle(config: RunConfig) -> RunState:
    """What to do with a sweep run's directory (:func:`segdend.lifecycle.run_state`, intent
    ``continue``: the same rules as ``segdend reproduce``); a refusal raises SegdendError."""
    return rundir_run_state(Path(config.output.out or "."), config, asker="the sweep").check()


def run_state(config: RunConfig) -> tuple[str, str]:
    """What to do with a run's directory: ``new``, ``resume``, ``finished`` or ``diverged``,
    and why. A directory holding something else (another run's config, a longer finished run,
    foreign files) raises SegdendError.
    """
    state = run_lifecycle(config)
    return SWEEP_STATES[state.outcome], "" if state.outcome is Outcome.FINISHED else state.reason


def final_test_error(run_dir: str | Path, epochs: int | None = None) -> float | None:
    """The test error of the last epoch in a run's metrics.csv (of epoch ``epochs`` if given)."""
    import csv

    path = Path(run_dir) / "metrics.csv"
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except OSError:
        return None
    if not rows or rows[-1].get("test_error") in (None, ""):
        return None
    if epochs is not None and int(rows[-1]["epoch"]) != epochs:
        return None
    return float(rows[-1]["test_error"])
