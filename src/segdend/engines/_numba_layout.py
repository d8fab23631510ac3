"""The Numba engine's layout of a network: constants, carried state, scratch (MODEL.md 2-9).

Vectors over all layers are concatenated (``Cfg.noff[l]`` is where layer l starts; layer 0
is the input). ``Net.hist`` holds the spike counts of the last ``taps`` steps, row
``clock % taps`` for the current step; ``Net.ring`` holds ``D(t) = W @ S(t)`` of the last
``taps + 1`` steps, row ``clock % (taps + 1)``; ``Net.ring_L``/``ring_s`` their two truncated
exponential sums (see :mod:`segdend.engines._numba_phase`). Weights: ``WT`` holds ``W[m].T``
(n_m x n_{m+1}) at ``Cfg.woff[m]``, ``YT`` holds ``Y.T`` of hidden layer l (n_src x n_l) at
``Cfg.yoff[l]``, ``B`` the biases at the layers' offsets.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np

from segdend.engines._numba_prims import JIT_OPTIONS, cached_njit
from segdend.rng import GAMMA

Cfg = namedtuple("Cfg", [
    "sizes", "noff", "woff", "yoff", "src", "is_source",
    "taps", "kappa", "exact", "recursive", "decay_L", "decay_s", "cut_L", "cut_s", "tau_gap",
    "phi_max", "spike_floor", "dt", "g_L", "g_B", "g_A", "segregated", "g_D", "E_E", "E_I",
    "k_B", "k_D",
    "fb_rates", "random_plateau", "plateau_sd", "plateau_max", "integ_last",
    "rule", "layerwise", "fb_learning", "eta_P", "eta_fb", "feedback", "noise_sd",
])
"""Constants of a config, filled once by the engine from its ``model.ModelDescription``
(``segregated``, ``eta_P``, ``src``, ``layerwise`` and the kernel's constants are the
description's; the offsets and the kernel's recursion are this layout's). ``recursive``:
the truncated kernel is ``(decay_L**(k+1) - decay_s**(k+1)) / tau_gap`` and is summed by
recursion, with
``cut_L = decay_L**(taps+1)``; ``spike_floor`` is a little below ``exp(-phi_max)``: a uniform
under it gives no spike at any rate; ``rule``: the hidden rule's position in
``plasticity.HIDDEN_RULES`` (``_numba_prims.rule_index``, the one place it is derived);
``feedback``: the feedback variant's position in ``feedback.FEEDBACK_VARIANTS``
(``_numba_prims.feedback_index``); ``src[l]``: the layer feeding
hidden layer l's apical dendrite (the description's ``feedback_source[l - 1]``); ``eta_P[m]``
the coefficient ``eta[m] * P`` of layer m's update; ``eta_fb`` the feedback learning rates
(empty without feedback learning)."""

Net = namedtuple("Net", ["v", "phi", "s", "trace_L", "trace_s", "hist", "ring", "ring_L",
                         "ring_s", "clock"])
"""The carried network state (spiking mode), see the module docstring."""

Work = namedtuple("Work", ["vb", "va", "u", "p0", "phc", "cand", "spk", "cnt", "ridx",
                           "didx", "vacc", "phacc", "sacc", "fbacc", "wstart", "wend", "delays",
                           "nz", "x_rate", "x_p0", "x_gamma", "nnz", "unit_gamma"])
"""Scratch buffers of a step (one layer at a time: basal voltage ``vb``, apical ``va``,
uniforms ``u``, spike candidates ``cand`` with their ``p0 = exp(-phi)``
and rates ``phc``, spikes ``spk`` with counts ``cnt``), the ring rows of the current step
(``ridx``, ``didx``), the window sums of one phase (``vacc``, ``phacc``, ``sacc``, ``fbacc``
over the windows ``wstart..wend``), plateau ``delays``, and the input of the example: its
``nnz`` nonzero pixels ``nz`` with their rates, ``exp(-rate)`` and ``nz * GAMMA``;
``unit_gamma[i] = i * GAMMA``, the offset of unit i's draw from its layer's Weyl origin
(``_numba_prims.stream_origin``), a table because AVX2 has no 64-bit vector multiply: the
three 32-bit multiplies that emulate it made a third of a draw's cost there."""

