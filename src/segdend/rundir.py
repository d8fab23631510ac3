"""Run directories: where a run lives and what it records about itself (when one may be reused
is :mod:`segdend.lifecycle`).

A run directory holds ``config.json`` (the full resolved config), ``run.json`` (seed, package
version, git revision, engine, library versions, status), ``metrics.csv``, ``checkpoints/``,
``losses/`` (per-example losses of each epoch), ``log.txt`` and, once ``segdend evaluate
--save`` has run, ``evaluations/`` (repeated tests of a checkpoint, one JSON file each).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
