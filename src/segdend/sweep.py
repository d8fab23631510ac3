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
:mod:`segdend.sweep_report`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import platform
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from segdend.config import RunConfig, apply_overrides, config_from_dict
from segdend.errors import SegdendError

__all__ = [
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
    "run_lock",
    "run_state",
    "run_sweep",
    "safe_name",
    "split_top_level",
]

DataFactory = Callable[[RunConfig], Any]
"""Builds a run's :class:`segdend.train.Dataset` from its config (default: MNIST)."""

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")
"""Environment variables that cap the compute threads of one worker process."""

RESERVED_KEYS = {
    "training.seed": "seeds come from --seeds and --seed-start",
    "output.out": "each run's directory is OUT/<condition>/seed<k>; choose OUT with --out",
    "output.overwrite": "a sweep never overwrites runs; finished runs are skipped",
}
MAX_LABEL = 80
log_ = logging.getLogger("segdend.sweep")


# --------------------------------------------------------------------------------------------
# Grids and condition names


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` on ``sep`` outside brackets, braces and quotes.

    ``"[0.1,0.1],[0.2,0.2]"`` gives ``["[0.1,0.1]", "[0.2,0.2]"]``; each part is stripped.
    """
    parts: list[str] = []
    depth, quote, start, i = 0, "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise SegdendError(f"unbalanced {ch!r} at position {i} in {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    if quote:
        raise SegdendError(f"unterminated {quote} quote in {text!r}")
    if depth:
        raise SegdendError(f"unclosed bracket in {text!r}")
    parts.append(text[start:].strip())
    return parts


def parse_grid(item: str) -> tuple[str, list[str]]:
    """Parse one ``--grid section.key=v1,v2,...`` into the key and its value texts.

    Values are split on top-level commas (``training.eta=[0.1,0.1],[0.2,0.2]`` has two
    values) and each must be a valid ``--set`` value for the key (TOML; bare words are strings).
    """
    if "=" not in item:
        raise SegdendError(f"--grid {item!r} must look like section.key=value1,value2,...")
    key, _, raw = item.partition("=")
    key = key.strip()
    try:
        values = split_top_level(raw)
        if any(v == "" for v in values):
            raise SegdendError("a value is empty; separate values with single commas")
        if len(set(values)) != len(values):
            raise SegdendError("a value is listed twice")
        _check_key(key, "")
        for v in values:  # unknown keys and unparsable values, with the config's own messages
            apply_overrides({}, [f"{key}={v}"])
    except SegdendError as err:
        msg = str(err).replace(" in --set ", " in ").removeprefix(": ")
        raise SegdendError(f"--grid {item}: {msg}") from None
    return key, values


def _check_key(key: str, where: str) -> None:
    if key in RESERVED_KEYS:
        raise SegdendError(f"{where}: {key} cannot be set in a sweep ({RESERVED_KEYS[key]})"
                           .removeprefix(": "))


def _override_key(override: str) -> str:
    return override.partition("=")[0].strip()


def _value_label(text: str) -> str:
    from segdend.config import _parse_value

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "_".join(fmt(x) for x in v) or "empty"
        if isinstance(v, dict):
            return "_".join(f"{k}-{fmt(x)}" for k, x in v.items()) or "empty"
        return str(v)

    return fmt(_parse_value(text.strip()))


def safe_name(text: str) -> str:
    """A file-system-safe directory name for ``text`` (letters, digits, ``._=+-,``)."""
    name = re.sub(r"[^A-Za-z0-9._=+,-]+", "_", text).strip("_")
    if not name or name.startswith((".", "-")):
        name = "c" + name
    if len(name) > MAX_LABEL:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        name = name[:MAX_LABEL - 9] + "-" + digest
    return name


def condition_label(assignments: Sequence[tuple[str, str]], *, full_keys: bool = False) -> str:
    """The name of a grid point, e.g. ``eta=0.1_0.1`` or ``eta=0.1_0.1,g_A=0.05``.

    ``assignments`` are ``(section.key, value text)`` pairs; keys are shortened to their field
    name unless ``full_keys``.
    """
    parts = []
    for key, value in assignments:
        short = key if full_keys else key.split(".")[-1]
        parts.append(f"{short}={_value_label(value)}")
    return safe_name(",".join(parts))


# --------------------------------------------------------------------------------------------
# Presets and experiments


@dataclass(frozen=True)
class BaseCondition:
    """One of an experiment's conditions: its preset, overrides and seed offset."""

    preset: str
    overrides: tuple[str, ...] = ()
    seed_offset: int = 0


@dataclass(frozen=True)
class Target:
    """What a sweep expands: a preset, or an experiment's named conditions."""

    name: str
    kind: str  # "preset" or "experiment"
    preset: str
    conditions: dict[str, BaseCondition] = field(default_factory=dict)
    epochs: int | None = None
    """The experiment's number of epochs (used when --epochs is not given)."""


def _experiments_module() -> Any | None:
    try:
        import segdend.experiments as experiments
    except ImportError:
        return None
    except Exception as err:  # noqa: BLE001 - a broken registry must not hide presets
        raise SegdendError(f"cannot load the experiments (segdend.experiments): "
                           f"{type(err).__name__}: {err}") from None
    return experiments if hasattr(experiments, "get_experiment") else None


def _experiment_names(module: Any) -> list[str]:
    for attr in ("list_experiments", "experiment_names", "names"):
        fn = getattr(module, attr, None)
        if callable(fn):
            try:
                names = fn()
                return list(names.keys() if isinstance(names, Mapping) else names)
            except Exception:  # noqa: BLE001 - only used for a hint
                pass
    for attr in ("EXPERIMENTS", "REGISTRY", "experiments"):
        reg = getattr(module, attr, None)
        if isinstance(reg, Mapping):
            return sorted(reg)
    return []


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json.dumps(v) if isinstance(v, str) else _literal(v)
                               for v in value) + "]"
    return repr(value)


def _as_overrides(raw: Any, where: str) -> list[str]:
    if isinstance(raw, Mapping):
        return [f"{k}={_literal(v)}" for k, v in raw.items()]
    if isinstance(raw, str):
        return [raw]
    try:
        return [str(x) for x in raw]
    except TypeError:
        raise SegdendError(f"{where}: conditions must be lists of section.key=value") from None


def _experiment_target(name: str, exp: Any) -> Target:
    """Read an experiment object defensively: ``.conditions`` and ``.preset`` are required;
    ``condition_overrides(c)``, ``preset_for(c)``, ``seed_for(c, i)`` and ``epochs`` are used
    when present."""
    from segdend.presets import DEFAULT_PRESET

    where = f"experiment {name!r}"
    raw = getattr(exp, "conditions", None)
    if not isinstance(raw, Mapping) or not raw:
        raise SegdendError(f"{where} defines no conditions to sweep")
    preset = getattr(exp, "preset", None) or DEFAULT_PRESET
    conditions = {}
    for cname, overrides in raw.items():
        if callable(getattr(exp, "condition_overrides", None)):
            overrides = exp.condition_overrides(cname)
        cpreset = exp.preset_for(cname) if callable(getattr(exp, "preset_for", None)) else preset
        offset = (int(exp.seed_for(cname, 0)) if callable(getattr(exp, "seed_for", None))
                  else 0)
        conditions[str(cname)] = BaseCondition(cpreset, tuple(_as_overrides(overrides, where)),
                                               offset)
    epochs = getattr(exp, "epochs", None)
    return Target(name, "experiment", preset, conditions,
                  epochs if isinstance(epochs, int) and epochs > 0 else None)


def resolve_target(name: str) -> Target:
    """A preset, or an experiment from :mod:`segdend.experiments` when that exists.

    ``preset:NAME`` and ``experiment:NAME`` choose explicitly; a bare name is looked up among
    the presets first. Unknown names raise SegdendError listing what exists.
    """
    from segdend.presets import list_presets

    kind, _, bare = name.partition(":") if ":" in name else ("", "", name)
    if kind not in ("", "preset", "experiment"):
        raise SegdendError(f"{name!r}: the prefix must be preset: or experiment:")
    presets = list_presets()
    if kind in ("", "preset") and bare in presets:
        return Target(bare, "preset", bare)
    module = _experiments_module() if kind in ("", "experiment") else None
    if module is not None:
        try:
            exp = module.get_experiment(bare)
        except (KeyError, LookupError, SegdendError):
            exp = None
        if exp is not None:
            return _experiment_target(bare, exp)
    hint = f"presets: {', '.join(presets)}"
    if module is not None:
        names = _experiment_names(module)
        if names:
            hint += f"; experiments: {', '.join(names)}"
    what = {"preset": "preset", "experiment": "experiment"}.get(kind, "preset or experiment")
    raise SegdendError(f"unknown {what} {bare!r}; {hint}")


# --------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Condition:
    name: str
    preset: str
    base: tuple[str, ...]
    """The experiment condition's overrides (none for a preset)."""
    grid: tuple[str, ...]
    """The grid point's ``section.key=value`` overrides."""
    seed_offset: int = 0
    """Added to the sweep's seed to give the run's ``training.seed`` (experiments only)."""

    @property
    def overrides(self) -> tuple[str, ...]:
        return self.base + self.grid


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its condition, seed, directory and validated config (as JSON)."""

    condition: str
    seed: int
    run_dir: str
    config_json: str

    @property
    def label(self) -> str:
        return f"{self.condition}/seed{self.seed}"

    @cached_property
    def config(self) -> RunConfig:
        return config_from_dict(json.loads(self.config_json))


@dataclass
class SweepPlan:
    target: Target
    out: Path
    conditions: list[Condition]
    seeds: list[int]
    runs: list[RunSpec]
    options: dict[str, Any] = field(default_factory=dict)
    """The sweep's options as given (recorded in sweep.json)."""

    @property
    def max_threads(self) -> int:
        return max((r.config.training.threads for r in self.runs), default=1)


def plan_sweep(target: str, *, seeds: int = 1, seed_start: int = 0,
               sets: Sequence[str] = (), grids: Sequence[str] = (), out: str | Path | None = None,
               config_file: str | Path | None = None, mode: str | None = None,
               epochs: int | None = None, train_examples: int | None = None,
               test_examples: int | None = None, data_dir: str | Path | None = None,
               engine: str | None = None, device: str | None = None) -> SweepPlan:
    """Expand a sweep into its runs, validating every run's config.

    The overrides of a run are applied in this order: the preset, ``config_file``, the
    experiment condition's overrides, the shortcut options (``mode``, ``epochs``, ...), ``sets``,
    the grid point's values, then its seed and directory. Without an experiment this is exactly
    ``segdend train --preset P [--config F] <options> --set ... --set <grid values>``; with one,
    it is the experiment's own order (its ``build_config``), and its ``epochs`` is the default
    of ``epochs``.
    """
    from segdend.config import toml_literal
    from segdend.presets import build_config

    if seeds < 1:
        raise SegdendError(f"--seeds must be >= 1; got {seeds}")
    if seed_start < 0:
        raise SegdendError(f"--seed-start must be >= 0; got {seed_start}")
    tgt = resolve_target(target)
    sets = list(sets)
    for s in sets:
        if "=" not in s:
            raise SegdendError(f"override {s!r} must look like section.key=value")
        _check_key(_override_key(s), f"--set {s}")
    axes = [parse_grid(g) for g in grids]
    keys = [k for k, _ in axes]
    for k in keys:
        if keys.count(k) > 1:
            raise SegdendError(f"--grid {k} is given twice; list all its values in one --grid")
        clash = [s for s in sets if _override_key(s) == k]
        if clash:
            raise SegdendError(f"--set {clash[0]} conflicts with --grid {k}; drop one of them")
    for cname, base in tgt.conditions.items():
        for o in base.overrides:
            _check_key(_override_key(o), f"experiment {tgt.name} condition {cname}")
    shorts = [k.split(".")[-1] for k in keys]
    full_keys = len(set(shorts)) != len(shorts)

    base_conditions: list[tuple[str | None, BaseCondition]] = (
        list(tgt.conditions.items()) or [(None, BaseCondition(tgt.preset))])
    grid_points = list(itertools.product(*[[(k, v) for v in vals] for k, vals in axes]))
    conditions: list[Condition] = []
    for (cname, base), point in itertools.product(base_conditions, grid_points):
        parts = [safe_name(cname)] if cname is not None else []
        if point:
            parts.append(condition_label(point, full_keys=full_keys))
        name = ",".join(parts) if parts else safe_name(tgt.preset)
        conditions.append(Condition(name, base.preset, base.overrides,
                                    tuple(f"{k}={v}" for k, v in point), base.seed_offset))
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):  # values that only differ in unsafe characters
        conditions = [
            replace(c, name=f"{c.name}-{hashlib.sha1(repr(c.overrides).encode()).hexdigest()[:6]}")
            if names.count(c.name) > 1 else c for c in conditions]

    out_dir = Path(out) if out is not None else Path("sweeps") / safe_name(tgt.name)
    out_dir = out_dir.expanduser().resolve()
    shortcuts = {"model.mode": mode, "training.epochs": epochs or tgt.epochs,
                 "training.train_examples": train_examples,
                 "training.test_examples": test_examples,
                 "data.data_dir": str(Path(data_dir).expanduser().resolve()) if data_dir else None,
                 "training.engine": engine, "training.device": device}
    short = [f"{k}={toml_literal(v)}" for k, v in shortcuts.items() if v is not None]
    seed_list = list(range(seed_start, seed_start + seeds))
    runs: list[RunSpec] = []
    for cond in conditions:
        for seed in seed_list:
            run_dir = out_dir / cond.name / f"seed{seed}"
            fixed = [f"training.seed={seed + cond.seed_offset}",
                     f"output.out={json.dumps(str(run_dir))}"]
            overrides = [*cond.base, *short, *sets, *cond.grid, *fixed]
            try:
                cfg = build_config(cond.preset, config_file=config_file, overrides=overrides)
            except SegdendError as err:
                raise SegdendError(f"condition {cond.name}: {err}") from None
            runs.append(RunSpec(cond.name, seed, str(run_dir), cfg.to_json()))
    options = {"target": target, "seeds": seeds, "seed_start": seed_start, "set": sets,
               "grid": list(grids), "out": str(out_dir),
               "config": str(config_file) if config_file else None, **{
                   k.split(".")[-1]: v for k, v in shortcuts.items()}}
    return SweepPlan(tgt, out_dir, conditions, seed_list, runs, options)


# --------------------------------------------------------------------------------------------
# One run: what its directory holds, and the Dask task


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
    if action == "new" and run_dir.is_dir():
        for p in run_dir.iterdir():
            if p.is_file():
                p.unlink()  # only start debris (run_state checked)
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


# --------------------------------------------------------------------------------------------
# The cluster


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


# --------------------------------------------------------------------------------------------
# Running a sweep


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


@dataclass
class SweepResult:
    plan: SweepPlan
    runs: list[dict[str, Any]]
    """One record per run (see :func:`segdend.sweep_report.run_records`)."""
    summary: list[dict[str, Any]]
    """One row per condition, as in summary.csv."""
    files: dict[str, Path]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] != "finished"]


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
    from segdend.sweep_report import write_reports, write_sweep_json

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


def describe_plan(plan: SweepPlan) -> Iterable[str]:
    """Lines describing a plan (for ``--dry-run``)."""
    yield f"{plan.target.kind} {plan.target.name}, out {plan.out}"
    for c in plan.conditions:
        yield f"  {c.name}: preset {c.preset} {' '.join(c.overrides)}".rstrip()
    yield f"  seeds {', '.join(map(str, plan.seeds))}: {len(plan.runs)} runs"
    for spec in plan.runs:
        state, why = run_state(spec.config)
        yield f"  {spec.label}: {state}" + (f" ({why})" if why else "")
