"""The online training loop: epochs, example order, tests, metrics, checkpoints, progress.

The trainer owns time, order and files; engines own the simulation. Every random choice is
decided here from the run seed (:mod:`segdend.rng`): the epoch's example order, its phase
lengths, and the keys of each example's spike streams. Because those are pure functions of
(seed, epoch, position), a run resumed from a checkpoint continues bit for bit, and the
chunking of examples into engine calls changes nothing.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
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
from segdend.engines.base import LAYER_FIELDS, State, TrainBatch, TrainResult
from segdend.engines.registry import get_engine
from segdend.errors import DivergenceError, SegdendError
from segdend.network import Params, check_shapes, feedback_shape, initialise
from segdend.rundir import keep_epoch_checkpoint

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
    n_classes: int | None = None
    """Classes the labels come from (10 for MNIST); None = at least max(label) + 1."""


def check_data(config: RunConfig, data: Dataset) -> None:
    """The network must fit the data: one input per pixel, one output unit per class."""
    n_pixels = int(np.prod(data.train_images.shape[1:]))
    if n_pixels != config.model.n_inputs:
        raise SegdendError(f"the images have {n_pixels} pixels but model.n_inputs is "
                           f"{config.model.n_inputs}; set model.n_inputs = {n_pixels}")
    n_out = config.model.layers[-1]
    top = int(max(np.max(data.train_labels, initial=0), np.max(data.test_labels, initial=0)))
    if (data.n_classes is not None and n_out != data.n_classes) or n_out <= top:
        n = data.n_classes or top + 1
        raise SegdendError(
            f"model.layers ends in an output layer of {n_out} units but the data has {n} "
            f"classes (labels 0-{n - 1}); make the last layer {n}, e.g. model.layers="
            f"{[*config.model.layers[:-1], n]}"
        )


@dataclass
class RunResult:
    run_dir: Path | None
    params: Params
    metrics: list[dict[str, Any]]
    status: str
    engine: str
    losses: dict[str, np.ndarray] = field(default_factory=dict)


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run; it can be resumed.

    Attributes
    ----------
    run_dir : Path or None
    signum : int
        The signal that stopped it (the command exits with 128 + signum).
    saved : bool
        Whether a checkpoint was written just now; otherwise the run continues from its last
        checkpoint (none when it stopped during start-up or before the first one).
    started : bool
        Whether training had begun (run.json written); False when it stopped during start-up.
    """

    def __init__(self, run_dir: Path | None, signum: int = signal.SIGINT, *, saved: bool = True,
                 started: bool = True):
        super().__init__(run_dir)
        self.run_dir, self.signum, self.saved, self.started = run_dir, int(signum), saved, started

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals that stop a run cleanly (SIGTERM: what cluster schedulers send before a kill)."""


@contextlib.contextmanager
def handle_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``handler`` for the duration (main thread only)."""
    old: dict[int, Any] = {}
    try:
        for sig in STOP_SIGNALS:
            old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (e.g. a Dask worker)
        pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_test_threads(config: RunConfig) -> int:
    """``training.test_threads``, or for 0 all available cores (capped by NUMBA_NUM_THREADS
    or OMP_NUM_THREADS when set, as in a sweep's worker)."""
    asked = config.training.test_threads
    if asked:
        return asked
    n = available_cores()
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            n = min(n, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    return max(1, n)


def with_threads(config: RunConfig, threads: int, engine: str) -> RunConfig:
    """``config`` with ``training.threads`` and the resolved engine name replaced."""
    training = config.training.model_copy(update={"threads": threads, "engine": engine})
    return config.model_copy(update={"training": training})


def clamp_count(name: str, asked: int | None, available: int, what: str) -> tuple[int, str | None]:
    """``asked`` (None = all) capped at ``available``, and a line saying so when it was."""
    if asked is None or asked <= available:
        return (available if asked is None else asked), None
    return available, (f"{name}={asked} is more than the {available:,} {what}; "
                       f"using all {available:,}")


def weight_count(model) -> int:
    """Float64 numbers in a network's weights, biases and feedback weights."""
    sizes = (model.n_inputs, *model.layers)
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    for m in range(len(model.layers) - 1):
        rows, cols = feedback_shape(model, m)
        n += 2 * rows * cols  # Y and its mask
    return n


def check_memory(model, copies: int = 6) -> None:
    """Refuse a network whose weights (with the trainer's working copies) cannot fit in this
    machine's memory, naming the size, instead of failing with a MemoryError later."""
    need = 8 * copies * weight_count(model)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if need > total:
        raise SegdendError(
            f"model.layers={list(model.layers)} on {model.n_inputs} inputs needs about "
            f"{need / 1e9:,.1f} GB of memory ({weight_count(model):,} weights, with working "
            f"copies) but this machine has {total / 1e9:,.1f} GB; choose smaller layers"
        )


def load_dataset(config: RunConfig, log: Callable[[str], None] = lambda s: None) -> Dataset:
    """Load MNIST from the config's sources and apply the validation split."""
    from segdend.data import load_mnist, split_validation

    mnist = load_mnist(config.data.data_dir, cache_dir=config.data.cache_dir,
                       download=config.data.download, log=log)
    val_images = val_labels = None
    if config.training.validation:
        mnist, (val_images, val_labels) = split_validation(mnist, config.training.validation)
    return Dataset(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels,
                   val_images, val_labels, mnist.source, n_classes=10)


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
            for purpose in (rng.TRAIN_SPIKES, rng.PLATEAU, rng.FEEDBACK_NOISE, rng.BURST)]
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
    for l, layer in enumerate(state.layers):
        for name in LAYER_FIELDS:
            a = getattr(layer, name)
            if not np.all(np.isfinite(a)) or np.max(np.abs(a), initial=0.0) > LIMIT:
                if name == "v":
                    return f"somatic voltages of layer {l - 1}"
                return f"neuron state {name}{l}"
    return None


