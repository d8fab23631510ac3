"""What each engine cannot run, decided from the config alone, without importing the engine.

Every engine's ``unsupported_reason(config) -> str | None`` (the declared contract,
:data:`segdend.engines.registry.ENGINES`, points at these): None when the engine can run
``config``, else a sentence saying why not. They need only the config, the random streams'
field widths (:mod:`segdend.rng`) and which feedback variants draw (:mod:`segdend.feedback`),
so choosing an engine loads neither numba nor torch; the torch engine's check imports torch
only for a CUDA device. The engine modules re-export their function as
``unsupported_reason`` and refuse such a config when built.
"""

from __future__ import annotations

from segdend import rng
from segdend.config import RunConfig
from segdend.feedback import FEEDBACK_VARIANTS


def reference_unsupported_reason(config: RunConfig) -> str | None:
    """The reference engine runs every valid config."""
    return None


def numba_unsupported_reason(config: RunConfig) -> str | None:
    """Why :class:`~segdend.engines.numba_engine.NumbaEngine` cannot run ``config``, or None
    when it can."""
    model = config.model
    sizes = (model.n_inputs, *model.layers)
    if config.training.dtype != "float64":
        return "it computes in float64 only (training.dtype=float32 runs on the torch engine)"
    if len(sizes) > rng.MAX_LAYERS:
        return (f"{len(model.layers)} layers exceed the random streams' layer field "
                f"({rng.MAX_LAYERS - 1} layers at most)")
    if max(sizes) > rng.MAX_UNITS:
        return f"a layer of {max(sizes)} units exceeds the random streams' unit field"
    variant = FEEDBACK_VARIANTS.get(model.feedback)
    if variant is not None and variant.draws:
        for m in range(model.n_hidden_layers):
            source = sizes[-1] if model.feedback_wiring == "broadcast" else sizes[m + 2]
            if sizes[m + 1] * source > rng.MAX_UNITS:
                return "a feedback matrix too large for the noise stream's unit field"
    if config.phases.test_length >= rng.MAX_STEPS:
        return "phases.test_length exceeds the random streams' step field"
    return None


def torch_unsupported_reason(config: RunConfig) -> str | None:
    """Why the torch engine cannot run ``config``, or None when it can."""
    model, phases = config.model, config.phases
    spec = config.training.device
    if spec.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            from segdend.engines._torch_core import cuda_missing_message

            return cuda_missing_message(spec)
    if len(model.layers) >= rng.MAX_LAYERS:
        return (f"the spike counters hold at most {rng.MAX_LAYERS - 1} layers above the input; "
                f"got {len(model.layers)}")
    if max(model.n_inputs, *model.layers) > rng.MAX_UNITS:
        return f"the spike counters hold at most {rng.MAX_UNITS} units per layer"
    longest = max(phases.test_length, phases.min_length)
    if longest >= rng.MAX_STEPS:
        return f"the spike counters hold phases of at most {rng.MAX_STEPS - 1} steps"
    return None