Summary = namedtuple("Summary", ["vbar_f", "sbar_f", "abar_f", "alpha_f", "sbfb_f",
                                 "phibar_t", "abar_t", "alpha_t", "scratch"])
"""What the updates need of an example (vectors over all layers): forward-phase means of
somata, filtered trains (by presynaptic layer), apical voltages, plateaus and feedback
signals (by source layer); target-phase rates and plateaus."""

RateWork = namedtuple("RateWork", ["vb", "rows", "coefs"])
"""Scratch of a rate-mode example (MODEL.md 8), one layer at a time: dendritic sums ``vb``,
and the nonzero presynaptic units ``rows`` with their rates ``coefs``."""


# ---------------------------------------------------------------------------------------------
# Allocation


@numba.njit(**JIT_OPTIONS)
def new_net(c):
    n_all = c.noff[-1]
    return Net(np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
               np.zeros(n_all), np.zeros((c.taps, n_all)), np.zeros((c.taps + 1, n_all)),
               np.zeros(n_all), np.zeros(n_all), np.zeros(1, dtype=np.int64))


@numba.njit(**JIT_OPTIONS)
def clear_net(net):
    net.v[:] = 0.0
    net.phi[:] = 0.0
    net.s[:] = 0.0
    net.trace_L[:] = 0.0
    net.trace_s[:] = 0.0
    net.hist[:, :] = 0.0
    net.ring[:, :] = 0.0
    net.ring_L[:] = 0.0
    net.ring_s[:] = 0.0
    net.clock[0] = 0


@numba.njit(**JIT_OPTIONS)
def new_work(c):
    n_all = c.noff[-1]
    n_max = np.max(c.sizes)
    n_windows = 1 + (c.plateau_max + 1 if c.random_plateau else 0)
    n0 = c.sizes[0]
    return Work(np.zeros(n_max), np.zeros(n_max), np.zeros(n_max), np.zeros(n_max),
                np.zeros(n_max), np.zeros(n_max, dtype=np.int64),
                np.zeros(n_max, dtype=np.int64), np.zeros(n_max),
                np.zeros(c.taps, dtype=np.int64), np.zeros(c.taps, dtype=np.int64),
                np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros((n_windows, n_all)),
                np.zeros(n_windows, dtype=np.int64), np.zeros(n_windows, dtype=np.int64),
                np.zeros(n_all, dtype=np.int64), np.zeros(n0, dtype=np.int64), np.zeros(n0),
                np.zeros(n0), np.zeros(n0, dtype=np.uint64), np.zeros(1, dtype=np.int64),
                np.arange(n_max).astype(np.uint64) * GAMMA)


@numba.njit(**JIT_OPTIONS)
def new_summary(c):
    n_all = c.noff[-1]
    return Summary(np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
                   np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
                   np.zeros(n_all))


@numba.njit(**JIT_OPTIONS)
def new_rate_work(c):
    n_max = np.max(c.sizes)
    return RateWork(np.zeros(n_max), np.zeros(n_max, dtype=np.int64), np.zeros(n_max))


@cached_njit(**JIT_OPTIONS)
def transpose_into(src, out):
    """``out[:] = src.T`` for 2-D arrays, in cache-sized blocks (parameters to and from the
    kernels' layout)."""
    rows, cols = src.shape
    block = 32
    for j0 in range(0, cols, block):
        for i0 in range(0, rows, block):
            for i in range(i0, min(i0 + block, rows)):
                for j in range(j0, min(j0 + block, cols)):
                    out[j, i] = src[i, j]
