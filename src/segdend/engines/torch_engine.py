"""PyTorch engine: GPUs, batched testing and populations of independent networks.

:class:`TorchEngine` has the contract of :class:`~segdend.engines.reference.ReferenceEngine`
(``new_state``, ``train``, ``test``); :class:`TorchPopulation` trains S networks of the same
architecture together (different seeds, example orders or learning rates), each exactly as
if it were trained alone. Both run on the CPU or CUDA (``training.device``) in float64 or
float32 (``training.dtype``); parameters and state cross the boundary as NumPy float64.

Randomness is shared with the reference: every spike uses the counter-based uniform of
:mod:`segdend.rng` (reproduced bit for bit on int64 tensors) and the same inverse-CDF Poisson
draw, so in float64 the engine reproduces the reference's spikes exactly and its averages,
losses and updates to rounding (~1e-12). How a phase is computed (time-batched for g_A = 0,
step by step otherwise) is described in :mod:`segdend.engines._torch_core`.

On the CPU the engine is bound by per-operation overhead in online learning (use the Numba
engine there); it uses ``training.threads`` intra-op threads during its calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch

from segdend.config import RunConfig
from segdend.engines._torch_core import (
    _DTYPES,
    Core,
    resolve_device,
)
from segdend.engines.base import State, TestResult, TrainBatch, TrainResult
from segdend.engines.limits import torch_unsupported_reason as unsupported_reason
from segdend.errors import SegdendError
from segdend.network import Params

__all__ = ["TorchEngine", "TorchPopulation", "unsupported_reason"]


class _TorchBase:
    def _setup(self, config: RunConfig, max_batch: int | None) -> None:
        reason = unsupported_reason(config)
        if reason is not None and not reason.startswith("training.device"):
            raise SegdendError(f"the torch engine cannot run this config: {reason}")
        self.config = config
        self.model = config.model
        self.device = resolve_device(config.training.device)
        self.dtype = _DTYPES[config.training.dtype]
        self.threads = config.training.threads
        self.core = Core(config, self.device, self.dtype, max_batch)
        self.desc = self.core.desc
        self.sizes = self.desc.sizes

    @contextmanager
    def _running(self):
        """No autograd; ``training.threads`` intra-op threads on the CPU during the call."""
        old = torch.get_num_threads()
        change = self.device.type == "cpu" and old != self.threads
        if change:
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                yield
        finally:
            if change:
                torch.set_num_threads(old)

    def new_state(self) -> State:
        return State.cleared(self.sizes, self.desc.taps)

    def _rates(self, configs: Sequence[RunConfig]) -> tuple[np.ndarray, np.ndarray | None]:
        """Per member: the update coefficients ``eta * P`` of each layer
        (``ModelDescription.scaled`` of its ``training.eta``) and the feedback learning
        rates (None without feedback learning, on which the members agree)."""
        eta_P = np.array([self.desc.scaled(c.training.eta) for c in configs], dtype=np.float64)
        if self.desc.eta_feedback is None:
            return eta_P, None
        return eta_P, np.array([c.training.eta_feedback for c in configs], dtype=np.float64)


class TorchEngine(_TorchBase):
    """The reference's contract on torch (MODEL.md 2-9); see the module docstring.

    ``max_batch`` caps the number of test images simulated together (default: as many as
    keep one steps x images x units float64 tensor within ~48 MB on the CPU, ~384 MB on CUDA).
    """

    name = "torch"

    def __init__(self, config: RunConfig, *, max_batch: int | None = None):
        self._setup(config, max_batch)
        self.eta_P, self.eta_fb = self._rates([config])

    def train(self, params: Params, state: State, batch: TrainBatch,
              record: tuple[str, ...] = ()) -> TrainResult:
        with self._running():
            return self.core.train_members([params], [state], [batch], self.eta_P,
                                           self.eta_fb, record)[0]

    def test(self, params: Params, pixels: np.ndarray, keys: np.ndarray,
             hidden: bool = False) -> TestResult:
        keys = np.asarray(keys, dtype=np.uint64).reshape(1, -1)
        with self._running():
            return self.core.test_members([params], pixels, keys, hidden)[0]


def _population_configs(configs: RunConfig | Sequence[RunConfig]) -> list[RunConfig]:
    if isinstance(configs, RunConfig):
        return [configs]
    configs = list(configs)
    if not configs:
        raise SegdendError("a population needs at least one member config")
    first = configs[0]
    for i, c in enumerate(configs[1:], start=1):
        if c.model != first.model or c.phases != first.phases:
            raise SegdendError(
                f"population member {i} has a different model or phases section; members may "
                "differ only in training.eta, training.eta_feedback and training.seed")
        for key in ("learning_rule", "burst_scale", "feedback_learning", "device", "dtype"):
            if getattr(c.training, key) != getattr(first.training, key):
                raise SegdendError(
                    f"population member {i} has training.{key}="
                    f"{getattr(c.training, key)!r}, member 0 {getattr(first.training, key)!r}; "
                    "members must agree on it")
    return configs


class TorchPopulation(_TorchBase):
    """S independent networks of one architecture, simulated together (leading member axis).

    ``configs`` is one config (every member uses its learning rates; the number of members
    is the length of the lists passed to :meth:`train`/:meth:`test`) or one config per
    member, which may differ only in ``training.eta``, ``training.eta_feedback`` (and
    ``training.seed``, which the engine does not use). Each member learns online on its own
    examples and gives the same result as a :class:`TorchEngine` trained alone on them.
    """

    name = "torch-population"

    def __init__(self, configs: RunConfig | Sequence[RunConfig], *,
                 max_batch: int | None = None):
        self.configs = _population_configs(configs)
        self.fixed_size = None if isinstance(configs, RunConfig) else len(self.configs)
        self._setup(self.configs[0], max_batch)

    def _member_configs(self, S: int) -> list[RunConfig]:
        if self.fixed_size is None:
            return self.configs * S
        if S != self.fixed_size:
            raise SegdendError(f"this population has {self.fixed_size} members; got {S}")
        return self.configs

    def new_states(self, S: int | None = None) -> list[State]:
        return [self.new_state() for _ in range(S if S is not None else self.fixed_size or 1)]

    def train(self, params_list: Sequence[Params], states_list: Sequence[State],
              batches_list: Sequence[TrainBatch], record: tuple[str, ...] = ()
              ) -> list[TrainResult]:
        S = len(params_list)
        if len(states_list) != S or len(batches_list) != S:
            raise SegdendError(f"got {S} parameter sets, {len(states_list)} states and "
                               f"{len(batches_list)} batches; give one of each per member")
        eta_P, eta_fb = self._rates(self._member_configs(S))
        with self._running():
            return self.core.train_members(list(params_list), list(states_list),
                                           list(batches_list), eta_P, eta_fb, record)

    def test(self, params_list: Sequence[Params], pixels: np.ndarray,
             keys_list: Sequence[np.ndarray] | np.ndarray, hidden: bool = False
             ) -> list[TestResult]:
        """The same images for every member, each member with its own spike keys."""
        S = len(params_list)
        self._member_configs(S)
        keys = np.stack([np.asarray(k, dtype=np.uint64) for k in keys_list])
        if keys.shape[0] != S:
            raise SegdendError(f"got {S} parameter sets and {keys.shape[0]} key arrays")
        with self._running():
            return self.core.test_members(list(params_list), pixels, keys, hidden)
