"""Explicit, counter-based randomness.

Every random draw of a simulation is a pure function of (run seed, purpose, position): the
spike uniforms of step ``t`` of layer ``l`` in phase ``p`` of a training example are
``uniform(key, counter(p, t, l, unit))`` with the example's key derived from the seed, the
epoch and the example's position. This gives three properties at once:

- the reference and the fast engines consume *the same* draws, so they can be compared spike
  for spike;
- batched and chunked testing give the same answer as one image at a time;
- resuming a run needs no generator state beyond (epoch, position).

The mixer is SplitMix64's finaliser (Steele, Lea & Flood 2014), written with plain uint64
arithmetic so that the identical function compiles under Numba and runs vectorised in NumPy.
Draws that happen once per epoch or per run (orders, phase lengths, initial weights, masks)
use NumPy generators seeded from :func:`seed_sequence`.
"""

from __future__ import annotations

import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0

# Purposes: one stream family per kind of randomness.
INIT, ORDER, PHASES, TRAIN_SPIKES, TEST_SPIKES, PLATEAU, FEEDBACK_NOISE, SPARSE_MASK = range(8)
BURST = 8  # the draws of learning rules (plasticity.Rule.draws), e.g. plateau bursts

# Bit layout of a spike counter: unit (24 bits), layer (4), step (22), phase (2).
UNIT_BITS, LAYER_BITS, STEP_BITS = 24, 4, 22
MAX_UNITS, MAX_LAYERS, MAX_STEPS = 1 << UNIT_BITS, 1 << LAYER_BITS, 1 << STEP_BITS


def counter_problem(layers: int, units: int, steps: int) -> str | None:
    """Why draws up to layer index ``layers`` (0 is the input), of ``units`` draws of one
    layer in one step and in phases of ``steps`` steps do not fit a spike counter's fields,
    or None when they fit: the one wording of the random streams' limits (the config's
    checks, the engines' ``unsupported_reason``, the torch engine's counter tables)."""
    if layers >= MAX_LAYERS:
        return (f"{layers} layers exceed the random streams' layer field (at most "
                f"{MAX_LAYERS - 1} layers above the input)")
    if units > MAX_UNITS:
        return (f"{units} draws of one layer in one step exceed the random streams' unit "
                f"field (at most 2**{UNIT_BITS} = {MAX_UNITS})")
    if steps > MAX_STEPS:
        return (f"a phase of {steps} steps exceeds the random streams' step field (at most "
                f"2**{STEP_BITS} = {MAX_STEPS} steps)")
    return None


def mix64(z):
    """SplitMix64 finaliser: a bijective avalanche of uint64 values (array or scalar)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def unit_interval(bits53):
    """The 53-bit integer ``bits53`` as a double in [0, 1): ``bits53 / 2**53`` (exact)."""
    return bits53 * _INV53


def uniform_at(z):
    """The uniform draw at point ``z = key + counter * GAMMA`` of a stream's Weyl sequence."""
    return unit_interval(mix64(z) >> _S11)


def uniform(key, counter):
    """Uniform draw in [0, 1) for a stream ``key`` at position ``counter`` (uint64)."""
    return uniform_at(key + counter * GAMMA)


def spike_counter(phase, step, layer, unit):
    """The position of one spike draw inside an example's stream (see module docstring)."""
    return ((((np.uint64(phase) << np.uint64(STEP_BITS)) | np.uint64(step))
             << np.uint64(LAYER_BITS) | np.uint64(layer)) << np.uint64(UNIT_BITS)) | unit


def derive_key(seed: int, *path: int) -> np.uint64:
    """A stream key from a run seed and a path of non-negative integers (purpose, epoch, ...)."""
    mask = (1 << 64) - 1
    k = (int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & mask
    with np.errstate(over="ignore"):
        k = int(mix64(np.array([k], dtype=np.uint64))[0])
        for p in path:
            k = int(mix64(np.array([(k ^ (int(p) * 0xD1B54A32D192ED03 + 1)) & mask],
                                   dtype=np.uint64))[0])
    return np.uint64(k)


def layer_uniforms(key: np.uint64, phase: int, step: int, layer: int, n: int) -> np.ndarray:
    """The ``n`` spike uniforms of one layer in one step (vectorised NumPy)."""
    with np.errstate(over="ignore"):
        units = np.arange(n, dtype=np.uint64)
        return uniform(key, spike_counter(phase, step, layer, units))


def seed_sequence(seed: int, *path: int) -> np.random.Generator:
    """A NumPy generator for once-per-epoch or once-per-run draws."""
    return np.random.default_rng([int(seed), *[int(p) for p in path]])


def normal_from_uniforms(u1, u2):
    """Standard normal draw from two uniforms in [0, 1) (Box-Muller, cosine branch)."""
    return np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(2.0 * np.pi * u2)


def layer_normals(key: np.uint64, phase: int, layer: int, n: int) -> np.ndarray:
    """``n`` standard normals for one layer, e.g. per-neuron plateau delays of a phase."""
    return normal_from_uniforms(layer_uniforms(key, phase, 0, layer, n),
                                layer_uniforms(key, phase, 1, layer, n))


def derive_keys(base: np.uint64, positions: np.ndarray) -> np.ndarray:
    """Vectorised ``derive_key(..., p)`` for every p in ``positions`` under the key ``base``
    (``derive_keys(derive_key(seed, *path), [p])[0] == derive_key(seed, *path, p)``)."""
    with np.errstate(over="ignore"):
        p = np.asarray(positions, dtype=np.uint64)
        return mix64(np.uint64(base) ^ (p * np.uint64(0xD1B54A32D192ED03) + np.uint64(1)))
