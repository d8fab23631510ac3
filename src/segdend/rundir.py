"""Run directories: where a run lives, what it records about itself, and when it may be reused
(:func:`run_state`, the run lifecycle of ``segdend train``, ``reproduce`` and ``sweep``).

A run directory holds ``config.json`` (the full resolved config), ``run.json`` (seed, package
version, git revision, engine, library versions, status), ``metrics.csv``, ``checkpoints/``,
``losses/`` (per-example losses of each epoch), ``log.txt`` and, once ``segdend evaluate
--save`` has run, ``evaluations/`` (repeated tests of a checkpoint, one JSON file each).
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from segdend.checkpoint import atomic_write_text
from segdend.config import RunConfig
from segdend.errors import SegdendError

RUN_FILES = ("config.json", "run.json", "metrics.csv", "quick_tests.csv", "log.txt")
RUN_DIRS = ("checkpoints", "losses", "records", "tensorboard", "evaluations")


NAME_VOLATILE = {"training": ("engine", "device", "threads", "test_threads", "overlap_test",
                                "checkpoint_every")}
"""Fields that change how a run is computed or stored, never what it computes."""


def name_key(config: RunConfig) -> str:
    """A short hash of everything that decides a run's results (the run-name suffix)."""
    import hashlib

    data = json.loads(config.to_json())
    for section in ("output", "data", "name", "description"):
        data.pop(section, None)
    for section, keys in NAME_VOLATILE.items():
        for key in keys:
            data.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def default_run_dir(config: RunConfig) -> Path:
    """``output.out``, or ``runs/<preset>-<mode>-seed<seed>``; a config that differs from its
    preset's (other than in mode and seed) gets a ``-<hash>`` of its results-deciding fields,
    so that different runs never share a default directory."""
    if config.output.out:
        return Path(config.output.out)
    from segdend.presets import build_config

    name = f"{config.name}-{config.model.mode}-seed{config.training.seed}"
    try:
        preset = build_config(config.name, **{"model.mode": config.model.mode,
                                              "training.seed": config.training.seed})
        same = name_key(preset) == name_key(config)
    except SegdendError:  # not built from a preset (a config file, the Python API)
        same = False
    return Path("runs") / (name if same else f"{name}-{name_key(config)}")


def ensure_dir(path: Path, option: str = "--out") -> list[Path]:
    """Create ``path`` (and its parents) and check a file can be written there.

    Returns the directories it created, deepest first, so a failed start can remove them.
    Raises SegdendError (one line, naming ``option``) for a file in the way, a read-only or
    virtual file system, or missing permissions.
    """
    path = Path(path)
    fix = f"choose another {option}"
    created: list[Path] = []
    try:
        if path.exists() and not path.is_dir():
            raise SegdendError(f"{path} is a file, not a directory; {fix}")
        p = path
        while not p.exists() and p != p.parent:
            created.append(p)
            p = p.parent
        if p.exists() and not p.is_dir():
            raise SegdendError(f"cannot create {path}: {p} is a file, not a directory; {fix}")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        _remove_empty(created)
        raise SegdendError(f"cannot create {path}: {err.strerror or err}; {fix}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".segdend-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        _remove_empty(created)
        raise SegdendError(f"cannot write in {path}: {err.strerror or err}; {fix}") from None
    return created


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:  # deepest first
        try:
            d.rmdir()
        except OSError:
            return


def lock_holder(path: Path) -> int | None:
    """The id of the process holding a ``flock`` on ``path`` (from /proc/locks), or None."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) < 6 or "->" in parts or parts[1] != "FLOCK":
            continue
        try:
            major, minor, inode = parts[5].split(":")
            if (int(inode) == st.st_ino and int(major, 16) == os.major(st.st_dev)
                    and int(minor, 16) == os.minor(st.st_dev)):
                return int(parts[4])
        except ValueError:
            continue
    return None


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir`` if needed, check it is writable and hold an exclusive lock on it
    (``flock`` of the directory itself) while a run works there; a directory this call
    created is removed again if the body fails before writing anything into it."""
    run_dir = Path(run_dir)
    created = ensure_dir(run_dir)
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError as err:
        raise SegdendError(f"cannot open {run_dir}: {err.strerror or err}") from None
    ok = False
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = lock_holder(run_dir)
                who = f"process {pid}" if pid else "another process"
                raise SegdendError(
                    f"{run_dir} is in use by {who} (a segdend run); wait for it to finish or "
                    f"stop it{f' (kill {pid})' if pid else ''}, then try again"
                ) from None
        yield
        ok = True
    finally:
        os.close(fd)  # releases the lock
        if not ok:
            _remove_empty(created)


def git_revision() -> str:
    """The git revision of the segdend source tree, with ``-dirty`` for local changes."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def read_run_info(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise SegdendError(f"{path} is unreadable; the run directory is damaged") from None


def has_trained(run_dir: Path) -> bool:
    """Whether a run directory holds any training: a checkpoint or a metrics row."""
    run_dir = Path(run_dir)
    return ((run_dir / "checkpoints" / "latest.safetensors").is_file()
            or (run_dir / "metrics.csv").is_file())


# -- the run lifecycle: what to do with a run directory ---------------------------------------


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


def write_run_info(run_dir: Path, config: RunConfig, engine: str, status: str,
                   extra: dict[str, Any] | None = None) -> None:
    """Write config.json and run.json (the run's record of itself)."""
    from importlib.metadata import PackageNotFoundError, version

    from segdend import __version__

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "config.json", config.to_json() + "\n")
    old = read_run_info(run_dir) or {}
    info = {
        **{k: v for k, v in old.items() if k != "error"},  # keep data_source, train_examples
        "seed": config.training.seed,
        "preset": config.name,
        "mode": config.model.mode,
        "segdend_version": __version__,
        "git_revision": old.get("git_revision") or git_revision(),
        "engine": engine,
        "status": status,
        "started": old.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "numpy": v("numpy"),
        "torch": v("torch"),
        "numba": v("numba"),
        "host": platform.node(),
        **(extra or {}),
    }
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2, sort_keys=True) + "\n")


