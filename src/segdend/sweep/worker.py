"""One run on a worker process, the Dask task: thread caps, the run's lock, its data (loaded
once per process), and running, resuming or skipping it where it stands."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from segdend.config import RunConfig, config_from_dict
from segdend.sweep.state import checkpoint_position, final_test_error, run_state

DataFactory = Callable[[RunConfig], Any]
"""Builds a run's :class:`segdend.train.Dataset` from its config (default: MNIST)."""

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")
"""Environment variables that cap the compute threads of one worker process."""

log_ = logging.getLogger("segdend.sweep")


def limit_threads(n: int) -> None:
    """Cap this process's compute threads (BLAS, OpenMP, Numba, PyTorch) at ``n``."""
    for var in THREAD_ENV:
        if var == "NUMBA_NUM_THREADS" and "numba" in sys.modules:
            continue  # read at import; adjusted below instead
        os.environ[var] = str(n)
    if "numba" in sys.modules:
        try:
            import numba
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        except Exception:  # noqa: BLE001 - a cap, not a requirement
            pass
    try:
        import torch
        torch.set_num_threads(n)
    except Exception:  # noqa: BLE001
        pass
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n)
    except Exception:  # noqa: BLE001
        pass


_DATA_CACHE: dict[tuple, Any] = {}


def _load_data(config: RunConfig) -> Any:
    """MNIST for a run, kept per worker process so consecutive runs load it once."""
    from segdend.train import load_dataset

    key = (config.data.data_dir, config.data.cache_dir, config.data.download,
           config.training.validation, os.environ.get("SEGDEND_DATA_DIR"))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_dataset(config, log=log_.info)
    return _DATA_CACHE[key]


def _event(topic: str | None, msg: dict[str, Any]) -> None:
    if topic is None:
        return
    try:
        from distributed import get_worker
        get_worker().log_event(topic, msg)
    except (ImportError, ValueError):
        pass


@contextlib.contextmanager
def run_lock(run_dir: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on a run for as long as a process works on it.

    The lock is ``fcntl.flock`` on ``<condition dir>/.seed<k>.lock`` (outside the run directory,
    which must stay a plain run directory): the kernel drops it when its process dies, so a
    killed worker never leaves a stale lock, while two live sweeps over the same directory take
    turns instead of writing the same run at once. Without ``fcntl`` (Windows) it does nothing.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir.parent / f".{run_dir.name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def execute_run(config_json: str, data_factory: DataFactory | None = None,
                topic: str | None = None, label: str = "") -> dict[str, Any]:
    """Run (or resume, or skip) one sweep run where it stands; the Dask task.

    Returns a small record (never the weights): action, status, engine, final test error.
    """
    config = config_from_dict(json.loads(config_json))
    limit_threads(config.training.threads)
    run_dir = Path(config.output.out or ".")

    def waiting() -> None:
        _event(topic, {"kind": "waiting", "run": label, "pid": os.getpid()})

    with run_lock(run_dir, waiting):
        return _execute_locked(config, run_dir, data_factory, topic, label)


def _execute_locked(config: RunConfig, run_dir: Path, data_factory: DataFactory | None,
                    topic: str | None, label: str) -> dict[str, Any]:
    from segdend.train import run_config

    record: dict[str, Any] = {"run": label, "run_dir": str(run_dir), "pid": os.getpid(),
                              "host": platform.node()}
    action, why = run_state(config)
    if action in ("finished", "diverged"):
        status = "finished" if action == "finished" else "diverged"
        return {**record, "action": "skipped", "status": status, "detail": why,
                "test_error": final_test_error(run_dir, config.training.epochs)}
    at = checkpoint_position(run_dir) if action == "resume" else None
    _event(topic, {"kind": "started", "run": label, "action": action, "at": at,
                   "detail": why, "pid": os.getpid()})
    t0 = time.perf_counter()
    data = data_factory(config) if data_factory is not None else _load_data(config)
    result = run_config(config, resume=action == "resume", progress=False, log=log_.info,
                        data=data)
    return {**record, "action": "resumed" if action == "resume" else "started",
            "status": result.status, "engine": result.engine,
            "seconds": round(time.perf_counter() - t0, 3),
            "test_error": final_test_error(run_dir, config.training.epochs)}
