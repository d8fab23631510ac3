"""The network a config describes, derived once: what every engine reads (MODEL.md 1-7).

:func:`describe` turns a validated :class:`~segdend.config.RunConfig` into a frozen
:class:`ModelDescription`: the layer sizes, which layer's signal reaches each hidden layer's
apical dendrite, the learning rates times their ``P`` scaling, whether the network is fully
segregated (``g_A = 0``, the engines' fast path), the learning rule and feedback variant
resolved from their registries, the derived constants of :mod:`segdend.dynamics` and how
far the random streams are drawn. Every engine builds it once, when it is built, and reads
these values from it instead of deriving them from the config in its own form; the config
stays the single source of truth, the description its one reading.

The random streams' limits have one wording, :func:`segdend.rng.counter_problem`; the
config checks the layers and units it fixes, :func:`stream_problem` everything the model
draws (the engines' ``unsupported_reason``).
"""

from __future__ import annotations

from dataclasses import dataclass

from segdend import feedback, plasticity, rng
from segdend.config import ModelConfig, RunConfig
from segdend.dynamics import Constants


def feedback_source(model: ModelConfig, m: int) -> int:
    """The layer (index in ``sizes``, 0 the input) whose signal reaches hidden layer m's
    apical dendrite (MODEL.md 1): the output layer with broadcast wiring, layer m+1 (index
    ``m + 2``) layer-wise. The one place the wiring is read."""
    return len(model.layers) if model.feedback_wiring == "broadcast" else m + 2


@dataclass(frozen=True)
class StreamExtent:
    """How far a config's draws reach into a spike counter's fields (:mod:`segdend.rng`):
    the highest ``layer`` index (the output layer; 0 is the input), the most draws of one
    layer in one step (``units``: the widest layer, or a feedback matrix whose variant draws
    noise, ``rng.layer_normals(key, 0, m + 1, Y[m].size)``) and the longest phase the
    config fixes (``steps``: the test phase or the shortest training phase)."""

    layers: int
    units: int
    steps: int

    def problem(self) -> str | None:
        """Why the draws do not fit the counters (:func:`segdend.rng.counter_problem`)."""
        return rng.counter_problem(self.layers, self.units, self.steps)


def stream_extent(config: RunConfig) -> StreamExtent:
    """The :class:`StreamExtent` of ``config`` (an unknown feedback variant draws nothing
    here; it is refused when an engine is built)."""
    model = config.model
    sizes = (model.n_inputs, *model.layers)
    units = max(sizes)
    variant = feedback.FEEDBACK_VARIANTS.get(model.feedback)
    if variant is not None and variant.draws:
        for m in range(model.n_hidden_layers):
            units = max(units, sizes[m + 1] * sizes[feedback_source(model, m)])
    return StreamExtent(len(model.layers), units,
                        max(config.phases.test_length, config.phases.min_length))


def stream_problem(config: RunConfig) -> str | None:
    """Why ``config``'s draws do not fit the random streams' counters, or None."""
    return stream_extent(config).problem()


