"""Choosing an engine for a config."""

from __future__ import annotations

from segdend.config import RunConfig
from segdend.errors import SegdendError

ENGINES = ("reference", "numba", "torch")


def unsupported_reason(config: RunConfig, name: str) -> str | None:
    """Why engine ``name`` cannot run ``config``, or None when it can."""
    if name == "reference":
        return None
    if name == "numba":
        from segdend.engines.numba_engine import unsupported_reason as why
    elif name == "torch":
        from segdend.engines.torch_engine import unsupported_reason as why
    else:
        return f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}"
    return why(config)


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
        try:
            if unsupported_reason(config, name) is None:
                return name
        except ImportError:
            continue
    return "reference"


def get_engine(config: RunConfig):
    """An engine instance for ``config`` (see :func:`resolve_engine_name`)."""
    name = resolve_engine_name(config)
    if name == "numba":
        from segdend.engines.numba_engine import NumbaEngine
        return NumbaEngine(config)
    if name == "torch":
        from segdend.engines.torch_engine import TorchEngine
        return TorchEngine(config)
    from segdend.engines.reference import ReferenceEngine
    return ReferenceEngine(config)
