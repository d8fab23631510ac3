"""The sweep's view of its runs while they run: their states, event lines, and progress (a
live Rich table on a terminal, a status line elsewhere)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from segdend.sweep.plan import RunSpec
from segdend.sweep.state import checkpoint_position, final_test_error


@dataclass
class RunOutcome:
    spec: RunSpec
    state: str = "queued"  # queued, running, finished, failed, skipped
    action: str = ""
    attempts: int = 0
    worker: str = ""
    started: float = 0.0
    error: str = ""
    record: dict[str, Any] = field(default_factory=dict)


class _Monitor:
    """Counts, event lines and progress: on a terminal a live Rich table of the running runs
    (epoch and example from each run's checkpoint, last test error from its metrics.csv),
    elsewhere a status line every ``status_every`` seconds."""

    def __init__(self, outcomes: list[RunOutcome], log: Callable[[str], None],
                 console: Any | None, status_every: float = 60.0):
        self.outcomes = outcomes
        self._log = log
        self.console = console
        self.status_every = status_every
        self.live = None
        self.t0 = self._last_status = time.time()

    def __enter__(self) -> _Monitor:
        if self.console is not None:
            from rich.live import Live
            self.live = Live(self._render(), console=self.console, auto_refresh=False,
                             transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.stop()

    def say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, highlight=False, markup=False)
        else:
            self._log(line)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("queued", "running", "finished", "failed", "skipped"), 0)
        for o in self.outcomes:
            out[o.state] += 1
        return out

    def headline(self) -> str:
        c = self.counts()
        done = c["finished"] + c["skipped"]
        return (f"runs: {done}/{len(self.outcomes)} done ({c['skipped']} skipped), "
                f"{c['running']} running, {c['failed']} failed, {c['queued']} queued, "
                f"{time.time() - self.t0:.0f} s")

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self._render(), refresh=True)
        elif self.status_every and time.time() - self._last_status >= self.status_every:
            self._last_status = time.time()
            running = [f"{o.spec.label} {self._progress(o)[0]}" for o in self.outcomes
                       if o.state == "running"]
            self._log(self.headline() + (f" [{'; '.join(running)}]" if running else ""))

    @staticmethod
    def _progress(o: RunOutcome) -> tuple[str, str]:
        """``epoch e/E, example p/N`` of a running run, and its last test error."""
        cfg = o.spec.config
        pos = checkpoint_position(o.spec.run_dir) or {}
        epoch = min(int(pos.get("epoch") or 0) + 1, cfg.training.epochs)
        n_train = cfg.training.train_examples
        last = final_test_error(o.spec.run_dir)
        return (f"epoch {epoch}/{cfg.training.epochs}, example {pos.get('position') or 0}"
                + (f"/{n_train}" if n_train else ""),
                "-" if last is None else f"{last:.2f}%")

    def _render(self) -> Any:
        from rich.table import Table

        table = Table("run", "worker", "progress (last checkpoint)", "last test error",
                      "time", title=self.headline(), title_justify="left", box=None)
        for o in self.outcomes:
            if o.state == "running":
                where, last = self._progress(o)
                table.add_row(o.spec.label, o.worker.rsplit("/", 1)[-1], where, last,
                              f"{time.time() - o.started:.0f} s")
        return table