class _Cancelled(Exception):
    """A background test was told to stop (the run was interrupted)."""


@dataclass
class _PendingTest:
    """The full test of one epoch's weights, run while the next epoch trains.

    ``meta`` holds the epoch's training columns (everything of its metrics row but the test);
    ``params`` is a snapshot of the weights after that epoch. Both go into checkpoints until
    the test is done, so a resumed run tests them again and its metrics stay identical.
    """

    meta: dict[str, Any]
    params: Params
    thread: threading.Thread | None = None
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    def start(self, work: Callable[[Callable[[int], None]], dict[str, Any]],
              on_chunk: Callable[[int], None]) -> None:
        def tick(n: int) -> None:
            if self.cancelled.is_set():
                raise _Cancelled
            on_chunk(n)

        def body() -> None:
            t0 = time.perf_counter()
            try:
                self.result = work(tick)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self.error = err
            self.seconds = time.perf_counter() - t0

        self.thread = threading.Thread(target=body, name="segdend-test", daemon=True)
        self.thread.start()

    def wait(self) -> dict[str, Any]:
        assert self.thread is not None
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Trainer:
    """One run: config + data + engine + run directory (None for in-memory runs)."""

    def __init__(self, config: RunConfig, data: Dataset, run_dir: Path | None = None,
                 params: Params | None = None, log: Callable[[str], None] | None = None,
                 progress: bool = False, console: Any = None):
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
        self.pending: _PendingTest | None = None
        self.fingerprint = config_fingerprint(config.to_json())
        self.progress = progress
        self.console = console
        self._log = log or (lambda s: None)
        self._stop = False
        self._signal = int(signal.SIGINT)
        self._dirty = False  # progress since the last checkpoint
        tr = config.training
        self.n_train, self.clamped_train = clamp_count(
            "training.train_examples", tr.train_examples, len(data.train_labels),
            "training images")
        self.n_test, self.clamped_test = clamp_count(
            "training.test_examples", tr.test_examples, len(data.test_labels), "test images")
        # Tests on all cores (Numba's test is parallel over images); overlapped with training
        # on all but the core that trains. The reference engine is used as is; torch's thread
        # count is process-wide, so it tests in order on its own engine.
        name = self.engine.name
        threads = resolve_test_threads(config)
        self.test_engine = (get_engine(with_threads(config, threads, name))
                            if name == "numba" else self.engine)
        self.overlap = tr.overlap_test and name in ("numba", "reference")
        self.background_engine = (get_engine(with_threads(config, max(1, threads - 1), name))
                                  if self.overlap else None)

    # -- logging and files ------------------------------------------------------------------

    def log(self, line: str) -> None:
        self._log(line)
        if self.run_dir is not None:
            try:
                with open(self.run_dir / "log.txt", "a", encoding="utf-8") as f:
                    f.write(time.strftime("%H:%M:%S ") + line + "\n")
            except OSError as err:
                raise SegdendError(f"cannot write {self.run_dir / 'log.txt'}: "
                                   f"{err.strerror or err}") from None

    def _checkpoint_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"params.{k}": v for k, v in self.params.arrays().items()}
        arrays.update({f"state.{k}": v for k, v in self.state.to_arrays().items()})
        arrays.update({f"partial.{k}": v for k, v in self.partial.items()})
        if self.pending is not None:
            arrays.update({f"pending.{k}": v for k, v in self.pending.params.arrays().items()})
        return arrays

    def save(self, name: str = "latest") -> None:
        if self.run_dir is None:
            self._dirty = False
            return
        meta = {"config_fingerprint": self.fingerprint, "epoch": self.epoch,
                "position": self.position, "examples_seen": self.examples_seen,
                "epoch_seconds": self.epoch_seconds, "metrics": self.metrics,
                "quick_tests": self.quick}
        if self.pending is not None:
            meta["pending_test"] = self.pending.meta
        save_checkpoint(self.run_dir / "checkpoints" / f"{name}.safetensors",
                        self._checkpoint_arrays(), meta)
        self._dirty = False

    def restore(self, path: Path) -> None:
        arrays, meta = load_checkpoint(path, fingerprint=self.fingerprint)
        if int(meta["epoch"]) > self.config.training.epochs:
            done = int(meta["epoch"])
            raise SegdendError(
                f"{self.run_dir} has already trained {plural(done, 'epoch')}; "
                f"--epochs must be at least {done} (got {self.config.training.epochs})"
            )

        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        self.params = Params.from_arrays(group("params."))
        check_shapes(self.config.model, self.params)
        self.state = State.from_arrays(group("state."))
        self.partial = group("partial.")
        self.epoch, self.position = int(meta["epoch"]), int(meta["position"])
        self.epoch_seconds = float(meta["epoch_seconds"])
        self.metrics, self.quick = list(meta["metrics"]), list(meta.get("quick_tests", []))
        if meta.get("pending_test") is not None:  # its test is run again: same numbers
            self.pending = _PendingTest(dict(meta["pending_test"]),
                                        Params.from_arrays(group("pending.")))
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

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        """First Ctrl-C/SIGTERM: stop at the end of the current chunk with a checkpoint; at
        once when nothing was trained since the last checkpoint (e.g. during the first
        chunk's compilation), or on a second signal."""
        self._signal = int(signum)
        if self._stop or not self._dirty:
            if self.pending is not None:
                self.pending.cancelled.set()
            raise TrainingInterrupted(self.run_dir, signum, saved=False)
        self._stop = True

    def run(self, stop_after: int | None = None) -> RunResult:
        """Train to ``training.epochs`` (or until ``stop_after`` examples, for tests)."""
        cfg = self.config.training
        bar = _Progress(self.progress, cfg.epochs * self.n_train, self.examples_seen,
                        epochs=cfg.epochs, n_train=self.n_train, console=self.console)
        try:
            with handle_stop_signals(self._on_signal), bar:
                if self.pending is not None and self.pending.thread is None:
                    self._start_pending(bar)  # resumed while an epoch's test was pending
                while self.epoch < cfg.epochs:
                    self._run_epoch(bar, stop_after)
                    if stop_after is not None and self.examples_seen >= stop_after:
                        break
                if self.pending is not None:
                    self._settle(bar)
                    self.save()
        finally:
            if self.pending is not None:  # interrupted or failed: stop the background test
                self.pending.cancelled.set()
        status = "finished" if self.epoch >= cfg.epochs else "stopped"
        return RunResult(self.run_dir, self.params, self.metrics, status, self.engine.name)

    def _run_epoch(self, bar: _Progress, stop_after: int | None) -> None:
        cfg = self.config.training
        order, lengths = epoch_plan(self.config, self.epoch, self.n_train)
        n_hidden = self.config.model.n_hidden_layers
        if self.position == 0 or not self.partial:
            self.partial = {"loss_out": np.zeros(0), "loss_hidden": np.zeros((0, n_hidden)),
                            "correct": np.zeros(0, dtype=np.uint8)}
        bar.start_epoch(self.epoch)
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
            self._dirty = True
            now = time.perf_counter()
            self.epoch_seconds += now - t0
            t0 = now
            bar.advance(len(positions), 100.0 * (1 - self.partial["correct"].mean()))
            if self.pending is not None and self.pending.done:
                self._settle(bar)
            if cfg.quick_test_every and self.examples_seen % cfg.quick_test_every == 0:
                self._quick_test()
            if self._stop:
                if self.pending is not None:
                    self.pending.cancelled.set()  # the checkpoint keeps it; resume retests
                self.save()
                self.log(f"interrupted at epoch {self.epoch + 1}, example {self.position}; "
                         "checkpoint written")
                raise TrainingInterrupted(self.run_dir, self._signal, saved=True)
            if cfg.checkpoint_every and self.examples_seen % cfg.checkpoint_every == 0:
                self.save()
            if stop_after is not None and self.examples_seen >= stop_after:
                if self.position < self.n_train:
                    self.save()
                    return
            t0 = time.perf_counter()
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
        if self.pending is not None:
            self._settle(None)  # one parallel test at a time, rows in epoch order
        n = min(self.config.training.quick_test_examples, len(self.data.test_labels))
        keys = test_keys(self.config, (1, self.examples_seen), n)
        err = test_error(self.test_engine, self.params, self.data.test_images[:n],
                         self.data.test_labels[:n], keys)
        self.quick.append({"examples_seen": self.examples_seen, "test_error": err,
                           "test_images": n})
        self.log(f"quick test after {self.examples_seen} examples: {err:.2f}% error on {n} images")
        self.write_metrics()

    # -- the end of an epoch: its test (in order or in the background), row and files ---------

    def _epoch_test(self, engine, params: Params, epoch: int, tested: bool,
                    on_chunk: Callable[[int], None] | None) -> dict[str, Any]:
        """The test columns of epoch ``epoch``'s row (0-based): full test(s), validation."""
        cfg = self.config.training
        out: dict[str, Any] = {"test_error": "", "test_error_sd": ""}
        if tested:
            errors = []
            for r in range(cfg.test_repeats):
                keys = test_keys(self.config, (0, epoch, r), self.n_test)
                errors.append(test_error(engine, params, self.data.test_images[:self.n_test],
                                         self.data.test_labels[:self.n_test], keys, on_chunk))
            out["test_error"] = float(np.mean(errors))
            out["test_error_sd"] = float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0
        if self.data.validation_images is not None:
            keys = test_keys(self.config, (2, epoch), len(self.data.validation_labels))
            out["validation_error"] = test_error(engine, params, self.data.validation_images,
                                                 self.data.validation_labels, keys, on_chunk)
        return out

    def _test_size(self, tested: bool) -> int:
        n = self.n_test * self.config.training.test_repeats if tested else 0
        if self.data.validation_labels is not None:
            n += len(self.data.validation_labels)
        return n

    def _finish_epoch(self, order: np.ndarray, bar: _Progress) -> None:
        cfg = self.config.training
        if self.pending is not None:
            self._settle(bar)  # the previous epoch's row comes first
        t0 = time.perf_counter()
        last = self.epoch + 1 == cfg.epochs
        tested = (self.epoch + 1) % cfg.test_every == 0 or last
        train: dict[str, Any] = {
            "train_error": 100.0 * (1.0 - float(self.partial["correct"].mean())),
            "loss_out": float(self.partial["loss_out"].mean())}
        for m in range(self.config.model.n_hidden_layers):
            train[f"loss_hidden{m}"] = float(self.partial["loss_hidden"][:, m].mean())
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
        meta = {"epoch": self.epoch + 1, "examples_seen": self.examples_seen, "tested": tested,
                "train": train, "seconds": self.epoch_seconds + time.perf_counter() - t0}
        self.epoch += 1
        self.position = 0
        self.epoch_seconds = 0.0
        self.partial = {}
        self.pending = _PendingTest(meta, self.params.copy())
        if self.overlap and not last and self._test_size(tested):
            self._start_pending(bar)  # epoch k's test runs while epoch k + 1 trains
            self.save()
        else:
            self._settle(bar, now=True)
            self.save()

    def _start_pending(self, bar: _Progress) -> None:
        p = self.pending
        assert p is not None
        epoch, tested = int(p.meta["epoch"]), bool(p.meta["tested"])
        on_chunk = bar.start_test(epoch, self._test_size(tested))
        engine = self.background_engine or self.test_engine
        p.start(lambda tick: self._epoch_test(engine, p.params, epoch - 1, tested, tick),
                on_chunk)

    def _settle(self, bar: _Progress | None, now: bool = False) -> None:
        """Finish the pending epoch: wait for its test (or, with ``now``, run it here on all
        cores), then append its metrics row, log it and keep its weights."""
        p = self.pending
        assert p is not None
        epoch, tested = int(p.meta["epoch"]), bool(p.meta["tested"])
        if now:
            t0 = time.perf_counter()
            on_chunk = bar.start_test(epoch, self._test_size(tested)) if bar else None
            result = self._epoch_test(self.test_engine, p.params, epoch - 1, tested, on_chunk)
            p.seconds = time.perf_counter() - t0
        else:
            if p.thread is None:
                self._start_pending(bar or _Progress(False, 0, 0))
            result = p.wait()
        row: dict[str, Any] = {"epoch": epoch, "examples_seen": p.meta["examples_seen"],
                               **result, **p.meta["train"],
                               "seconds": round(float(p.meta["seconds"]) + p.seconds, 3)}
        self.metrics.append(row)
        self.pending = None
        self.log("epoch {epoch}: test error {test}, train error {train:.2f}%, {secs:.1f} s".format(
            epoch=epoch, secs=row["seconds"], train=row["train_error"],
            test=f"{row['test_error']:.2f}%" if row["test_error"] != "" else "(not tested)"))
        self.write_metrics()
        out = self.config.output
        if self.run_dir is not None and keep_epoch_checkpoint(epoch, self.config.training.epochs,
                                                              out.keep_checkpoints):
            save_checkpoint(self.run_dir / "checkpoints" / f"epoch_{epoch:03d}.safetensors",
                            {f"params.{k}": v for k, v in p.params.arrays().items()},
                            {"config_fingerprint": self.fingerprint, "epoch": epoch,
                             "position": 0, "examples_seen": p.meta["examples_seen"],
                             "weights_only": True})
        if bar is not None:
            bar.epoch_done(epoch, row)


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


