"""The counter-based draws of :mod:`segdend.rng`, bit for bit, on torch tensors.

Torch has no full unsigned 64-bit arithmetic, but its ``int64`` tensors wrap on overflow
exactly like ``uint64`` (two's complement: the low 64 bits of a product or sum do not depend
on the sign convention), and XOR and masks act on the same bits. Only the right shift
differs: torch shifts ``int64`` arithmetically (copying the sign bit), so a logical shift by
``s`` is emulated as the arithmetic shift followed by masking off the ``s`` sign-extended
high bits. Keys and counters are the ``uint64`` values of :mod:`segdend.rng` reinterpreted as
``int64``. The result of :func:`uniform` equals ``rng.uniform`` exactly (tested on CPU and
CUDA), so the torch engine consumes the very draws of the reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from segdend import rng

_U64 = (1 << 64) - 1


def signed(value: int) -> int:
    """The ``int64`` whose bits are the ``uint64`` ``value``."""
    value = int(value) & _U64
    return value - (1 << 64) if value >= 1 << 63 else value


GAMMA = signed(int(rng.GAMMA))
M1 = signed(int(rng._M1))
M2 = signed(int(rng._M2))
S30, S27, S31, S11 = int(rng._S30), int(rng._S27), int(rng._S31), int(rng._S11)
INV53 = rng._INV53


def keys_as_int64(keys) -> np.ndarray:
    """``uint64`` stream keys as ``int64`` with the same bits (for ``torch.as_tensor``)."""
    return np.ascontiguousarray(np.asarray(keys, dtype=np.uint64)).view(np.int64)


def _srl(z: torch.Tensor, shift: int, out: torch.Tensor) -> torch.Tensor:
    """Logical right shift of the uint64 bits held in an int64 tensor, into ``out``."""
    torch.bitwise_right_shift(z, shift, out=out)
    return out.bitwise_and_((1 << (64 - shift)) - 1)


def mix64_(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser (``rng.mix64``), in place on an int64 tensor; returns ``z``."""
    t = torch.empty_like(z)
    z.bitwise_xor_(_srl(z, S30, t)).mul_(M1)
    z.bitwise_xor_(_srl(z, S27, t)).mul_(M2)
    return z.bitwise_xor_(_srl(z, S31, t))


def uniform_from_mixed(key_plus_counter_gamma: torch.Tensor) -> torch.Tensor:
    """``rng.uniform`` given ``key + counter * GAMMA`` (int64, consumed): float64 in [0, 1)."""
    z = mix64_(key_plus_counter_gamma)
    return _srl(z, S11, z).to(torch.float64).mul_(INV53)


def uniform(key: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """``rng.uniform(key, counter)`` for int64 tensors (broadcasting), as float64."""
    return uniform_from_mixed(key + counter * GAMMA)


def spike_counter(phase: int, step, layer: int, unit):
    """``rng.spike_counter`` on int64 (step and unit may be tensors; at most 52 bits)."""
    return (((((phase << rng.STEP_BITS) | step) << rng.LAYER_BITS) | layer)
            << rng.UNIT_BITS) | unit


class CounterTables:
    """Cached ``spike_counter(p, t, l, j) * GAMMA`` tables per phase: steps x (all units of
    all layers, layer after layer).

    A phase's spike uniforms of every layer are then one broadcast add of the keys and one
    pass of the mixer: ``uniform_from_mixed(key[:, None, :, None] + table[None, :T, None, :])``
    (the draws do not depend on the network, only their use does).
    """

    def __init__(self, sizes: tuple[int, ...], device: torch.device):
        self.sizes = tuple(sizes)
        self.device = device
        problem = rng.counter_problem(len(self.sizes) - 1, max(self.sizes), 0)
        if problem is not None:
            raise ValueError(problem)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()
        self._tables: dict[int, torch.Tensor] = {}

    def table(self, phase: int, steps: int) -> torch.Tensor:
        have = self._tables.get(phase)
        if have is None or have.shape[0] < steps:
            rows = max(steps, 64 if have is None else 2 * have.shape[0])
            if rows > rng.MAX_STEPS:
                rows = steps
            problem = rng.counter_problem(0, 0, rows)
            if problem is not None:
                raise ValueError(problem)
            t = torch.arange(rows, dtype=torch.int64, device=self.device)[:, None]
            parts = [spike_counter(phase, t, layer,
                                   torch.arange(n, dtype=torch.int64, device=self.device)[None, :])
                     for layer, n in enumerate(self.sizes)]
            have = torch.cat(parts, 1) * GAMMA
            self._tables[phase] = have
        return have[:steps]

    def uniforms(self, keys: torch.Tensor, phase: int, steps: int) -> list[torch.Tensor]:
        """Spike uniforms (S, steps, B, n_l) float64 of every layer l for keys (S, B) int64
        (views into one tensor; MODEL.md 2)."""
        z = keys[:, None, :, None] + self.table(phase, steps)[None, :, None, :]
        u = uniform_from_mixed(z)
        o = self.offsets
        return [u[..., o[l]:o[l + 1]] for l in range(len(self.sizes))]


def layer_uniforms(keys: torch.Tensor, phase: int, step: int, layer: int, n: int
                   ) -> torch.Tensor:
    """``rng.layer_uniforms`` for a vector of keys (S,) int64: (S, n) float64."""
    units = torch.arange(n, dtype=torch.int64, device=keys.device)
    return uniform(keys[:, None], spike_counter(phase, step, layer, units)[None, :])


def normal_from_uniforms(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """``rng.normal_from_uniforms`` (Box-Muller, cosine branch), same operation order."""
    return torch.sqrt(-2.0 * torch.log(1.0 - u1)) * torch.cos(2.0 * math.pi * u2)


def layer_normals(keys: torch.Tensor, phase: int, layer: int, n: int) -> torch.Tensor:
    """``rng.layer_normals`` for a vector of keys (S,) int64: (S, n) float64."""
    return normal_from_uniforms(layer_uniforms(keys, phase, 0, layer, n),
                                layer_uniforms(keys, phase, 1, layer, n))
