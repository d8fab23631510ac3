"""The project's equations compiled with Numba, for the Numba engine (MODEL.md 2-8).

Nothing here restates an equation that already exists: the functions of
:mod:`segdend.dynamics`, :mod:`segdend.plasticity` and :mod:`segdend.rng` are compiled as they
are written, by :func:`jit_from`, which gives the compiled copy the compiled versions of the
helpers it calls (``sigmoid`` inside ``rate``, ``mix64`` inside ``uniform``, ...). Two things are
new, both for speed in the per-step loops:

- :func:`fast_exp`, a vectorisable ``exp`` (this machine's Numba has no SVML, so ``math.exp`` is
  a scalar library call that would cost more than the rest of a step). It is accurate to one
  unit in the last place; :data:`rate_fast` is ``dynamics.rate`` compiled with it.
- :func:`poisson_tail`, the scalar form of ``dynamics.poisson_from_uniform`` (same inverse-CDF
  arithmetic, one unit at a time).

Compiled copies are not cached on disk themselves (``cache=False``): the engine's kernels, which
are, carry their machine code. Numba checks only a cached kernel's own source file, so after
editing dynamics.py, plasticity.py or rng.py delete the ``engines/__pycache__/_numba_*.nb?``
files (or set ``NUMBA_CACHE_DIR``) to force a recompilation.
"""

from __future__ import annotations

import math
import types

import numba
import numpy as np
from llvmlite import ir
from numba import types as nbtypes
from numba.extending import intrinsic

from segdend import dynamics as dyn
from segdend import plasticity, rng

# No ZeroDivisionError checks (NumPy semantics, as the reference): they would also stop the
# loops from vectorising.
JIT_OPTIONS = {"nogil": True, "error_model": "numpy"}


def jit_from(fn, **callees):
    """Compile ``fn`` (a pure array/scalar function of this project) with Numba.

    Numba resolves a function's global names when it compiles it; ``callees`` replaces the
    helpers ``fn`` calls (plain Python functions in its module) by their compiled versions,
    without touching ``fn`` itself.
    """
    env = dict(fn.__globals__)
    env.update(callees)
    clone = types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__
    clone.__module__ = fn.__module__
    clone.__doc__ = fn.__doc__
    return numba.njit(cache=False, **JIT_OPTIONS)(clone)


# ---------------------------------------------------------------------------------------------
# Counter-based randomness (rng.py)

mix64 = jit_from(rng.mix64)
uniform = jit_from(rng.uniform, mix64=mix64)
spike_counter = jit_from(rng.spike_counter)
normal_from_uniforms = jit_from(rng.normal_from_uniforms)


@numba.njit(inline="always", **JIT_OPTIONS)
def layer_normal(key, phase, layer, unit):
    """Normal draw ``unit`` of ``rng.layer_normals(key, phase, layer, n)``."""
    u1 = uniform(key, spike_counter(phase, 0, layer, np.uint64(unit)))
    u2 = uniform(key, spike_counter(phase, 1, layer, np.uint64(unit)))
    return normal_from_uniforms(u1, u2)


# ---------------------------------------------------------------------------------------------
# A vectorisable exp


@intrinsic
def _int64_bits_as_float64(typingctx, x):
    sig = nbtypes.float64(nbtypes.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00


@numba.njit(inline="always", **JIT_OPTIONS)
def fast_exp(x):
    """``exp(x)`` to one ulp, branch-free so loops calling it vectorise.

    ``x = n ln2 + r`` with ``|r| <= ln2/2`` (Cody-Waite), ``exp(r)`` by its Taylor polynomial of
    degree 13 (truncation error < 2e-17), times ``2**n`` built from the exponent bits. Inputs
    are clamped to [-708, 709] (the result then saturates near 0 or 8e307 instead of reaching
    0 or inf); NaN stays NaN.
    """
    xc = x if x > -708.0 else -708.0
    xc = xc if xc < 709.0 else 709.0
    n = math.floor(xc * _INV_LN2 + 0.5)
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    res = p * _int64_bits_as_float64((np.int64(n) + 1023) << 52)
    return res if x == x else x


# ``np.exp`` as the compiled copies of dynamics.py see it when they run in the per-step loops.
_fast_numpy = types.ModuleType("segdend_fast_numpy")
_fast_numpy.exp = fast_exp


# ---------------------------------------------------------------------------------------------
# Equations (dynamics.py)

sigmoid = jit_from(dyn.sigmoid)
sigmoid_prime = jit_from(dyn.sigmoid_prime)
rate = jit_from(dyn.rate, sigmoid=sigmoid)
plateau = jit_from(dyn.plateau, sigmoid=sigmoid)
sigmoid_fast = jit_from(dyn.sigmoid, np=_fast_numpy)  # scalars only
rate_fast = jit_from(dyn.rate, sigmoid=sigmoid_fast)  # scalars only
hidden_soma_step = jit_from(dyn.hidden_soma_step)
output_soma_step = jit_from(dyn.output_soma_step)
teaching_current = jit_from(dyn.teaching_current)
exact_filter_step = jit_from(dyn.exact_filter_step)
rate_hidden_soma = jit_from(dyn.rate_hidden_soma)
rate_output_soma = jit_from(dyn.rate_output_soma)
plateau_delay = jit_from(dyn.plateau_delay)


@numba.njit(inline="always", **JIT_OPTIONS)
def poisson_tail(rate, u, p):
    """``dynamics.poisson_from_uniform`` for one unit, given ``p = exp(-rate)``: the smallest
    k with ``P(N <= k) > u``, by the same recurrence (``p *= rate / k``, ``cdf += p``)."""
    cdf = p
    k = 0.0
    while u >= cdf and p > 0.0:
        k += 1.0
        p = p * rate / k
        cdf = cdf + p
    return k


# ---------------------------------------------------------------------------------------------
# Learning (plasticity.py)

output_error = jit_from(plasticity.output_error, sigmoid=sigmoid, sigmoid_prime=sigmoid_prime)
hidden_error_local = jit_from(plasticity.hidden_error_local, sigmoid_prime=sigmoid_prime)
hidden_error_propagated = jit_from(plasticity.hidden_error_propagated,
                                   sigmoid_prime=sigmoid_prime)
feedback_error = jit_from(plasticity.feedback_error, sigmoid=sigmoid,
                          sigmoid_prime=sigmoid_prime)
output_loss = jit_from(plasticity.output_loss, sigmoid=sigmoid)
hidden_loss = jit_from(plasticity.hidden_loss)
