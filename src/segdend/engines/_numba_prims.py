"""The project's equations compiled with Numba, for the Numba engine (MODEL.md 2-8).

Nothing here restates an equation that already exists: the functions of
:mod:`segdend.dynamics`, :mod:`segdend.plasticity` and :mod:`segdend.rng` are compiled as they
are written, by :func:`jit_from`, which gives the compiled copy the compiled versions of the
helpers it calls (``sigmoid`` inside ``rate``, ``mix64`` inside ``uniform``, ...). Two things are
new, both for speed in the per-step loops:

- :func:`fast_exp`, a vectorisable ``exp`` (Numba without Intel's SVML compiles ``math.exp``
  to a scalar library call, which would cost more than the rest of a step). It is accurate to
  one unit in the last place; :data:`rate_fast` is ``dynamics.rate`` compiled with it.
- :func:`poisson_tail`, the scalar form of ``dynamics.poisson_from_uniform`` (same inverse-CDF
  arithmetic, one unit at a time).

Compiled copies are not cached on disk themselves: the engine's kernels, which are (see
:func:`cached_njit`), carry their machine code, and their cache is invalidated by an edit of
any of the modules compiled into them, not only of their own file.
"""

from __future__ import annotations

import hashlib
import inspect
import types
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

from segdend import dynamics as dyn
from segdend import feedback, plasticity, rng

# No ZeroDivisionError checks (NumPy semantics, as the reference): they would also stop the
# loops from vectorising.
JIT_OPTIONS = {"nogil": True, "error_model": "numpy"}


def jit_from(fn, **callees):
    """Compile ``fn`` (a pure array/scalar function of this project) with Numba.

    Numba resolves a function's global names when it compiles it; ``callees`` replaces the
    helpers ``fn`` calls (plain Python functions in its module) by their compiled versions,
    without touching ``fn`` itself.
    """
    return numba.njit(cache=False, **JIT_OPTIONS)(plasticity.rebind(fn, **callees))


