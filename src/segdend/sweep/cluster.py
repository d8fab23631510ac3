"""The Dask cluster: a LocalCluster of single-threaded worker processes, or a client of any
scheduler."""

from __future__ import annotations

import logging
import os
from typing import Any

from segdend.errors import SegdendError
from segdend.sweep.worker import THREAD_ENV


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def local_cluster(workers: int | None = None, threads: int = 1) -> Any:
    """A LocalCluster of single-threaded worker processes, one per core (or ``workers``)."""
    from distributed import LocalCluster

    n = workers if workers is not None else max(1, available_cores() // max(threads, 1))
    if n < 1:
        raise SegdendError(f"--workers must be >= 1; got {n}")
    env = {var: str(threads) for var in THREAD_ENV}
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=logging.ERROR, env=env)


def connect(scheduler: str | None = None, workers: int | None = None,
            threads: int = 1) -> tuple[Any, Any]:
    """A Dask client: to ``scheduler`` if given, else to a new LocalCluster (also returned)."""
    from distributed import Client

    if scheduler:
        if workers is not None:
            raise SegdendError("--workers sizes the local cluster; with --scheduler, size the "
                               "cluster itself (e.g. SLURMCluster(...).scale(jobs=...))")
        try:
            return Client(scheduler, timeout="30s", set_as_default=False), None
        except (OSError, TimeoutError) as err:
            raise SegdendError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    cluster = local_cluster(workers, threads)
    return Client(cluster, set_as_default=False), cluster
