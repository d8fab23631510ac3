"""One run's directory as a sweep sees it: what to do with it (new, resume, finished,
diverged, or refuse), how far its checkpoint got, and its final test error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segdend.config import RunConfig
from segdend.errors import SegdendError


def _is_start_debris(path: Path) -> bool:
    """Files a run can leave behind when killed before its run.json exists."""
    return path.name == "config.json" or (path.name.startswith(".") and path.name.endswith(".tmp"))


def run_state(config: RunConfig) -> tuple[str, str]:
    """What to do with a run's directory: ``new``, ``resume``, ``finished`` or ``diverged``,
    and why. A directory holding something else (another run's config, a longer finished run,
    foreign files) raises SegdendError.
    """
    from segdend.checkpoint import config_fingerprint
    from segdend.rundir import load_run_config, read_run_info

    run_dir = Path(config.output.out or ".")
    info = read_run_info(run_dir)
    if info is None:
        if run_dir.is_dir() and any(not _is_start_debris(p) for p in run_dir.iterdir()):
            raise SegdendError(f"{run_dir} exists and is not a segdend run directory; move it "
                               "away or choose another --out")
        return "new", ""
    saved = load_run_config(run_dir)
    if config_fingerprint(saved.to_json()) != config_fingerprint(config.to_json()):
        raise SegdendError(f"{run_dir} holds a run with a different config; choose another --out "
                           "or delete that run directory")
    status = info.get("status")
    if status == "finished":
        differ = [k for k in ("test_examples", "test_repeats")
                  if getattr(saved.training, k) != getattr(config.training, k)]
        if differ:
            raise SegdendError(f"{run_dir} holds a finished run tested with other "
                               f"{', '.join('training.' + k for k in differ)}; choose another "
                               "--out or re-test it with `segdend evaluate`")
        done, want = saved.training.epochs, config.training.epochs
        if done == want:
            return "finished", ""
        if done < want:
            return "resume", f"extending from {done} to {want} epochs"
        raise SegdendError(f"{run_dir} holds a run finished after {done} epochs but the sweep "
                           f"asks for {want}; choose another --out")
    if status == "diverged":
        return "diverged", "the run diverged; delete its directory to try again"
    return "resume", f"it was left {status}"


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