@dataclass(frozen=True, eq=False)
class ModelDescription:
    """The network of a config as the engines read it (see the module docstring).

    Layers are indexed as in ``sizes`` (0 the input, ``top`` the output); per-layer tuples
    (``eta``, ``P``, ``eta_P``) by weight layer m = 0 .. top-1 (``W[m]`` feeds ``sizes[m+1]``);
    per-hidden-layer tuples by hidden layer m = 0 .. n_hidden-1 (``Y[m]``).
    """

    spiking: bool
    """``model.mode == "spiking"`` (else rate mode, MODEL.md 8)."""
    sizes: tuple[int, ...]
    """``(n_inputs, *layers)``."""
    top: int
    """Index of the output layer in ``sizes`` (the number of weight layers)."""
    n_hidden: int
    """Number of hidden layers (``top - 1``)."""
    broadcast: bool
    """Broadcast feedback wiring (the output feeds every hidden layer); else layer-wise."""
    feedback_source: tuple[int, ...]
    """Per hidden layer m, the index in ``sizes`` of the layer whose signal reaches its
    apical dendrite (:func:`feedback_source`)."""
    feedback_shapes: tuple[tuple[int, int], ...]
    """Per hidden layer m, the shape of ``Y[m]``: (n_m, n of its source)."""
    feedback_rates: bool
    """The apical dendrites see rates (``model.feedback_signal == "rates"``), else filtered
    spikes."""
    segregated: bool
    """``g_A == 0``: somata ignore the apical compartment (full segregation), so a phase can
    be computed layer by layer (MODEL.md 3)."""
    random_plateaus: bool
    """``model.plateau_times == "random"``."""
    taps: int
    """Taps of the truncated PSP kernel (``model.kernel_taps``; also the spike histories'
    length in the carried state)."""
    constants: Constants
    """The derived numbers of :mod:`segdend.dynamics` (k_B, k_D, P, kernel taps, ...)."""
    eta: tuple[float, ...]
    """``training.eta``, per layer."""
    P: tuple[float, ...]
    """The scaling of each layer's update: ``P_hidden`` for hidden layers, ``P_out`` for the
    output (MODEL.md 5)."""
    eta_P: tuple[float, ...]
    """``eta[m] * P[m]``: the coefficient of layer m's update ``W -= eta P outer(E, sbar)``."""
    eta_feedback: tuple[float, ...] | None
    """``training.eta_feedback`` with feedback learning on, else None (no feedback
    learning)."""
    rule: plasticity.Rule
    """The hidden-layer learning rule (``plasticity.HIDDEN_RULES``)."""
    feedback: feedback.Feedback
    """The feedback variant (``feedback.FEEDBACK_VARIANTS``)."""
    burst_scale: float
    """``training.burst_scale`` (rules that draw)."""
    streams: StreamExtent
    """How far the random streams are drawn (:func:`stream_extent`)."""

    def scaled(self, eta) -> tuple[float, ...]:
        """``eta[m] * P[m]`` for other learning rates of the same network (a population's
        members); ``scaled(self.eta) == self.eta_P``."""
        return tuple(float(e * p) for e, p in zip(eta, self.P, strict=True))


def describe(config: RunConfig) -> ModelDescription:
    """The :class:`ModelDescription` of a validated config; raises SegdendError for an
    unknown learning rule or feedback variant (:func:`segdend.plasticity.hidden_rule`,
    :func:`segdend.feedback.feedback_variant`)."""
    model, tr = config.model, config.training
    c = Constants.from_config(model)
    sizes = (model.n_inputs, *model.layers)
    top = len(model.layers)
    sources = tuple(feedback_source(model, m) for m in range(top - 1))
    P = tuple(c.P_out if m == top - 1 else c.P_hidden for m in range(top))
    return ModelDescription(
        spiking=model.mode == "spiking",
        sizes=sizes, top=top, n_hidden=top - 1,
        broadcast=model.feedback_wiring == "broadcast",
        feedback_source=sources,
        feedback_shapes=tuple((sizes[m + 1], sizes[s]) for m, s in enumerate(sources)),
        feedback_rates=model.feedback_signal == "rates",
        segregated=model.g_A == 0,
        random_plateaus=model.plateau_times == "random",
        taps=model.kernel_taps,
        constants=c,
        eta=tuple(tr.eta), P=P,
        eta_P=tuple(float(e * p) for e, p in zip(tr.eta, P, strict=True)),
        eta_feedback=tuple(tr.eta_feedback) if tr.feedback_learning else None,
        rule=plasticity.hidden_rule(tr.learning_rule),
        feedback=feedback.feedback_variant(model.feedback),
        burst_scale=float(tr.burst_scale),
        streams=stream_extent(config),
    )
