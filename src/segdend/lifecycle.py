"""The run lifecycle: what to do with a run directory (new, replace, resume, extend, finished,
diverged or refused), decided in one place for ``segdend train``, ``train --resume``,
``reproduce`` and ``sweep`` (docs/architecture.md, "The run lifecycle").

:func:`run_state` only reads; :func:`clear_run` removes what a replaced run left.
"""

from __future__ import annotations

import enum
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from segdend.config import RunConfig
from segdend.errors import SegdendError
from segdend.rundir import (
    RUN_DIRS,
    RUN_FILES,
    has_trained,
    load_run_config,
    read_run_info,
)


class Outcome(str, enum.Enum):
    """What to do with a run directory (:func:`run_state`)."""

    NEW = "new"            # nothing there yet: start
    REPLACE = "replace"    # start afresh; the old files go once the new run has started
    RESUME = "resume"      # an unfinished run: continue from its last checkpoint
    EXTEND = "extend"      # a run finished after fewer epochs than asked: train it further
    FINISHED = "finished"  # finished as asked: nothing to train (skip it)
    DIVERGED = "diverged"  # it diverged: not rerun, it would diverge again
    REFUSED = "refused"    # something else is there: the reason says what, and how to fix it

    def __str__(self) -> str:
        return self.value


Intent = Literal["start", "resume", "continue"]
"""What the caller asks of a run directory: ``start`` a new run there (``segdend train``),
``resume`` the run there (``segdend train --resume``), or ``continue`` whatever the directory
needs to reach the config (``segdend reproduce`` and ``segdend sweep``)."""


@dataclass(frozen=True)
class RunState:
    """What :func:`run_state` decided: the outcome, why (a log line, or for ``REFUSED`` the
    one-line error with its fix), the status in run.json and the epochs trained so far."""

    outcome: Outcome
    reason: str = ""
    status: str | None = None
    epochs_done: int = 0

    @property
    def resumes(self) -> bool:
        """Whether training continues from the run's own files (none of them removed)."""
        return self.outcome in (Outcome.RESUME, Outcome.EXTEND, Outcome.FINISHED)

    def check(self) -> RunState:
        """This state, or SegdendError with the reason when it is ``REFUSED``."""
        if self.outcome is Outcome.REFUSED:
            raise SegdendError(self.reason)
        return self


def is_start_debris(path: Path) -> bool:
    """Files a start can leave behind before any run.json: its config.json, the temporary file
    of an atomic write and the probe of :func:`ensure_dir`."""
    name = Path(path).name
    return (name == "config.json" or name.startswith(".segdend-write-test-")
            or (name.startswith(".") and name.endswith((".part", ".tmp"))))


