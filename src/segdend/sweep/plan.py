"""The plan: conditions (the experiment's, times the grid points) x seeds, each run with its
directory ``OUT/<condition>/seed<k>`` and its validated config."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from segdend.config import RunConfig, config_from_dict
from segdend.errors import SegdendError
from segdend.sweep.grid import _check_key, _override_key, condition_label, parse_grid, safe_name
from segdend.sweep.state import run_state
from segdend.sweep.target import BaseCondition, Target, resolve_target


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


def describe_plan(plan: SweepPlan) -> Iterable[str]:
    """Lines describing a plan (for ``--dry-run``)."""
    yield f"{plan.target.kind} {plan.target.name}, out {plan.out}"
    for c in plan.conditions:
        yield f"  {c.name}: preset {c.preset} {' '.join(c.overrides)}".rstrip()
    yield f"  seeds {', '.join(map(str, plan.seeds))}: {len(plan.runs)} runs"
    for spec in plan.runs:
        state, why = run_state(spec.config)
        yield f"  {spec.label}: {state}" + (f" ({why})" if why else "")
