"""The engine contract and the data that crosses it.

An engine trains on a :class:`TrainBatch` (examples in the given order, with every random
draw's key decided by the trainer) and tests a batch of images from a cleared state. It
updates :class:`~segdend.network.Params` and its carried :class:`State` in place and returns
per-example results. The reference engine is the specification in code; the fast engines
must agree with it (``tests/engines``).

What an engine records and supports is declared as data, an :class:`EngineInfo` per engine in
:data:`segdend.engines.registry.ENGINES`: read without building (or importing) the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import numpy as np

from segdend.errors import SegdendError
from segdend.network import Params

if TYPE_CHECKING:
    from segdend.config import RunConfig

A = TypeVar("A")
"""A layer's array type: ``np.ndarray`` in a :class:`State`, ``torch.Tensor`` in torch."""


@dataclass
class PhaseSummary:
    """Window averages of one phase (MODEL.md 4), lists indexed by layer, bottom-up.

    ``vbar[m]`` somatic voltage (hidden and output), ``sbar[m]`` filtered input from below,
    ``phibar[m]`` rate; for hidden layers ``abar[m]`` apical voltage (per-neuron plateau
    window), ``alpha[m] = sigmoid(abar[m])`` and ``sbar_fb[m]`` the feedback signal.

    The reference fills it with NumPy vectors, the torch engine with (S, B, n) tensors of S
    members x B images (``_torch_core.member_vectors`` drops B); the Numba engine keeps the
    same quantities in its compiled, flat ``_numba_layout.Summary`` (a dataclass cannot
    cross into its kernels).
    """

    vbar: list[np.ndarray]
    sbar: list[np.ndarray]
    phibar: list[np.ndarray]
    abar: list[np.ndarray]
    alpha: list[np.ndarray]
    sbar_fb: list[np.ndarray]
    traces: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(slots=True)
class LayerState(Generic[A]):
    """What one layer (n neurons) carries from one training example to the next (MODEL.md 4).

    ``v`` (n,) somatic voltage (unused for the input layer); ``history`` (taps, n) spike
    counts of the last ``taps`` steps, newest first, for the truncated kernel; ``trace_L``,
    ``trace_s`` (n,) the two exponential traces of the exact kernel; ``s`` (n,) the current
    filtered spike train; ``phi`` (n,) the current rates. The shapes never change. A
    :class:`State` holds NumPy float64 arrays; the torch engine keeps the same structure over
    (S, B, ...) tensors while it simulates.
    """

    v: A
    history: A
    trace_L: A
    trace_s: A
    s: A
    phi: A

    @classmethod
    def cleared(cls, n: int, taps: int) -> LayerState[np.ndarray]:
        """Voltage zero, an empty spike history, no activity (MODEL.md 4 and 9)."""
        return cls(np.zeros(n), np.zeros((taps, n)), np.zeros(n), np.zeros(n), np.zeros(n),
                   np.zeros(n))

    def copy(self) -> LayerState[A]:
        return LayerState(*(getattr(self, k).copy() for k in LAYER_FIELDS))


LAYER_FIELDS = tuple(f.name for f in fields(LayerState))
"""The fields of :class:`LayerState` in the order of a checkpoint's keys."""


