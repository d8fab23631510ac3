"""The online training loop: epochs, example order, tests, metrics, checkpoints, progress.

The trainer owns time, order and files; engines own the simulation. Every random choice is
decided here from the run seed (:mod:`segdend.rng`): the epoch's example order, its phase
lengths, and the keys of each example's spike streams. Because those are pure functions of
(seed, epoch, position), a run resumed from a checkpoint continues bit for bit, and the
chunking of examples into engine calls changes nothing.
"""

from __future__ import annotations

import csv
import io
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdend import rng
from segdend.checkpoint import (
    atomic_write_text,
    config_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from segdend.config import RunConfig
from segdend.engines.base import State, TrainBatch, TrainResult
from segdend.engines.registry import get_engine
from segdend.errors import DivergenceError, SegdendError
from segdend.network import Params, check_shapes, initialise

CHUNK = 1000  # examples per engine call between progress updates and checks
TEST_CHUNK = 1000
LIMIT = 1e8  # |voltage| or |weight| beyond this is divergence, not learning


@dataclass
class Dataset:
    """Images (uint8, n x n_inputs) and labels the trainer works from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    validation_images: np.ndarray | None = None
    validation_labels: np.ndarray | None = None
    source: str = ""


@dataclass
class RunResult:
    run_dir: Path | None
    params: Params
    metrics: list[dict[str, Any]]
    status: str
    engine: str
    losses: dict[str, np.ndarray] = field(default_factory=dict)


class TrainingInterrupted(Exception):
    """Ctrl-C: a checkpoint was written and the run can be resumed."""


def load_dataset(config: RunConfig, log: Callable[[str], None] = lambda s: None) -> Dataset:
    """Load MNIST from the config's sources and apply the validation split."""
    from segdend.data import load_mnist, split_validation

    mnist = load_mnist(config.data.data_dir, cache_dir=config.data.cache_dir,
                       download=config.data.download, log=log)
    val_images = val_labels = None
    if config.training.validation:
        mnist, (val_images, val_labels) = split_validation(mnist, config.training.validation)
    return Dataset(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels,
                   val_images, val_labels, mnist.source)


def as_pixels(images: np.ndarray) -> np.ndarray:
    """Pixel intensities in [0, 1] (MODEL.md 1): uint8 / 255, or float arrays as given."""
    if images.dtype == np.uint8:
        return images.astype(np.float64) / 255.0
    return np.asarray(images, dtype=np.float64)


def epoch_plan(config: RunConfig, epoch: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Example order and phase lengths (n x 2) of an epoch, from the seed (MODEL.md 4-5)."""
    seed, ph = config.training.seed, config.phases
    order = rng.seed_sequence(seed, rng.ORDER, epoch).permutation(n)
    if ph.lengths == "random" and config.model.mode == "spiking":
        wald = rng.seed_sequence(seed, rng.PHASES, epoch).wald(ph.wald_mean, ph.wald_scale,
                                                               size=(n, 2))
        lengths = ph.min_length + wald.astype(np.int64)
    else:
        lengths = np.full((n, 2), ph.min_length, dtype=np.int64)
    return order, lengths


def make_batch(config: RunConfig, images: np.ndarray, labels: np.ndarray, epoch: int,
               positions: np.ndarray, image_index: np.ndarray, lengths: np.ndarray
               ) -> TrainBatch:
    """The engine's view of the examples at ``positions`` of an epoch: images
    ``image_index``, phase lengths ``lengths`` (one row per position), keys from the seed."""
    seed = config.training.seed
    keys = [rng.derive_keys(rng.derive_key(seed, purpose, epoch), positions)
            for purpose in (rng.TRAIN_SPIKES, rng.PLATEAU, rng.FEEDBACK_NOISE)]
    return TrainBatch(as_pixels(images[image_index]),
                      np.asarray(labels[image_index], dtype=np.int64),
                      np.asarray(lengths, dtype=np.int64), *keys)


def test_keys(config: RunConfig, purpose_path: tuple[int, ...], n: int) -> np.ndarray:
    """Spike-stream keys of ``n`` test images for one test (epoch, repeat...)."""
    base = rng.derive_key(config.training.seed, rng.TEST_SPIKES, *purpose_path)
    return rng.derive_keys(base, np.arange(n))


def test_error(engine, params: Params, images: np.ndarray, labels: np.ndarray,
               keys: np.ndarray, on_chunk: Callable[[int], None] | None = None) -> float:
    """Percent of misclassified images; each image from a cleared state (MODEL.md 9)."""
    wrong = 0
    for start in range(0, len(labels), TEST_CHUNK):
        stop = min(start + TEST_CHUNK, len(labels))
        res = engine.test(params, as_pixels(images[start:stop]), keys[start:stop])
        wrong += int(np.sum(res.predictions != labels[start:stop]))
        if on_chunk is not None:
            on_chunk(stop - start)
    return 100.0 * wrong / max(len(labels), 1)


def find_divergence(params: Params, state: State) -> str | None:
    """A description of the first non-finite or runaway quantity, or None."""
    for name, a in params.arrays().items():
        if not np.all(np.isfinite(a)) or np.max(np.abs(a), initial=0.0) > LIMIT:
            kind = {"W": "weights", "b": "biases", "Y": "feedback weights"}.get(name[0], name)
            return f"{kind} of layer {name.lstrip('WbY_mask')}"
    for name, a in state.arrays.items():
        if not np.all(np.isfinite(a)) or np.max(np.abs(a), initial=0.0) > LIMIT:
            if name.startswith("v"):
                return f"somatic voltages of layer {int(name[1:]) - 1}"
            return f"neuron state {name}"
    return None


class Trainer:
    """One run: config + data + engine + run directory (None for in-memory runs)."""

    def __init__(self, config: RunConfig, data: Dataset, run_dir: Path | None = None,
                 params: Params | None = None, log: Callable[[str], None] | None = None,
                 progress: bool = False):
        self.config = config
        self.data = data
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.engine = get_engine(config)
        self.params = params if params is not None else initialise(config.model,
                                                                   config.training.seed)
        check_shapes(config.model, self.params)
        self.state = self.engine.new_state()
        self.metrics: list[dict[str, Any]] = []
        self.quick: list[dict[str, Any]] = []
        self.epoch, self.position = 0, 0
        self.epoch_seconds = 0.0
        self.partial: dict[str, np.ndarray] = {}
        self.fingerprint = config_fingerprint(config.to_json())
        self.progress = progress
        self._log = log or (lambda s: None)
        self._stop = False
        tr = config.training
        n_all = len(data.train_labels)
        self.n_train = min(tr.train_examples or n_all, n_all)
        self.n_test = min(tr.test_examples or len(data.test_labels), len(data.test_labels))

    # -- logging and files ------------------------------------------------------------------

    def log(self, line: str) -> None:
        self._log(line)
        if self.run_dir is not None:
            with open(self.run_dir / "log.txt", "a", encoding="utf-8") as f:
                f.write(time.strftime("%H:%M:%S ") + line + "\n")

    def _checkpoint_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"params.{k}": v for k, v in self.params.arrays().items()}
        arrays.update({f"state.{k}": v for k, v in self.state.arrays.items()})
        arrays.update({f"partial.{k}": v for k, v in self.partial.items()})
        return arrays

    def save(self, name: str = "latest") -> None:
        if self.run_dir is None:
            return
        meta = {"config_fingerprint": self.fingerprint, "epoch": self.epoch,
                "position": self.position, "examples_seen": self.examples_seen,
                "epoch_seconds": self.epoch_seconds, "metrics": self.metrics,
                "quick_tests": self.quick}
        save_checkpoint(self.run_dir / "checkpoints" / f"{name}.safetensors",
                        self._checkpoint_arrays(), meta)

    def restore(self, path: Path) -> None:
        arrays, meta = load_checkpoint(path, fingerprint=self.fingerprint)

        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        self.params = Params.from_arrays(group("params."))
        check_shapes(self.config.model, self.params)
        self.state = State(group("state."))
        self.partial = group("partial.")
        self.epoch, self.position = int(meta["epoch"]), int(meta["position"])
        self.epoch_seconds = float(meta["epoch_seconds"])
        self.metrics, self.quick = list(meta["metrics"]), list(meta.get("quick_tests", []))
        self.log(f"resumed from {path} at epoch {self.epoch + 1}, example {self.position}")

    def write_metrics(self) -> None:
        if self.run_dir is None:
            return
        for name, rows in (("metrics.csv", self.metrics), ("quick_tests.csv", self.quick)):
            if not rows:
                continue
            buf = io.StringIO()
            keys = list(rows[0].keys())
            for r in rows:
                keys += [k for k in r if k not in keys]
            writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(self.run_dir / name, buf.getvalue())

    @property
    def examples_seen(self) -> int:
        return self.epoch * self.n_train + self.position

    # -- the loop ---------------------------------------------------------------------------

    def _on_sigint(self, signum, frame) -> None:  # noqa: ARG002
        self._stop = True

    def run(self, stop_after: int | None = None) -> RunResult:
        """Train to ``training.epochs`` (or until ``stop_after`` examples, for tests)."""
        cfg = self.config.training
        old_handler = None
        try:
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread (e.g. a Dask worker)
            pass
        bar = _Progress(self.progress, cfg.epochs * self.n_train, self.examples_seen)
        try:
            with bar:
                while self.epoch < cfg.epochs:
                    self._run_epoch(bar, stop_after)
                    if stop_after is not None and self.examples_seen >= stop_after:
                        break
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        status = "finished" if self.epoch >= cfg.epochs else "stopped"
        return RunResult(self.run_dir, self.params, self.metrics, status, self.engine.name)

    def _run_epoch(self, bar: _Progress, stop_after: int | None) -> None:
        cfg = self.config.training
        order, lengths = epoch_plan(self.config, self.epoch, self.n_train)
        n_hidden = self.config.model.n_hidden_layers
        if self.position == 0 or not self.partial:
            self.partial = {"loss_out": np.zeros(0), "loss_hidden": np.zeros((0, n_hidden)),
                            "correct": np.zeros(0, dtype=np.uint8)}
        t0 = time.perf_counter()
        while self.position < self.n_train:
            stop = min(self.position + CHUNK, self.n_train)
            for every in (cfg.checkpoint_every, cfg.quick_test_every):
                if every:
                    stop = min(stop, (self.examples_seen // every + 1) * every
                               - self.epoch * self.n_train)
            if stop_after is not None:
                stop = min(stop, stop_after - self.epoch * self.n_train)
            positions = np.arange(self.position, stop)
            result = self._train_chunk(order, lengths, positions)
            new = {"loss_out": result.loss_out, "loss_hidden": result.loss_hidden,
                   "correct": result.correct.astype(np.uint8),
                   **{f"record.{k}": v for k, v in result.records.items()}}
            self.partial = {k: np.concatenate([self.partial[k], v]) if k in self.partial else v
                            for k, v in new.items()}
            self.position = stop
            now = time.perf_counter()
            self.epoch_seconds += now - t0
            t0 = now
            bar.advance(len(positions), 100.0 * (1 - self.partial["correct"].mean()))
            if cfg.quick_test_every and self.examples_seen % cfg.quick_test_every == 0:
                self._quick_test()
            if self._stop:
                self.save()
                self.log(f"interrupted at epoch {self.epoch + 1}, example {self.position}; "
                         "checkpoint written")
                raise TrainingInterrupted(self.run_dir)
            if cfg.checkpoint_every and self.examples_seen % cfg.checkpoint_every == 0:
                self.save()
            if stop_after is not None and self.examples_seen >= stop_after:
                if self.position < self.n_train:
                    self.save()
                    return
        self._finish_epoch(order, bar)

    def _train_chunk(self, order, lengths, positions) -> TrainResult:
        before = (self.params.copy(), self.state.copy())
        batch = make_batch(self.config, self.data.train_images, self.data.train_labels,
                           self.epoch, positions, order[positions], lengths[positions])
        with np.errstate(all="ignore"):
            result = self.engine.train(self.params, self.state, batch, self.config.output.record)
        problem = find_divergence(self.params, self.state)
        if problem is not None:
            self._locate_divergence(before, order, lengths, positions)
        return result

    def _locate_divergence(self, before, order, lengths, positions) -> None:
        """Replay the chunk one example at a time to name the first diverging example."""
        self.params, self.state = before
        for p in positions:
            batch = make_batch(self.config, self.data.train_images, self.data.train_labels,
                               self.epoch, np.array([p]), order[[p]], lengths[[p]])
            with np.errstate(all="ignore"):
                self.engine.train(self.params, self.state, batch)
            problem = find_divergence(self.params, self.state)
            if problem is not None:
                kept = ("; the last good checkpoint in "
                        f"{self.run_dir / 'checkpoints'} is kept" if self.run_dir else "")
                self._mark("diverged")
                raise DivergenceError(
                    f"the run diverged: non-finite or runaway {problem} at training example "
                    f"{self.epoch * self.n_train + int(p) + 1} (epoch {self.epoch + 1}, image "
                    f"{int(order[p])}){kept}; lower the learning rates (training.eta)"
                )
        raise DivergenceError("the run diverged in a chunk but not when replayed; report a bug")

    def _mark(self, status: str) -> None:
        if self.run_dir is not None:
            from segdend.rundir import write_run_info
            write_run_info(self.run_dir, self.config, self.engine.name, status)

    def _quick_test(self) -> None:
        n = min(self.config.training.quick_test_examples, len(self.data.test_labels))
        keys = test_keys(self.config, (1, self.examples_seen), n)
        err = test_error(self.engine, self.params, self.data.test_images[:n],
                         self.data.test_labels[:n], keys)
        self.quick.append({"examples_seen": self.examples_seen, "test_error": err,
                           "test_images": n})
        self.log(f"quick test after {self.examples_seen} examples: {err:.2f}% error on {n} images")
        self.write_metrics()

    def _finish_epoch(self, order: np.ndarray, bar: _Progress) -> None:
        cfg = self.config.training
        t0 = time.perf_counter()
        row: dict[str, Any] = {"epoch": self.epoch + 1, "examples_seen": self.examples_seen}
        last = self.epoch + 1 == cfg.epochs
        if (self.epoch + 1) % cfg.test_every == 0 or last:
            errors = []
            for r in range(cfg.test_repeats):
                keys = test_keys(self.config, (0, self.epoch, r), self.n_test)
                errors.append(test_error(self.engine, self.params,
                                         self.data.test_images[:self.n_test],
                                         self.data.test_labels[:self.n_test], keys))
            row["test_error"] = float(np.mean(errors))
            row["test_error_sd"] = float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0
        else:
            row["test_error"] = ""
            row["test_error_sd"] = ""
        if self.data.validation_images is not None:
            keys = test_keys(self.config, (2, self.epoch), len(self.data.validation_labels))
            row["validation_error"] = test_error(self.engine, self.params,
                                                 self.data.validation_images,
                                                 self.data.validation_labels, keys)
        row["train_error"] = 100.0 * (1.0 - float(self.partial["correct"].mean()))
        row["loss_out"] = float(self.partial["loss_out"].mean())
        for m in range(self.config.model.n_hidden_layers):
            row[f"loss_hidden{m}"] = float(self.partial["loss_hidden"][:, m].mean())
        self.epoch_seconds += time.perf_counter() - t0
        row["seconds"] = round(self.epoch_seconds, 3)
        self.metrics.append(row)
        if self.run_dir is not None:
            from safetensors.numpy import save

            from segdend.checkpoint import atomic_write_bytes
            losses = {k: v for k, v in self.partial.items() if not k.startswith("record.")}
            losses["order"] = order.astype(np.int64)
            records = {k[7:]: v for k, v in self.partial.items() if k.startswith("record.")}
            if records:
                atomic_write_bytes(
                    self.run_dir / "records" / f"epoch_{self.epoch + 1:03d}.safetensors",
                    save({k: np.ascontiguousarray(v) for k, v in records.items()}))
            atomic_write_bytes(self.run_dir / "losses" / f"epoch_{self.epoch + 1:03d}.safetensors",
                               save({k: np.ascontiguousarray(v) for k, v in losses.items()}))
        self.log("epoch {epoch}: test error {test}, train error {train:.2f}%, {secs:.1f} s".format(
            epoch=self.epoch + 1, secs=row["seconds"], train=row["train_error"],
            test=f"{row['test_error']:.2f}%" if row["test_error"] != "" else "(not tested)"))
        self.epoch += 1
        self.position = 0
        self.epoch_seconds = 0.0
        self.partial = {}
        self.write_metrics()
        self.save()
        if self.run_dir is not None:
            save_checkpoint(self.run_dir / "checkpoints" / f"epoch_{self.epoch:03d}.safetensors",
                            {f"params.{k}": v for k, v in self.params.arrays().items()},
                            {"config_fingerprint": self.fingerprint, "epoch": self.epoch,
                             "position": 0, "examples_seen": self.examples_seen,
                             "weights_only": True})
        bar.epoch_done(self.epoch, row)


class _Progress:
    """A Rich progress bar (examples/s, ETA, running training error), or nothing."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled = enabled
        self.total, self.done = total, done
        self._progress = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} ex/s"), TextColumn("train err {task.fields[err]}"),
                TextColumn("{task.fields[test]}"), TimeRemainingColumn())
            self._progress.start()
            self._task = self._progress.add_task("training", total=self.total,
                                                 completed=self.done, rate="-", err="-", test="")
            self._t0, self._n0 = time.perf_counter(), self.done
        return self

    def advance(self, n: int, train_err: float) -> None:
        self.done += n
        if self._progress is not None:
            rate = (self.done - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
            self._progress.update(self._task, advance=n, rate=f"{rate:,.0f}",
                                  err=f"{train_err:.1f}%")

    def epoch_done(self, epoch: int, row: dict[str, Any]) -> None:
        if self._progress is not None and row.get("test_error") != "":
            self._progress.update(self._task,
                                  test=f"epoch {epoch} test {row['test_error']:.2f}%")

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


def run_config(config: RunConfig, *, resume: bool = False, progress: bool = False,
               log: Callable[[str], None] | None = None, data: Dataset | None = None,
               stop_after: int | None = None) -> RunResult:
    """Train a run in its run directory: the one entry point of the CLI, sweeps and tests."""
    from segdend.rundir import default_run_dir, load_run_config, prepare, write_run_info

    run_dir = default_run_dir(config)
    prepare(run_dir, resume=resume, overwrite=config.output.overwrite)
    if resume:
        saved = load_run_config(run_dir)
        if config_fingerprint(saved.to_json()) != config_fingerprint(config.to_json()):
            raise SegdendError(
                f"{run_dir} was started with a different config; resume it with "
                f"`segdend train --resume {run_dir}` and no other model/training options"
            )
    from segdend.engines.registry import resolve_engine_name

    emit = log or (lambda s: None)
    if not resume:  # mark the directory as a run before the slow start-up (data, compilation)
        write_run_info(run_dir, config, resolve_engine_name(config), "starting")
    if data is None:
        data = load_dataset(config, log=emit)
    trainer = Trainer(config, data, run_dir, log=emit, progress=progress)
    latest = run_dir / "checkpoints" / "latest.safetensors"
    if resume and latest.is_file():
        trainer.restore(latest)
    elif resume:
        trainer.log("no checkpoint yet; starting from the beginning")
    write_run_info(run_dir, config, trainer.engine.name, "running",
                   {"data_source": data.source, "train_examples": trainer.n_train})
    trainer.log(f"run {run_dir}: {config.name}, {config.model.mode} mode, layers "
                f"{list(config.model.layers)}, engine {trainer.engine.name}, seed "
                f"{config.training.seed}, {trainer.n_train} training examples")
    try:
        result = trainer.run(stop_after=stop_after)
    except TrainingInterrupted:
        write_run_info(run_dir, config, trainer.engine.name, "interrupted")
        raise
    write_run_info(run_dir, config, trainer.engine.name, result.status)
    return result

