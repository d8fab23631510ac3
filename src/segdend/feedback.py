"""Feedback weights after each example's update: the variants of MODEL.md section 7.

A **feedback variant** is one function listed in :data:`FEEDBACK_VARIANTS`, chosen by name
(``model.feedback``), all with the signature of :func:`feedback_random`: the weights ``W``
(one array per layer, bottom-up) and feedback matrices ``Y`` (one per hidden layer) as they
stand after an example's update, the wiring, the example's noise key and
``model.feedback_noise_sd``; it returns the new ``Y`` (a new list; the engine writes it into
its storage). Variants reach arrays only through the module-level helpers
:func:`transposed`, :func:`transpose_matmul`, :func:`add_normals` and the formula
:func:`symmetric` built on them, so each engine runs the very same function with its own
helpers bound, as with the learning rules of :mod:`segdend.plasticity`: the reference as
written (NumPy), the Numba engine compiled (``engines/_numba_prims.FEEDBACK_CALLEES``, one
dispatch generated from this registry's order) on its transposed layout, the torch engine
rebound (:func:`segdend.plasticity.rebind`, ``engines/_torch_ops.FEEDBACK_CALLEES``) to
tensors with a leading member axis. A new variant is one function here and its entry in
:data:`FEEDBACK_VARIANTS`.

The initial matrices and the fixed sparse masks are :mod:`segdend.network`'s
(``initialise``, ``apply_sparsity``); feedback *learning* is an update of
:func:`segdend.plasticity.update_network` (``plasticity.feedback_keep``).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

from segdend import rng
from segdend.errors import SegdendError

# ---------------------------------------------------------------------------------------------
# Array helpers (each engine binds its own: compiled loops for Numba, batched torch ops)


def transposed(W):
    """``W.T`` as a new array: a feedback matrix of the shape of ``W``'s transpose."""
    return W.T.copy()


def transpose_matmul(W, Y):
    """``W.T @ Y``: feedback through the weights above (broadcast symmetric feedback)."""
    return W.T @ Y


def add_normals(Y, sd, key, layer):
    """``Y + sd * rng.layer_normals(key, 0, layer, Y.size)`` (in ``Y``'s row-major order):
    the noise of noisy symmetric feedback, redrawn from each example's noise key."""
    return Y + sd * rng.layer_normals(key, 0, layer, Y.size).reshape(Y.shape)


def symmetric(W, Y, broadcast):
    """Symmetric feedback (MODEL.md 7): ``Y = W[M-1].T`` for the last hidden layer and, with
    broadcast wiring, ``Y[m] = W[m+1].T @ Y[m+1]`` below it; layer-wise ``Y[m] = W[m+1].T``.
    ``Y`` gives the number of hidden layers (its values are not read)."""
    n_hidden = len(Y)
    out = [y for y in Y]
    for m in range(n_hidden - 1, -1, -1):
        if broadcast and m < n_hidden - 1:
            out[m] = transpose_matmul(W[m + 1], out[m + 1])
        else:
            out[m] = transposed(W[m + 1])
    return out


# ---------------------------------------------------------------------------------------------
# The variants (one signature; chosen by name from FEEDBACK_VARIANTS)


def feedback_random(W, Y, broadcast, noise_key, noise_sd):
    """Random feedback, the paper's default: ``Y`` stays as initialised (a new list of the
    same arrays).

    The common signature of every variant: ``W`` the weights ``W[m]`` (n_m x n_{m-1}) of
    every layer, ``Y`` the feedback matrices ``Y[m]`` (n_m x n_src) of every hidden layer,
    both after the example's update; ``broadcast`` True for broadcast wiring (the output
    layer feeds every hidden layer), False for layer-wise; ``noise_key`` the example's
    ``TrainBatch.noise_keys`` entry (its draws: ``rng.layer_normals(noise_key, 0, m + 1,
    Y[m].size)``); ``noise_sd`` ``model.feedback_noise_sd``. Returns the new ``Y``.
    """
    return [y for y in Y]


def feedback_symmetric(W, Y, broadcast, noise_key, noise_sd):
    """Symmetric feedback (MODEL.md 7): :func:`symmetric`, re-applied after every update."""
    return symmetric(W, Y, broadcast)


def feedback_noisy_symmetric(W, Y, broadcast, noise_key, noise_sd):
    """Noisy symmetric feedback (MODEL.md 7): :func:`symmetric` plus ``N(0, noise_sd)``
    noise, redrawn at every re-symmetrisation. The broadcast chain ``W[m+1].T @ Y[m+1]``
    uses the noiseless matrix above (the noise is added after the whole chain)."""
    sym = symmetric(W, Y, broadcast)
    return [add_normals(sym[m], noise_sd, noise_key, m + 1) for m in range(len(sym))]


@dataclass(frozen=True)
class Feedback:
    """A feedback variant: its ``name`` (``model.feedback``), its ``refresh`` function (the
    signature of :func:`feedback_random`), whether it is ``derived`` from the weights (engines
    call ``refresh`` after each example's update only then; a variant that is not leaves
    ``Y`` to the initialisation and to feedback learning) and whether it ``draws`` (it uses
    ``rng.layer_normals(noise_key, 0, m + 1, Y[m].size)``, so ``Y[m].size`` must fit the
    streams' unit field, ``rng.MAX_UNITS``)."""

    name: str
    refresh: types.FunctionType
    derived: bool = True
    draws: bool = False


FEEDBACK_VARIANTS: dict[str, Feedback] = {v.name: v for v in (
    Feedback("random", feedback_random, derived=False),
    Feedback("symmetric", feedback_symmetric),
    Feedback("noisy_symmetric", feedback_noisy_symmetric, draws=True),
)}
"""Every feedback variant, by name, in a fixed order."""


def feedback_variant(name: str) -> Feedback:
    """The variant called ``name`` (``model.feedback``); raises SegdendError otherwise."""
    variant = FEEDBACK_VARIANTS.get(name)
    if variant is None:
        raise SegdendError(f"`model.feedback` must be one of "
                           f"{', '.join(FEEDBACK_VARIANTS)}; got {name!r}")
    return variant
