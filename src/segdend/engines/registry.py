"""Choosing an engine for a config, from the engines' declared contracts.

:data:`ENGINES` is the one table of engines: each an :class:`~segdend.engines.base.EngineInfo`
saying what it records, which modes it runs, whether it trains populations and why it cannot
run a config. Choosing an engine (:func:`resolve_engine_name`) and asking what it records
(``experiments.runner.engine_records``) read the table; neither builds an engine, and
importing this module loads neither numba nor torch (an engine's module is imported when it
is built, or when ``auto`` checks that it imports at all).
"""

from __future__ import annotations

from segdend.config import RunConfig
from segdend.engines.base import Engine, EngineInfo
from segdend.engines.limits import (
    numba_unsupported_reason,
    reference_unsupported_reason,
    torch_unsupported_reason,
)
from segdend.errors import SegdendError


def _reference():
    from segdend.engines.reference import ReferenceEngine
    return ReferenceEngine


def _numba():
    from segdend.engines.numba_engine import NumbaEngine
    return NumbaEngine


def _torch():
    from segdend.engines.torch_engine import TorchEngine
    return TorchEngine


ENGINES: dict[str, EngineInfo] = {
    info.name: info for info in (
        EngineInfo("reference", _reference, records=("bp_angle", "ubar_f"),
                   unsupported_reason=reference_unsupported_reason),
        EngineInfo("numba", _numba, records=("bp_angle", "ubar_f"),
                   unsupported_reason=numba_unsupported_reason),
        EngineInfo("torch", _torch, records=("bp_angle",),
                   unsupported_reason=torch_unsupported_reason, populations=True),
    )
}
"""Every engine by its ``training.engine`` name (``auto`` picks among them, see
:func:`resolve_engine_name`)."""


def engine_info(name: str) -> EngineInfo:
    """The declared contract of engine ``name``."""
    try:
        return ENGINES[name]
    except KeyError:
        raise SegdendError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}"
                           ) from None


def unsupported_reason(config: RunConfig, name: str) -> str | None:
    """Why engine ``name`` cannot run ``config``, or None when it can."""
    info = ENGINES.get(name)
    if info is None:
        return f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}"
    if config.model.mode not in info.modes:
        return f"it runs model.mode {' or '.join(info.modes)} only"
    missing = [r for r in config.output.record if r not in info.records]
    if missing:  # never train a run that silently lacks a recording it asked for
        makers = [n for n, i in ENGINES.items() if all(r in i.records for r in missing)]
        return (f"engine {name} does not record {', '.join(missing)} (output.record); "
                f"use training.engine={' or '.join(makers) or 'auto'}")
    return info.unsupported_reason(config)


def resolve_engine_name(config: RunConfig) -> str:
    """The engine a run uses: the one asked for, or for ``auto`` the fastest that fits
    (Numba on CPU, PyTorch on CUDA or for float32, the reference otherwise)."""
    asked = config.training.engine
    if asked != "auto":
        reason = unsupported_reason(config, asked)
        if reason is not None:
            raise SegdendError(f"training.engine={asked} cannot run this config: {reason}")
        return asked
    device = config.training.device
    if device.startswith("cuda"):  # the GPU was asked for: only the torch engine runs there
        reason = unsupported_reason(config, "torch")
        if reason is not None:
            raise SegdendError(reason)
        return "torch"
    order = ("numba", "torch")
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            order = ("torch", "numba")
    for name in order:
        if unsupported_reason(config, name) is None and ENGINES[name].available():
            return name
    return "reference"


def get_engine(config: RunConfig) -> Engine:
    """An engine instance for ``config`` (see :func:`resolve_engine_name`)."""
    return ENGINES[resolve_engine_name(config)].build(config)