def _sources_digest() -> str:
    """Digest of the sources compiled into the kernels besides their own file: the
    equations (dynamics, plasticity, feedback, rng) and every module of the Numba engine
    (``engines/_numba_*.py``)."""
    h = hashlib.sha256()
    for module in (dyn, plasticity, feedback, rng):
        h.update(Path(module.__file__).read_bytes())
    for path in sorted(Path(__file__).parent.glob("_numba_*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def cached_njit(**options):
    """``numba.njit(cache=True, **options)``, with the on-disk cache also keyed on the sources
    of dynamics.py, plasticity.py, feedback.py, rng.py and the engine's ``_numba_*`` modules (Numba by
    itself checks only the kernel's file, so an edited equation would otherwise keep running
    from a stale cache). Falls back to Numba's own cache if its internals differ from those of
    Numba 0.58-0.68."""

    def decorate(fn):
        kernel = numba.njit(cache=True, **options)(fn)
        try:
            from numba.core.caching import CompileResultCacheImpl, FunctionCache
        except ImportError:
            return kernel
        digest = _sources_digest()

        class Locator:
            def __init__(self, inner):
                self._inner = inner

            def __getattr__(self, name):
                return getattr(self._inner, name)

            def get_source_stamp(self):
                return (self._inner.get_source_stamp(), digest)

        class Impl(CompileResultCacheImpl):
            def __init__(self, py_func):
                super().__init__(py_func)
                self._locator = Locator(self._locator)

        class Cache(FunctionCache):
            _impl_class = Impl

        try:
            kernel._cache = Cache(kernel.py_func)
        except Exception:  # noqa: BLE001 - keep Numba's own cache
            pass
        return kernel

    return decorate


# ---------------------------------------------------------------------------------------------
# Counter-based randomness (rng.py)

mix64 = jit_from(rng.mix64)
spike_counter = jit_from(rng.spike_counter)
normal_from_uniforms = jit_from(rng.normal_from_uniforms)


def _bitcast(src, dst, llvm_dst):
    """An intrinsic reinterpreting the 64 bits of a ``src`` value as ``dst`` (no conversion)."""

    @intrinsic
    def cast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_dst)

        return dst(src), codegen

    return cast


_uint64_bits_as_float64 = _bitcast(nbtypes.uint64, nbtypes.float64, ir.DoubleType())
_float64_bits_as_int64 = _bitcast(nbtypes.float64, nbtypes.int64, ir.IntType(64))
_int64_bits_as_float64 = _bitcast(nbtypes.int64, nbtypes.float64, ir.DoubleType())


_TWO52_BITS = np.uint64(0x4330000000000000)  # the bits of 2.0**52
_LO32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@numba.njit(inline="always", **JIT_OPTIONS)
def exact_u53_to_float(x):
    """``float(x)`` for an integer ``0 <= x < 2**53`` (uint64), exactly, with integer and
    floating-point operations that AVX2 has in vector form (it has no uint64 -> double
    conversion): each 32-bit half becomes a double by the 2**52 exponent trick, both exactly,
    and their sum ``hi * 2**32 + lo`` is exact because ``x`` is representable."""
    hi = _uint64_bits_as_float64((x >> _S32) | _TWO52_BITS) - 4503599627370496.0
    lo = _uint64_bits_as_float64((x & _LO32) | _TWO52_BITS) - 4503599627370496.0
    return hi * 4294967296.0 + lo


@numba.njit(inline="always", **JIT_OPTIONS)
def unit_interval_fast(bits53):
    """``rng.unit_interval`` to the bit, vectorisable on any x86 target."""
    return exact_u53_to_float(bits53) * rng._INV53


uniform_at = jit_from(rng.uniform_at, mix64=mix64, unit_interval=unit_interval_fast)
uniform = jit_from(rng.uniform, uniform_at=uniform_at)


@numba.njit(inline="always", **JIT_OPTIONS)
def stream_origin(key, phase, step, layer):
    """The Weyl point of unit 0 of one layer's spike draws in one step: the draw of unit i is
    ``uniform_at(origin + i * GAMMA)``, i.e. ``rng.uniform(key, spike_counter(phase, step,
    layer, i))`` (the unit is the counter's low field, so counter = counter(unit 0) + i);
    it spares a multiplication per draw."""
    return key + spike_counter(phase, step, layer, np.uint64(0)) * rng.GAMMA


@numba.njit(inline="always", **JIT_OPTIONS)
def layer_normal(key, phase, layer, unit):
    """Normal draw ``unit`` of ``rng.layer_normals(key, phase, layer, n)``."""
    u1 = uniform(key, spike_counter(phase, 0, layer, np.uint64(unit)))
    u2 = uniform(key, spike_counter(phase, 1, layer, np.uint64(unit)))
    return normal_from_uniforms(u1, u2)


# ---------------------------------------------------------------------------------------------
# A vectorisable exp


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (LLVM's fma; one instruction where the CPU has FMA)."""
    sig = nbtypes.float64(nbtypes.float64, nbtypes.float64, nbtypes.float64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.DoubleType(), [ir.DoubleType()] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


_LN2_HI = 6.93147180369123816490e-01  # ln 2 split in two (Cody-Waite): _LN2_HI has zero
_LN2_LO = 1.90821492927058770002e-10  # low bits, so n * _LN2_HI is exact for |n| < 2**11
_INV_LN2 = 1.44269504088896338700e00
# exp(r) on |r| <= ln(2)/2: interpolation at the 12 Chebyshev nodes, computed in 50-digit
# arithmetic (mpmath) and rounded to double; interpolation error < 5e-18 relative.
_E0, _E1, _E2, _E3 = 1.0, 1.0, 0.5000000000000019, 0.1666666666666668
_E4, _E5, _E6, _E7 = (0.0416666666664881, 0.008333333333319601, 0.0013888888952314775,
                      0.00019841269890047113)
_E8, _E9, _E10, _E11 = (2.4801485482328494e-05, 2.755724091857897e-06, 2.763263963904103e-07,
                        2.5110037605963777e-08)


@numba.njit(inline="always", **JIT_OPTIONS)
def fast_exp(x):
    """``exp(x)`` to within one ulp, branch-free so loops calling it vectorise.

    ``x = n ln2 + r`` with ``|r| <= ln2/2``, ``exp(r)`` by a degree-11 polynomial (Horner with
    fused multiply-adds), times ``2**n`` built from the exponent bits. Inputs are clamped to
    [-708, 709] (the result then saturates near 0 or 8e307 instead of reaching 0 or inf);
    NaN stays NaN.
    """
    xc = x if x > -708.0 else -708.0
    xc = xc if xc < 709.0 else 709.0
    n = np.floor(fma(xc, _INV_LN2, 0.5))  # a double: math.floor would give an int64
    r = fma(-n, _LN2_LO, fma(-n, _LN2_HI, xc))
    p = fma(_E11, r, _E10)
    p = fma(p, r, _E9)
    p = fma(p, r, _E8)
    p = fma(p, r, _E7)
    p = fma(p, r, _E6)
    p = fma(p, r, _E5)
    p = fma(p, r, _E4)
    p = fma(p, r, _E3)
    p = fma(p, r, _E2)
    p = fma(p, r, _E1)
    p = fma(p, r, _E0)
    # 2**n from the exponent bits. n is integral with |n| <= 1022: adding 1.5 * 2**52 puts it
    # in the low mantissa bits (exactly), which avoids a double -> int64 conversion (AVX2
    # has none in vector form); the shift keeps only the 11 bits of n + 1023.
    n_bits = _float64_bits_as_int64(n + 6755399441055744.0)
    res = p * _int64_bits_as_float64((n_bits + 1023) << 52)
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
plateau_fast = jit_from(dyn.plateau, sigmoid=sigmoid_fast)  # scalars only
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
    k with ``P(N <= k) > u``, by the same recurrence (``p = p * rate / k``, ``cdf += p``;
    for k = 1 the division by 1.0 is exact and left out)."""
    cdf = p
    if not (u >= cdf and p > 0.0):
        return 0.0
    k = 1.0
    p = p * rate
    cdf = cdf + p
    while u >= cdf and p > 0.0:
        k += 1.0
        p = p * rate / k
        cdf = cdf + p
    return k


# ---------------------------------------------------------------------------------------------
# Sums in a fixed order
#
# np.dot and ``@`` call the BLAS library, whose kernel is chosen for the CPU at run time
# (OpenBLAS: SkylakeX on most AVX-512 machines, Haswell on AVX2 ones and on CPUs it does not
# know yet), and each kernel sums in its own order. These loops sum in index order, one
# rounded product at a time, so a run gives the same bits on every machine.


@numba.njit(inline="always", **JIT_OPTIONS)
def dot(a, b):
    """``a . b`` of two 1-D arrays, summed in index order."""
    s = 0.0
    for i in range(a.size):
        s += a[i] * b[i]
    return s


@numba.njit(inline="always", **JIT_OPTIONS)
def dot_sparse(a, counts):
    """``a . counts`` for spike counts ``counts`` (mostly zero), summed in index order over
    the nonzero counts: the value of :func:`dot` (a zero term leaves the sum as it is), at the
    cost of a scan instead of a chain of dependent adds."""
    s = 0.0
    for i in range(a.size):
        if counts[i] != 0.0:
            s += a[i] * counts[i]
    return s


@numba.njit(**JIT_OPTIONS)
def matvec(B, e):
    """plasticity.matvec (``B @ e``), each row summed in index order (``B`` may be a
    transposed view)."""
    n, m = B.shape
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for j in range(m):
            s += B[i, j] * e[j]
        out[i] = s
    return out


@numba.njit(**JIT_OPTIONS)
def squared_norm(d):
    """plasticity.squared_norm (``d . d``), summed in index order."""
    return dot(d, d)


# ---------------------------------------------------------------------------------------------
# Learning (plasticity.py)

output_error = jit_from(plasticity.output_error, sigmoid=sigmoid, sigmoid_prime=sigmoid_prime)
hidden_error_local = jit_from(plasticity.hidden_error_local, sigmoid_prime=sigmoid_prime)
hidden_error_propagated = jit_from(plasticity.hidden_error_propagated,
                                   sigmoid_prime=sigmoid_prime, matvec=matvec)
feedback_error = jit_from(plasticity.feedback_error, sigmoid=sigmoid,
                          sigmoid_prime=sigmoid_prime)
output_loss = jit_from(plasticity.output_loss, sigmoid=sigmoid, squared_norm=squared_norm)
hidden_loss = jit_from(plasticity.hidden_loss, squared_norm=squared_norm)


@numba.njit(**JIT_OPTIONS)
def poisson_counts(rate, u):
    """``dynamics.poisson_from_uniform`` for 1-D arrays, unit by unit (:func:`poisson_tail`)."""
    out = np.empty(rate.size)
    for i in range(rate.size):
        out[i] = poisson_tail(rate[i], u[i], np.exp(-rate[i]))
    return out


# ---------------------------------------------------------------------------------------------
# Hidden-layer learning rules (plasticity.HIDDEN_RULES), one compiled dispatch

RULE_CALLEES = dict(sigmoid=sigmoid, sigmoid_prime=sigmoid_prime, matvec=matvec,
                    poisson_from_uniform=poisson_counts, hidden_error_local=hidden_error_local,
                    hidden_error_propagated=hidden_error_propagated)
"""What a rule of plasticity.py may call, compiled."""


def rule_index(name: str) -> int:
    """The position of rule ``name`` in ``plasticity.HIDDEN_RULES``: the compiled dispatch's
    code for it (``Cfg.rule``), internal to this engine."""
    return list(plasticity.HIDDEN_RULES).index(plasticity.hidden_rule(name).name)


def _compile_dispatch(name: str, params: str, fns: list, doc: str):
    """``name(index, params)``: function number ``index`` of ``fns`` applied to the common
    arguments ``params``, an if-chain generated from a registry's order (a compiled kernel
    cannot take the function as an argument and still be cached on disk)."""
    env = {f"fn_{i}": fn for i, fn in enumerate(fns)}
    lines = [f"def {name}(index, {params}):"]
    for i in range(len(fns) - 1):
        lines += [f"    if index == {i}:", f"        return fn_{i}({params})"]
    lines.append(f"    return fn_{len(fns) - 1}({params})")
    exec(compile("\n".join(lines), f"<{doc} dispatch>", "exec"), env)
    fn = env[name]
    fn.__doc__ = f"Function ``index`` of {doc} (generated)."
    return numba.njit(cache=False, **JIT_OPTIONS)(fn)


hidden_error = _compile_dispatch(
    "hidden_error", ", ".join(inspect.signature(plasticity.rule_local).parameters),
    [jit_from(rule.error, **RULE_CALLEES) for rule in plasticity.HIDDEN_RULES.values()],
    "plasticity.HIDDEN_RULES")
"""The hidden error of rule ``index`` (:func:`rule_index`) of plasticity.HIDDEN_RULES."""


# ---------------------------------------------------------------------------------------------
# Feedback variants (feedback.FEEDBACK_VARIANTS), one compiled dispatch
#
# The engine holds W[m] as ``W[m].T`` (n_{m-1} x n_m) and a feedback matrix Y as ``Y.T``
# (n_src x n): the helpers below take and return arrays in that layout, so the variants of
# feedback.py run on it unchanged. Loops, not BLAS products, to the bit as before.


@numba.njit(**JIT_OPTIONS)
def fb_transposed(WT):
    """``feedback.transposed`` in the layout: ``Y = W.T`` is stored as ``Y.T = W``, the
    transpose of the stored ``WT``."""
    n, n_up = WT.shape
    out = np.empty((n_up, n))
    for j in range(n_up):
        for i in range(n):
            out[j, i] = WT[i, j]
    return out


@numba.njit(**JIT_OPTIONS)
def fb_transpose_matmul(WT, YT_up):
    """``feedback.transpose_matmul`` in the layout: ``Y[i, j] = W[:, i] . Y_up[:, j]``, i.e.
    row i of the stored ``WT`` dotted with row j of the stored ``Y_up.T``."""
    n, ns = WT.shape[0], YT_up.shape[0]
    out = np.empty((ns, n))
    for j in range(ns):
        for i in range(n):
            out[j, i] = dot(WT[i], YT_up[j])
    return out


@numba.njit(**JIT_OPTIONS)
def fb_add_normals(YT, sd, key, layer):
    """``feedback.add_normals`` in the layout: draw ``i * ns + j`` of
    ``rng.layer_normals(key, 0, layer, Y.size)`` (Y's row-major order) goes to ``Y[i, j]``,
    stored at ``YT[j, i]``."""
    ns, n = YT.shape
    out = YT.copy()
    for i in range(n):
        for j in range(ns):
            out[j, i] += sd * layer_normal(key, 0, layer, i * ns + j)
    return out


fb_symmetric = jit_from(feedback.symmetric, transposed=fb_transposed,
                        transpose_matmul=fb_transpose_matmul)

FEEDBACK_CALLEES = dict(transposed=fb_transposed, transpose_matmul=fb_transpose_matmul,
                        add_normals=fb_add_normals, symmetric=fb_symmetric)
"""What a feedback variant of feedback.py may call, compiled for the engine's layout."""


def feedback_index(name: str) -> int:
    """The position of variant ``name`` in ``feedback.FEEDBACK_VARIANTS``: the compiled
    dispatch's code for it (``Cfg.feedback``), internal to this engine."""
    return list(feedback.FEEDBACK_VARIANTS).index(feedback.feedback_variant(name).name)


refresh_variant = _compile_dispatch(
    "refresh_variant", ", ".join(inspect.signature(feedback.feedback_random).parameters),
    [jit_from(v.refresh, **FEEDBACK_CALLEES) for v in feedback.FEEDBACK_VARIANTS.values()],
    "feedback.FEEDBACK_VARIANTS")
"""The new feedback matrices (in the layout) of variant ``index`` (:func:`feedback_index`)
of feedback.FEEDBACK_VARIANTS."""
