"""Named configurations: each preset is a TOML file holding only its overrides of the defaults.

A run's config is built in one place, :func:`build_config`, from (in order) the defaults, a
preset, an optional TOML file, the command line's shortcuts (``--mode``, ``--epochs``, ...) and
``--set section.key=value`` overrides; the result is validated once.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from segdend.config import (
    RunConfig,
    apply_overrides,
    config_from_dict,
    deep_merge,
    load_toml,
    toml_literal,
)
from segdend.errors import SegdendError

DEFAULT_PRESET = "paper-h1"


def _preset_files() -> dict[str, Any]:
    root = resources.files("segdend") / "presets"
    return {p.name.removesuffix(".toml"): p for p in root.iterdir() if p.name.endswith(".toml")}


def list_presets() -> dict[str, str]:
    """Preset names and their one-line descriptions, sorted by name."""
    out = {}
    for name, path in sorted(_preset_files().items()):
        data = load_toml(Path(str(path)))
        out[name] = data.get("description", "")
    return out


def preset_dict(name: str) -> dict[str, Any]:
    """The raw overrides of preset ``name`` (raises SegdendError for an unknown name)."""
    files = _preset_files()
    if name not in files:
        raise SegdendError(
            f"unknown preset {name!r}; available: {', '.join(sorted(files))} (see `segdend presets`)"
        )
    data = load_toml(Path(str(files[name])))
    data.setdefault("name", name)
    return data


def build_config(preset: str | None = DEFAULT_PRESET, *, config_file: str | Path | None = None,
                 overrides: list[str] | None = None, **shortcuts: Any) -> RunConfig:
    """Resolve and validate a run's config.

    ``shortcuts`` are ``section.key`` values given by dedicated command-line options, e.g.
    ``{"model.mode": "rate", "training.epochs": 1}``; None values are ignored.
    """
    data: dict[str, Any] = preset_dict(preset) if preset else {}
    if config_file is not None:
        data = deep_merge(data, load_toml(config_file))
    short = [f"{k}={toml_literal(v)}" for k, v in shortcuts.items() if v is not None]
    data = apply_overrides(data, short + list(overrides or []))
    return config_from_dict(data)
