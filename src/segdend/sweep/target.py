"""What a sweep expands: a preset, or an experiment of :mod:`segdend.experiments` (read
defensively, so that presets keep working when the experiments cannot be loaded)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segdend.errors import SegdendError


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