def checkpoint_position(run_dir: str | Path) -> dict[str, Any] | None:
    """The header of a run's latest checkpoint (epoch, position, ...), without its arrays."""
    path = Path(run_dir) / "checkpoints" / "latest.safetensors"
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 1 << 24:
                return None
            header = json.loads(f.read(n))
        meta = json.loads(header["__metadata__"]["segdend"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {k: meta.get(k) for k in ("epoch", "position", "examples_seen")}


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _config_difference(saved: RunConfig, config: RunConfig, most: int = 3) -> str:
    """``training.eta is [0.1, 0.1] there, [0.2, 0.2] here`` for the first fields that decide
    the trajectory and differ."""
    from segdend.checkpoint import trajectory_fields

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    there = flat(trajectory_fields(saved.to_json()))
    here = flat(trajectory_fields(config.to_json()))
    keys = sorted(k for k in there.keys() | here.keys() if there.get(k) != here.get(k))
    parts = [f"{k} is {json.dumps(there.get(k))} there, {json.dumps(here.get(k))} here"
             for k in keys[:most]]
    if len(keys) > most:
        parts.append(f"{len(keys) - most} more")
    return "; ".join(parts)


def run_state(run_dir: str | Path, config: RunConfig, *, intent: Intent = "continue",
              overwrite: bool = False, asker: str = "--epochs") -> RunState:
    """What to do with ``run_dir`` to run ``config`` there: the one set of rules of
    ``segdend train``, ``segdend reproduce`` and ``segdend sweep`` (changes nothing).

    What the directory holds decides it, together with ``intent`` (see :data:`Intent`):

    - nothing (missing or empty): ``NEW``; only the debris of a killed start: ``REPLACE``
      (``resume``: refused, there is no run);
    - files that are not a segdend run: refused, they are never touched;
    - a run that never trained (no checkpoint, no metrics): ``REPLACE``, whatever its config
      (``resume`` of the same config: ``RESUME`` from the beginning). Nothing is lost;
    - a run that trained: with ``start``, refused unless ``overwrite`` (then ``REPLACE``);
      otherwise it must be of the same config (:func:`~segdend.checkpoint.config_fingerprint`,
      which leaves out the epoch count and how the run is tested and stored) or it is refused;
      then by its status: ``diverged`` is ``DIVERGED`` (``resume``: refused, it would diverge
      again); ``finished`` is ``FINISHED`` after as many epochs as asked, ``EXTEND`` after
      fewer, refused after more; any other status (running, stopped, interrupted, failed) is
      ``RESUME``, refused if its checkpoint is past the epochs asked for.
    - ``continue`` does not reuse a finished run tested with other ``training.test_examples``
      or ``training.test_repeats`` (its results would not be the ones asked for).

    ``asker`` names who asks for ``training.epochs`` in messages (``--epochs``, ``the sweep``).
    A refusal is returned as ``REFUSED`` with the one-line error; :meth:`RunState.check`
    raises it.
    """
    from segdend.checkpoint import config_fingerprint

    run_dir = Path(run_dir)
    R = Outcome

    def refused(reason: str, status: str | None = None, done: int = 0) -> RunState:
        return RunState(R.REFUSED, reason, status, done)

    if run_dir.exists() and not run_dir.is_dir():
        return refused(f"{run_dir} is a file, not a directory; choose another --out")
    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    try:
        info = read_run_info(run_dir)
    except SegdendError as err:
        if intent == "start" and overwrite:
            return RunState(R.REPLACE, "replacing a damaged run (--overwrite) once the new one "
                            "has started")
        return refused(f"{err}; use --overwrite to replace it, or choose another --out"
                       if intent == "start" else f"{err}; move it away or choose another --out")
    if info is None and not (run_dir / "config.json").is_file():
        if any(not is_start_debris(p) for p in entries):
            return refused(f"{run_dir} exists and is not a segdend run directory; move its "
                           "files away or choose an empty or new --out")
        if intent == "resume":
            return refused(f"{run_dir} holds no segdend run to resume; drop --resume to start one")
        if entries:
            return RunState(R.REPLACE, "replacing the debris of a start that was killed")
        return RunState(R.NEW)
    status = str((info or {}).get("status") or "starting")  # no run.json: killed at its start
    try:
        saved: RunConfig | None = load_run_config(run_dir)
    except SegdendError:
        saved = None  # damaged, or written by a version whose configs no longer validate
    same = (saved is not None
            and config_fingerprint(saved.to_json()) == config_fingerprint(config.to_json()))
    trained = has_trained(run_dir)
    if status == "finished" and saved is not None:
        done = saved.training.epochs
    else:
        done = int((checkpoint_position(run_dir) or {}).get("epoch") or 0)
    want = config.training.epochs

    if intent == "start":
        if overwrite:
            return RunState(R.REPLACE, "replacing the old run (--overwrite) once the new one "
                            "has started", status, done)
        if not trained:
            return RunState(R.REPLACE, "replacing an earlier start that never trained",
                            status, done)
        fix = "use --overwrite to replace it"
        if status == "finished":
            more = (f" or `segdend train --resume {run_dir} --epochs {want}` to train it "
                    "further") if same and want > done else ""
            return refused(f"{run_dir} already holds a finished run; {fix}{more}, or --out for "
                           "another directory", status, done)
        if status == "diverged":
            return refused(f"{run_dir} already holds a run that diverged (see its log.txt); "
                           f"{fix}, or --out for another directory", status, done)
        return refused(f"{run_dir} already holds an unfinished run; {fix} or `segdend train "
                       f"--resume {run_dir}` to continue it, or --out for another directory",
                       status, done)

    if not same:
        if not trained and intent == "continue":
            return RunState(R.REPLACE, "replacing an earlier start of another config that "
                            "never trained", status, done)
        if saved is None:
            return refused(f"{run_dir} holds a run whose config.json is missing or invalid; "
                           "move it away or choose another --out", status, done)
        if intent == "resume":
            return refused(f"{run_dir} was started with a different config; resume it with "
                           f"`segdend train --resume {run_dir}` and no other model/training "
                           "options", status, done)
        return refused(f"{run_dir} holds a run with a different config "
                       f"({_config_difference(saved, config)}); choose another --out or delete "
                       "that run directory", status, done)
    if status == "diverged":
        if intent == "resume":
            return refused(f"{run_dir} holds a run that diverged (see its log.txt); resuming "
                           "it would diverge again: train it afresh with other options and "
                           "--overwrite, or in another --out", status, done)
        return RunState(R.DIVERGED, "the run diverged; delete its directory to try again",
                        status, done)
    if not trained:
        if intent == "continue":
            return RunState(R.REPLACE, "replacing an earlier start that never trained",
                            status, done)
        return RunState(R.RESUME, "no checkpoint yet; starting from the beginning", status)
    if done > want:
        if status == "finished":
            return refused(f"{run_dir} holds a run finished after {_epochs(done)} but {asker} "
                           f"asks for {want}; a run that has already trained {_epochs(done)} "
                           f"cannot be shortened: ask for at least {done}, or choose another "
                           "--out", status, done)
        return refused(f"{run_dir} has already trained {_epochs(done)} but {asker} asks for "
                       f"{want}; ask for at least {done}, or choose another --out", status, done)
    if status != "finished":
        return RunState(R.RESUME, f"it was left {status}", status, done)
    if intent == "continue" and saved is not None:
        differ = [k for k in ("test_examples", "test_repeats")
                  if getattr(saved.training, k) != getattr(config.training, k)]
        if differ:
            return refused(f"{run_dir} holds a finished run tested with other "
                           f"{', '.join('training.' + k for k in differ)}; choose another "
                           "--out or re-test it with `segdend evaluate`", status, done)
    if done == want:
        return RunState(R.FINISHED, f"already finished ({_epochs(done)})", status, done)
    return RunState(R.EXTEND, f"extending from {done} to {want} epochs", status, done)


def clear_run(run_dir: Path) -> None:
    """Remove an old run's files (and only those) from ``run_dir``."""
    run_dir = Path(run_dir)
    try:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for path in run_dir.iterdir():
            if path.is_file() and is_start_debris(path):
                path.unlink(missing_ok=True)
        for name in RUN_DIRS:
            if (run_dir / name).exists():
                shutil.rmtree(run_dir / name)
    except OSError as err:
        raise SegdendError(f"cannot remove the old run in {run_dir}: {err.strerror or err}"
                           ) from None


