"""Running a planned sweep on Dask: skip what is done, submit the rest (one task per run),
follow the events, retry runs lost to their worker, and write the summary."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segdend.errors import SegdendError
from segdend.sweep.cluster import connect
from segdend.sweep.monitor import RunOutcome, _Monitor
from segdend.sweep.plan import SweepPlan
from segdend.sweep.state import run_state
from segdend.sweep.worker import DataFactory, execute_run


@dataclass
class SweepResult:
    plan: SweepPlan
    runs: list[dict[str, Any]]
    """One record per run (see :func:`segdend.sweep.report.run_records`)."""
    summary: list[dict[str, Any]]
    """One row per condition, as in summary.csv."""
    files: dict[str, Path]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] != "finished"]


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_sweep(plan: SweepPlan, *, client: Any | None = None, scheduler: str | None = None,
              workers: int | None = None, data_factory: DataFactory | None = None,
              retries: int = 2, log: Callable[[str], None] | None = None,
              console: Any | None = None, poll: float = 0.5, status_every: float = 60.0,
              command: Sequence[str] | None = None) -> SweepResult:
    """Run a planned sweep and write its summary.

    Parameters
    ----------
    plan : SweepPlan
        From :func:`plan_sweep`.
    client : distributed.Client, optional
        Use this client; otherwise connect to ``scheduler`` or start a LocalCluster of
        ``workers`` single-threaded processes (default: one per core).
    data_factory : callable, optional
        ``data_factory(config) -> Dataset`` for each run, on the worker (must be picklable);
        default: MNIST from the config's data section.
    retries : int
        How many more times a run lost to an unexpected error (a killed worker, an OSError) is
        submitted again; each attempt resumes from the run's last checkpoint. Configuration and
        data errors (SegdendError) and divergence are never retried.
    log : callable
        Receives one line per event (run started, resumed, finished, failed, retried).
    console : rich.console.Console, optional
        Show a live table of the running runs on this console (events are printed above it);
        without one, a status line goes to ``log`` every ``status_every`` seconds (0: never).
    poll : float
        Seconds between looks at the futures, the events and the run directories.
    command : list of str, optional
        The command line, recorded in sweep.json.
    """
    from segdend.sweep.report import write_reports, write_sweep_json

    emit = log or (lambda s: None)
    plan.out.mkdir(parents=True, exist_ok=True)
    outcomes = [RunOutcome(spec) for spec in plan.runs]
    for o in outcomes:
        state, why = run_state(o.spec.config)  # conflicts raise here, before anything runs
        if state in ("finished", "diverged"):
            o.state = "skipped" if state == "finished" else "failed"
            o.action, o.error = "skipped", why
        else:
            o.action = "resume" if state == "resume" else "start"
    write_sweep_json(plan, command, state="running")
    todo = [o for o in outcomes if o.state == "queued"]
    n_skip = sum(o.state == "skipped" for o in outcomes)
    n_resume = sum(o.action == "resume" for o in todo)
    emit(f"sweep {plan.target.name}: {len(plan.runs)} runs ({len(plan.conditions)} conditions "
         f"x {len(plan.seeds)} seeds) in {plan.out}; {n_skip} finished (skipped), "
         f"{n_resume} to resume, {len(todo) - n_resume} to start")
    for o in outcomes:
        if o.state == "failed":
            emit(f"not rerun: {o.spec.label}: {o.error}")
    monitor = _Monitor(outcomes, emit, console, status_every)
    if todo:
        own_cluster = None
        try:
            if client is None:
                client, own_cluster = connect(scheduler, workers, plan.max_threads)
            _execute(client, todo, data_factory, retries, monitor, poll)
        except BaseException as err:
            state = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            write_sweep_json(plan, command, state=state, counts=monitor.counts())
            raise
        finally:
            if own_cluster is not None:
                client.close()
                own_cluster.close()
    runs, summary, files = write_reports(plan, {o.spec.label: o for o in outcomes})
    write_sweep_json(plan, command, state="done", counts=monitor.counts())
    return SweepResult(plan, runs, summary, files)


def _execute(client: Any, todo: list[RunOutcome], data_factory: DataFactory | None,
             retries: int, mon: _Monitor, poll: float) -> None:
    from distributed import as_completed

    topic = f"segdend-sweep-{uuid.uuid4().hex[:12]}"
    by_label = {o.spec.label: o for o in todo}
    events: list[dict[str, Any]] = []

    def on_event(event: Any) -> None:  # called on the client's event loop thread
        events.append(event[1] if isinstance(event, tuple) else event)

    def submit(o: RunOutcome) -> Any:
        o.attempts += 1
        o.state = "queued"
        key = f"segdend-run-{o.spec.label}-{uuid.uuid4().hex[:8]}"
        return client.submit(execute_run, o.spec.config_json, data_factory, topic,
                             o.spec.label, key=key, pure=False)

    client.subscribe_topic(topic, on_event)
    futures = {}
    try:
        for o in todo:
            futures[submit(o)] = o
        pending = as_completed(list(futures), loop=client.loop)
        with mon:
            while not pending.is_empty() or events:
                while events:
                    ev = events.pop(0)
                    o = by_label.get(ev.get("run", ""))
                    if o is None or o.state in ("finished", "failed", "skipped"):
                        continue
                    if ev.get("kind") == "waiting":
                        mon.say(f"waiting for {o.spec.label}: another process is working on it")
                        continue
                    o.state, o.worker, o.started = "running", str(ev.get("worker", "")), time.time()
                    at = ev.get("at") or {}
                    where = (f" from epoch {int(at.get('epoch') or 0) + 1}, example "
                             f"{at.get('position') or 0}" if at else "")
                    verb = "resumed" if ev.get("action") == "resume" else "started"
                    mon.say(f"{verb} {o.spec.label} on {o.worker}{where}"
                            + (f" ({ev['detail']})" if ev.get("detail") else ""))
                for fut in pending.next_batch(block=False):
                    o = futures.pop(fut)
                    if fut.status == "finished":
                        rec = fut.result()
                        o.record = rec
                        ok = rec.get("status") == "finished"
                        o.state = ("skipped" if rec.get("action") == "skipped" and ok
                                   else "finished" if ok else "failed")
                        err = rec.get("test_error")
                        mon.say(f"{'finished' if ok else rec.get('status')} {o.spec.label}: "
                                f"test error {'-' if err is None else f'{err:.2f}%'}"
                                + (f" ({rec['seconds']:.1f} s)" if "seconds" in rec else ""))
                        if not ok:
                            o.error = f"status {rec.get('status')}"
                        continue
                    try:
                        exc = fut.exception()
                    except KeyboardInterrupt:
                        raise
                    except BaseException as err:  # cancelled (e.g. by a restarted scheduler)
                        exc = err
                    o.error = _short_error(exc)
                    if not isinstance(exc, SegdendError) and o.attempts <= retries:
                        mon.say(f"retrying {o.spec.label} (attempt {o.attempts + 1}) after "
                                f"{o.error}")
                        new = submit(o)
                        futures[new] = o
                        pending.add(new)
                    else:
                        o.state = "failed"
                        mon.say(f"failed {o.spec.label}: {o.error}")
                    fut.release()
                mon.tick()
                if not pending.is_empty():
                    time.sleep(poll)
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        try:
            client.unsubscribe_topic(topic)
        except Exception:  # noqa: BLE001 - the client may be closing
            pass
