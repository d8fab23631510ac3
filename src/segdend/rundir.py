"""Run directories: where a run lives, what it records about itself, and when it may be reused.

A run directory holds ``config.json`` (the full resolved config), ``run.json`` (seed, package
version, git revision, engine, library versions, status), ``metrics.csv``, ``checkpoints/``,
``losses/`` (per-example losses of each epoch), ``log.txt`` and, once ``segdend evaluate
--save`` has run, ``evaluations/`` (repeated tests of a checkpoint, one JSON file each).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from segdend.checkpoint import atomic_write_text
from segdend.config import RunConfig
from segdend.errors import SegdendError

RUN_FILES = ("config.json", "run.json", "metrics.csv", "quick_tests.csv", "log.txt")
RUN_DIRS = ("checkpoints", "losses", "records", "tensorboard", "evaluations")


def default_run_dir(config: RunConfig) -> Path:
    if config.output.out:
        return Path(config.output.out)
    return Path("runs") / f"{config.name}-{config.model.mode}-seed{config.training.seed}"


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


def prepare(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Check that a run may start (or resume) in ``run_dir``; never touches a finished run
    without ``overwrite``, and never deletes a directory that is not a segdend run."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if info is None and (run_dir / "config.json").is_file():
        info = {"status": "starting"}  # killed between writing config.json and run.json
    if resume:
        if info is None:
            raise SegdendError(f"{run_dir} holds no segdend run to resume; drop --resume to start one")
        return
    if info is not None:
        if not overwrite:
            what = "a finished" if info.get("status") == "finished" else "an unfinished"
            hint = "" if info.get("status") == "finished" else " or --resume to continue it"
            raise SegdendError(
                f"{run_dir} already holds {what} run; use --overwrite to replace it{hint}, "
                "or --out for another directory"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise SegdendError(
            f"{run_dir} exists and is not a segdend run directory; choose an empty or new --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)


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


def write_evaluation(run_dir: Path, result: dict[str, Any]) -> Path:
    """Keep an evaluation (``evaluate.evaluate_run``'s result) in ``evaluations/``, named by
    epoch, repeats and test images so that different evaluations never overwrite each other."""
    name = (f"epoch_{int(result.get('epoch') or 0):03d}_{result['repeats']}x"
            f"{result['test_images']}_{result['engine']}.json")
    path = Path(run_dir) / "evaluations" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


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