@dataclass
class State:
    """What carries over from one training example to the next (MODEL.md 4): a
    :class:`LayerState` per layer, ``layers[0]`` the input layer, then the hidden layers and
    the output. Rate mode carries nothing between examples.

    In a checkpoint it is flat arrays named ``<field><layer>`` (``v1``, ``history0``,
    ``trace_L2``, ...): :meth:`to_arrays` and :meth:`from_arrays`, the layout of every
    checkpoint segdend has written.
    """

    layers: list[LayerState[np.ndarray]]

    @classmethod
    def cleared(cls, sizes: Sequence[int], taps: int) -> State:
        """All voltages zero, empty spike histories, no activity (MODEL.md 4 and 9), for
        layers of ``sizes`` (input first) and a kernel of ``taps`` steps."""
        return cls([LayerState.cleared(n, taps) for n in sizes])

    def copy(self) -> State:
        return State([layer.copy() for layer in self.layers])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays themselves (no copies) by their checkpoint names, layer by layer."""
        return {f"{k}{l}": getattr(layer, k) for l, layer in enumerate(self.layers)
                for k in LAYER_FIELDS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> State:
        """The state of :meth:`to_arrays`' arrays (copied as float64); refuses a set of names
        that is not exactly the fields of layers 0, 1, ..."""
        layers, l = [], 0
        while f"v{l}" in arrays:
            missing = [f"{k}{l}" for k in LAYER_FIELDS if f"{k}{l}" not in arrays]
            if missing:
                raise SegdendError(f"the carried state lacks {', '.join(missing)}")
            layers.append(LayerState(*(np.array(arrays[f"{k}{l}"], dtype=np.float64)
                                       for k in LAYER_FIELDS)))
            l += 1
        extra = sorted(set(arrays) - {f"{k}{i}" for i in range(l) for k in LAYER_FIELDS})
        if extra:
            raise SegdendError(f"the carried state has unknown arrays {', '.join(extra)}")
        return cls(layers)


@dataclass
class TrainBatch:
    """Examples to learn in order, with every random choice already made by the trainer.

    ``pixels`` (n, n_inputs) in [0, 1]; ``labels`` (n,); ``lengths`` (n, 2) forward/target
    phase lengths in steps; uint64 stream keys (n,) of each example: ``keys`` its spikes,
    ``plateau_keys`` its plateau delays, ``noise_keys`` its feedback noise, ``burst_keys``
    the draws of a learning rule that draws (``rng.BURST``; None when the rule draws
    nothing).
    """

    pixels: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    keys: np.ndarray
    plateau_keys: np.ndarray
    noise_keys: np.ndarray
    burst_keys: np.ndarray | None = None

    def part(self, sl: slice) -> TrainBatch:
        """The examples ``sl`` of this batch."""
        return TrainBatch(self.pixels[sl], self.labels[sl], self.lengths[sl], self.keys[sl],
                          self.plateau_keys[sl], self.noise_keys[sl],
                          None if self.burst_keys is None else self.burst_keys[sl])


@dataclass
class TrainResult:
    """Per-example outcomes of a :class:`TrainBatch`.

    ``loss_out`` (n,), ``loss_hidden`` (n, M-1), ``correct`` (n,) whether the forward phase's
    average output voltage picked the label, ``records`` optional analysis recordings, by the
    names asked for in ``record``: ``bp_angle`` (n, M-1) degrees between the local and the
    backprop hidden error; ``ubar_f`` (n, n_out) forward-phase average output voltage.
    """

    loss_out: np.ndarray
    loss_hidden: np.ndarray
    correct: np.ndarray
    records: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class TestResult:
    """``predictions`` (n,) and, when asked, ``hidden_rates`` per hidden layer (n, n_m)."""

    predictions: np.ndarray
    hidden_rates: list[np.ndarray] = field(default_factory=list)
    output_voltage: np.ndarray | None = None


class Engine(Protocol):
    """What every simulation engine provides."""

    name: str

    def new_state(self) -> State: ...

    def train(self, params: Params, state: State, batch: TrainBatch,
              record: tuple[str, ...] = ()) -> TrainResult: ...

    def test(self, params: Params, pixels: np.ndarray, keys: np.ndarray,
             hidden: bool = False) -> TestResult: ...



@dataclass(frozen=True)
class EngineInfo:
    """An engine's declared contract: what it records and runs, known without building it.

    ``name`` its ``training.engine`` name; ``load()`` its class (imports the engine module,
    and so numba or torch, on the first call; the class is built with the run's config);
    ``records`` the names of ``output.record`` (``config.RECORD_NAMES``) whose recordings
    its ``train`` returns when asked, every other name asked for is left out of
    :attr:`TrainResult.records`; ``modes`` the ``model.mode`` values it runs; ``populations``
    whether it also trains populations of networks together; ``unsupported_reason(config)``
    why it cannot run a config (None when it can), decided without importing the engine
    (:mod:`segdend.engines.limits`).
    """

    name: str
    load: Callable[[], Callable[[RunConfig], Engine]]
    records: tuple[str, ...]
    unsupported_reason: Callable[[RunConfig], str | None]
    modes: tuple[str, ...] = ("spiking", "rate")
    populations: bool = False

    def available(self) -> bool:
        """Whether the engine's module (and its numba or torch) imports here."""
        try:
            self.load()
        except ImportError:
            return False
        return True

    def build(self, config: RunConfig) -> Engine:
        """The engine for ``config``."""
        return self.load()(config)