class RecentRate:
    """Examples per second over the last ``window`` seconds, not since the start (which
    would include the first run's compilation and every slow phase since)."""

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.perf_counter):
        self.window, self.clock = window, clock
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def update(self, done: int) -> float | None:
        """Record ``done`` examples so far; the recent rate, or None before two samples."""
        now = self.clock()
        self.samples.append((now, done))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        return (done - d0) / (now - t0) if now > t0 else None


class _Progress:
    """A Rich progress display on the run's console (the one its log lines go to, so they
    print above the bar): ``epoch 3/60`` with examples/s over the last 30 s, the running
    training error and the ETA, plus a line for each test while it runs; or nothing."""

    def __init__(self, enabled: bool, total: int, done: int, *, epochs: int = 1,
                 n_train: int = 1, console: Any = None):
        self.enabled = enabled
        self.total, self.done = total, done
        self.epochs, self.n_train = epochs, n_train
        self.console = console
        self.rate = RecentRate()
        self._progress = None
        self._tests: dict[int, Any] = {}

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            console = self.console or Console(stderr=True)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console)
            self._progress.start()
            self._task = self._progress.add_task(self._describe(self.done // max(self.n_train, 1)),
                                                 total=self.total, completed=self.done,
                                                 info="")
            self.rate.update(self.done)
        return self

    def _describe(self, epoch: int) -> str:
        return f"epoch {min(epoch + 1, self.epochs)}/{self.epochs}"

    def start_epoch(self, epoch: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=self._describe(epoch))

    def advance(self, n: int, train_err: float) -> None:
        self.done += n
        if self._progress is not None:
            rate = self.rate.update(self.done)
            shown = "-" if rate is None else f"{rate:,.0f}"
            self._progress.update(self._task, advance=n,
                                  info=f"{shown} ex/s  train err {train_err:.1f}%")

    def start_test(self, epoch: int, total: int) -> Callable[[int], None]:
        """Show the test of ``epoch``'s weights; returns its per-chunk callback (any thread)."""
        if self._progress is None or total == 0:
            return lambda n: None
        progress = self._progress
        task = progress.add_task(f"test of epoch {epoch}", total=total, info="images")
        self._tests[epoch] = task
        return lambda n: progress.update(task, advance=n)

    def epoch_done(self, epoch: int, row: dict[str, Any]) -> None:
        if self._progress is not None:
            task = self._tests.pop(epoch, None)
            if task is not None:
                self._progress.remove_task(task)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


def run_config(config: RunConfig, *, resume: bool = False, progress: bool = False,
               log: Callable[[str], None] | None = None, data: Dataset | None = None,
               stop_after: int | None = None, console: Any = None) -> RunResult:
    """Train a run in its run directory: the one entry point of the CLI, sweeps and tests.

    Everything is checked before the run directory changes: the config and its sizes, the
    output location (created, writable, not in use by another process: it is locked for
    the whole run), what the directory holds (:func:`segdend.lifecycle.run_state`: ``start`` a
    new run, or for ``resume`` the run there), the data, and the checkpoint. An old run that
    is replaced (with ``output.overwrite``, or one that never trained) is removed only then,
    when the new one starts. Ctrl-C
    or SIGTERM during start-up stops at once (:class:`TrainingInterrupted` with ``started``
    False); during training, at the end of the current chunk with a checkpoint.
    """
    from segdend.lifecycle import Outcome, clear_run, run_state
    from segdend.rundir import claim, default_run_dir, write_run_info

    check_memory(config.model)
    emit = log or (lambda s: None)
    run_dir = default_run_dir(config)
    started = False

    def startup_stop(signum, frame) -> None:  # noqa: ARG001
        raise TrainingInterrupted(run_dir, signum, saved=False, started=started)

    with handle_stop_signals(startup_stop), claim(run_dir):
        state = run_state(run_dir, config, intent="resume" if resume else "start",
                          overwrite=config.output.overwrite).check()
        if data is None:
            data = load_dataset(config, log=emit)
        check_data(config, data)
        trainer = Trainer(config, data, run_dir, log=emit, progress=progress, console=console)
        latest = run_dir / "checkpoints" / "latest.safetensors"
        if state.resumes and latest.is_file():
            trainer.restore(latest)
        elif state.resumes:
            trainer.log("no checkpoint yet; starting from the beginning")
        if state.outcome is Outcome.REPLACE:
            clear_run(run_dir)
        write_run_info(run_dir, config, trainer.engine.name, "running",
                       {"data_source": data.source, "train_examples": trainer.n_train})
        started = True
        trainer.log(f"run {run_dir}: {config.name}, {config.model.mode} mode, layers "
                    f"{list(config.model.layers)}, engine {trainer.engine.name}, seed "
                    f"{config.training.seed}, {trainer.n_train} training examples")
        for line in (trainer.clamped_train, trainer.clamped_test):
            if line:
                trainer.log(line)
        try:
            result = trainer.run(stop_after=stop_after)
        except TrainingInterrupted as stop:
            write_run_info(run_dir, config, trainer.engine.name, "interrupted")
            raise TrainingInterrupted(run_dir, stop.signum, saved=stop.saved) from None
        except DivergenceError:
            raise
        except (SegdendError, OSError, MemoryError) as err:
            with contextlib.suppress(SegdendError, OSError):  # the disk may be full
                write_run_info(run_dir, config, trainer.engine.name, "failed",
                               {"error": str(err) or type(err).__name__})
            raise
        write_run_info(run_dir, config, trainer.engine.name, result.status)
        return result
