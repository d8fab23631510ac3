"""Sweeps: many independent runs (conditions x seeds) on a Dask cluster, resumable, aggregated.

A sweep is planned from a preset (or an experiment of :mod:`segdend.experiments`, when that
module exists), common ``--set`` overrides, ``--grid`` axes and a number of seeds. The
cartesian product of the grid axes (times the experiment's conditions) gives the conditions;
each condition is run once per seed, in its own run directory ``OUT/<condition>/seed<k>``.
Every run's config is built by :func:`segdend.presets.build_config`, so a sweep run is the run
``segdend train`` makes with the same options, and each is trained by
:func:`segdend.train.run_config`.

The runs are Dask tasks (one per run) on a ``LocalCluster`` of single-threaded worker
processes, or on any Dask scheduler. A task looks at its run directory first: a finished run is
skipped, an unfinished one resumed from its last checkpoint (bit for bit, see
:mod:`segdend.train`), anything else started. So rerunning a sweep costs nothing for the runs
already done, and a run lost with its worker resumes where its checkpoint left it, on whichever
worker picks it up again.

At the end, ``OUT/runs.csv`` (one row per run), ``OUT/summary.csv`` (one row per condition:
mean, sd, min and max of the final test error over the seeds), ``OUT/summary.png``/``.pdf``
and ``OUT/sweep.json`` (what was asked, and when) are written; see
:mod:`segdend.sweep.report`.

The package, one module per concern, from the bottom up:

=========  ===========================================================================
grid       ``--grid`` values and condition names
target     a preset or an experiment, as the conditions a sweep expands
state      one run directory: new, resume, finished, diverged (or refused)
plan       conditions x seeds, each run's directory and validated config; ``--dry-run``
worker     one run on a worker process (the Dask task): thread caps, lock, data
cluster    the Dask client and LocalCluster
monitor    the runs' states while the sweep runs, and their progress display
report     runs.csv, summary.csv, summary.png/.pdf and sweep.json, read from the run dirs
run        :func:`run_sweep`: skip, submit, follow, retry, summarise
=========  ===========================================================================

Every name is importable from ``segdend.sweep`` itself.
"""

# ``X as X``: importable from here as before the split, though not in __all__ (as before).
from segdend.sweep.cluster import available_cores as available_cores
from segdend.sweep.cluster import connect, local_cluster
from segdend.sweep.grid import MAX_LABEL as MAX_LABEL
from segdend.sweep.grid import RESERVED_KEYS as RESERVED_KEYS
from segdend.sweep.grid import condition_label, parse_grid, safe_name, split_top_level
from segdend.sweep.monitor import RunOutcome as RunOutcome
from segdend.sweep.plan import Condition, RunSpec, SweepPlan, describe_plan, plan_sweep
from segdend.sweep.run import SweepResult, run_sweep
from segdend.sweep.state import (
    SWEEP_STATES,
    checkpoint_position,
    final_test_error,
    run_lifecycle,
    run_state,
)
from segdend.sweep.target import BaseCondition, Target, resolve_target
from segdend.sweep.worker import THREAD_ENV as THREAD_ENV
from segdend.sweep.worker import DataFactory as DataFactory
from segdend.sweep.worker import execute_run, limit_threads, run_lock
from segdend.sweep.worker import log_ as log_

__all__ = [
    "SWEEP_STATES",
    "BaseCondition",
    "Condition",
    "RunSpec",
    "SweepPlan",
    "SweepResult",
    "Target",
    "checkpoint_position",
    "condition_label",
    "connect",
    "describe_plan",
    "execute_run",
    "final_test_error",
    "limit_threads",
    "local_cluster",
    "parse_grid",
    "plan_sweep",
    "resolve_target",
    "run_lifecycle",
    "run_lock",
    "run_state",
    "run_sweep",
    "safe_name",
    "split_top_level",
]
