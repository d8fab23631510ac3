"""segdend: deep learning with segregated dendrites (Guerguiev, Lillicrap & Richards, eLife 2017).

The package face is lazy: ``import segdend`` (and so ``import segdend.config``) loads nothing
but the version; ``segdend.Network`` and the other names below are imported from their
modules on first use (PEP 562), so a lower floor never pulls in the trainer through here.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("segdend")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "Network": "segdend.api",
    "RunConfig": "segdend.config",
    "SegdendError": "segdend.errors",
    "build_config": "segdend.presets",
}
"""Public name -> the module that defines it."""

if TYPE_CHECKING:
    from segdend.api import Network
    from segdend.config import RunConfig
    from segdend.errors import SegdendError
    from segdend.presets import build_config

__all__ = ["Network", "RunConfig", "SegdendError", "build_config", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once resolved, a plain attribute
        return value
    raise AttributeError(f"module 'segdend' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