def load_run_config(run_dir: Path) -> RunConfig:
    from segdend.config import config_from_dict

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise SegdendError(f"{run_dir} has no config.json; is it a segdend run directory?")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise SegdendError(f"{path} is not valid JSON; the run directory is damaged") from None
    return config_from_dict(data)


def evaluation_name(result: dict[str, Any]) -> str:
    """The file name of an evaluation: ``epoch_NNN_...`` for the weights after epoch NNN,
    ``mid_epoch_NNN_example_PPPPPP_...`` for a checkpoint taken during epoch NNN (which
    :func:`final_evaluation` never takes for an epoch's result)."""
    epoch, position = int(result.get("epoch") or 0), int(result.get("position") or 0)
    where = (f"mid_epoch_{epoch + 1:03d}_example_{position:06d}" if position
             else f"epoch_{epoch:03d}")
    return f"{where}_{result['repeats']}x{result['test_images']}_{result['engine']}.json"


def write_evaluation(run_dir: Path, result: dict[str, Any]) -> Path:
    """Keep an evaluation (``evaluate.evaluate_run``'s result) in ``evaluations/``, named by
    :func:`evaluation_name` so that different evaluations never overwrite each other."""
    folder = Path(run_dir) / "evaluations"
    ensure_dir(folder, option="run directory for --save")
    path = folder / evaluation_name(result)
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def keep_epoch_checkpoint(epoch: int, epochs: int, keep: int) -> bool:
    """Whether the weights after ``epoch`` (1-based) of ``epochs`` are kept as
    ``checkpoints/epoch_NNN.safetensors`` under ``output.keep_checkpoints = keep``."""
    if keep <= 0:
        return False
    if epochs <= keep:
        return True
    return epoch % math.ceil(epochs / keep) == 0 or epoch == epochs


def final_evaluation(run_dir: Path, epoch: int) -> dict[str, Any] | None:
    """The saved evaluation of ``epoch`` with the most test images, then the most repeats;
    None when there is none."""
    found = []
    for path in sorted((Path(run_dir) / "evaluations").glob(f"epoch_{epoch:03d}_*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            raise SegdendError(f"{path} is unreadable; delete it and evaluate again") from None
    if not found:
        return None
    return max(found, key=lambda r: (r.get("test_images", 0), r.get("repeats", 0)))
