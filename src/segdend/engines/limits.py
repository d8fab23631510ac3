"""What each engine cannot run, decided from the config alone, without importing the engine.

Every engine's ``unsupported_reason(config) -> str | None`` (the declared contract,
:data:`segdend.engines.registry.ENGINES`, points at these): None when the engine can run
``config``, else a sentence saying why not. They need only the config and how far its
draws reach into the random streams' counters (:func:`segdend.model.stream_problem`, one
wording for every engine), so choosing an engine loads neither numba nor torch; the torch
engine's check imports torch only for a CUDA device. The engine modules re-export their
function as ``unsupported_reason`` and refuse such a config when built.
"""

from __future__ import annotations

from segdend.config import RunConfig
from segdend.model import stream_problem


def reference_unsupported_reason(config: RunConfig) -> str | None:
    """The reference engine runs every valid config."""
    return None


def numba_unsupported_reason(config: RunConfig) -> str | None:
    """Why :class:`~segdend.engines.numba_engine.NumbaEngine` cannot run ``config``, or None
    when it can."""
    if config.training.dtype != "float64":
        return "it computes in float64 only (training.dtype=float32 runs on the torch engine)"
    return stream_problem(config)


def torch_unsupported_reason(config: RunConfig) -> str | None:
    """Why the torch engine cannot run ``config``, or None when it can."""
    spec = config.training.device
    if spec.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            from segdend.engines._torch_core import cuda_missing_message

            return cuda_missing_message(spec)
    return stream_problem(config)
