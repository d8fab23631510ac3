"""Compiled kernels of the Numba engine (MODEL.md 2-9).

One call trains on a whole chunk of examples, or tests a whole batch of images (in parallel
over images), so Python is entered once per chunk. The arithmetic is the reference engine's,
reorganised for speed without changing its value (beyond rounding):

- **Event-driven synapses.** Filtering commutes with the weights: the basal voltage
  ``W @ s(t) + b`` with ``s(t) = sum_k kappa(k+1) S(t-k)`` equals
  ``b + sum_k kappa(k+1) D(t-k)`` with ``D(t) = W @ S(t)``, a sum of one row of ``W.T`` per
  spike (spikes are sparse: about 20 of 784 inputs per step). ``Net.ring`` keeps ``D`` of
  the last ``taps + 1`` steps. The truncated kernel is a difference of two exponentials, so
  the sum over taps is kept as two truncated exponential sums ``A(t) = a (A(t-1) + D(t)) -
  a**(taps+1) D(t-taps)`` (``Net.ring_L``, ``Net.ring_s``); with the exact kernel they are
  the untruncated traces ``W @ trace``. (A kernel of another shape would be summed tap by
  tap.) After a weight update ``W -= c outer(E, sbar)`` the ring and the traces are corrected
  by the same rank-one term.
- **Window sums instead of traces.** Phase summaries only need window means. The window sum
  of a filtered train is accumulated per spike (each spike's total kernel weight inside the
  window); the apical voltage is linear in the feedback signal, so its window mean is
  ``Y @ (window mean of the signal)``, and it is computed per step only when ``g_A > 0``
  (it then drives the soma). With random plateau times each neuron picks the window of its
  delay (at most ``plateau_time_max + 1`` distinct windows).
- **Sparse inputs, cheap spikes.** Only inputs with a nonzero pixel can spike, and their
  ``exp(-rate)`` is computed once per example. A hidden unit whose uniform lies below
  ``exp(-phi_max)`` cannot spike, so its rate and ``exp(-phi)`` are only computed for the
  others (about 18%), and for every unit only in the steps whose rates are used (window
  sums asked for, rate feedback, the state at a phase's end). The lists of candidates and
  of spiking units are built without branches (mispredicted branches cost more than the
  arithmetic). Weight updates skip rows whose ``sbar`` is zero.

Layout: vectors over all layers are concatenated (``Cfg.noff[l]`` is where layer l starts;
layer 0 is the input). ``Net.hist`` holds the spike counts of the last ``taps`` steps, row
``clock % taps`` for the current step; ``Net.ring`` row ``clock % (taps + 1)``. Weights:
``WT`` holds ``W[m].T`` (n_m x n_{m+1}) at ``Cfg.woff[m]``, ``YT`` holds ``Y.T`` of hidden
layer l (n_src x n_l) at ``Cfg.yoff[l]``, ``B`` the biases at the layers' offsets.

Loops index views (``x[a:b]``) from 0 rather than ``x[a + i]``: Numba's negative-index check on
an offset of unknown sign would stop LLVM from vectorising them.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np
from numba import prange

from segdend.engines._numba_prims import (
    JIT_OPTIONS,
    cached_njit,
    exact_filter_step,
    fast_exp,
    feedback_error,
    fma,
    hidden_error_local,
    hidden_error_propagated,
    hidden_loss,
    hidden_soma_step,
    layer_normal,
    output_error,
    output_loss,
    output_soma_step,
    plateau,
    plateau_delay,
    plateau_fast,
    poisson_tail,
    rate_fast,
    rate_hidden_soma,
    rate_output_soma,
    spike_counter,
    teaching_current,
    uniform,
)

Cfg = namedtuple("Cfg", [
    "sizes", "noff", "woff", "yoff", "src", "is_source",
    "taps", "kappa", "exact", "recursive", "decay_L", "decay_s", "cut_L", "cut_s", "tau_gap",
    "phi_max", "spike_floor", "dt", "g_L", "g_B", "g_A", "g_D", "E_E", "E_I", "k_B", "k_D",
    "P_hidden", "P_out",
    "fb_rates", "random_plateau", "plateau_sd", "plateau_max", "integ_last",
    "rule", "layerwise", "fb_learning", "eta", "eta_fb", "feedback_mode", "noise_sd",
])
"""Constants of a config (built once by the engine). ``recursive``: the truncated kernel is
``(decay_L**(k+1) - decay_s**(k+1)) / tau_gap`` and is summed by recursion, with
``cut_L = decay_L**(taps+1)``; ``spike_floor`` is a little below ``exp(-phi_max)``: a uniform
under it gives no spike at any rate; ``rule``: 0 local, 1 backprop, 2 feedback alignment;
``feedback_mode``: 0 random, 1 symmetric, 2 noisy symmetric; ``src[l]``: the layer feeding
hidden layer l's apical dendrite."""

Net = namedtuple("Net", ["v", "phi", "s", "trace_L", "trace_s", "hist", "ring", "ring_L",
                         "ring_s", "clock"])
"""The carried network state (spiking mode), see the module docstring."""

Work = namedtuple("Work", ["vb", "va", "u", "p0", "phc", "cand", "spk", "cnt", "ridx", "didx", "vacc",
                           "phacc", "sacc", "fbacc", "wstart", "wend", "delays", "nz",
                           "x_rate", "x_p0", "nnz"])
"""Scratch buffers and the window sums of one phase."""

Summary = namedtuple("Summary", ["vbar_f", "sbar_f", "abar_f", "alpha_f", "sbfb_f",
                                 "phibar_t", "abar_t", "alpha_t", "scratch"])
"""What the updates need of an example (vectors over all layers): forward-phase means of
somata, filtered trains (by presynaptic layer), apical voltages, plateaus and feedback
signals (by source layer); target-phase rates and plateaus."""

RANDOM, SYMMETRIC, NOISY = 0, 1, 2


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
                np.zeros(n0), np.zeros(1, dtype=np.int64))


@numba.njit(**JIT_OPTIONS)
def new_summary(c):
    n_all = c.noff[-1]
    return Summary(np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
                   np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
                   np.zeros(n_all))


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


# ---------------------------------------------------------------------------------------------
# Pieces of a step


@numba.njit(**JIT_OPTIONS)
def set_input(c, pixels, wk, net):
    """Input rates ``phi_max * pixels`` (MODEL.md 1); only units with a positive rate can
    spike, and ``exp(-rate)`` (dynamics.poisson_from_uniform) is needed once per example."""
    nnz = 0
    for j in range(c.sizes[0]):
        r = c.phi_max * pixels[j]
        net.phi[j] = r
        if r > 0.0:
            wk.nz[nnz] = j
            wk.x_rate[nnz] = r
            wk.x_p0[nnz] = np.exp(-r)
            nnz += 1
    wk.nnz[0] = nnz


@numba.njit(**JIT_OPTIONS)
def rebuild_rings(c, WT, net):
    """``ring = W @ S`` of the last ``taps`` steps and its sums ``ring_L/ring_s`` (truncated
    kernel), or ``ring_L/ring_s = W @ trace_L/trace_s`` (exact kernel), from the spike history
    or traces of a state that comes from outside."""
    sizes, noff, woff, taps = c.sizes, c.noff, c.woff, c.taps
    top = sizes.size - 1
    n_ring = net.ring.shape[0]
    clock = net.clock[0]
    net.ring[:, :] = 0.0
    net.ring_L[:] = 0.0
    net.ring_s[:] = 0.0
    for l in range(top):
        n_post, post = sizes[l + 1], noff[l + 1]
        r_l, r_s = net.ring_L[post:post + n_post], net.ring_s[post:post + n_post]
        for j in range(sizes[l]):
            w_row = WT[woff[l] + j * n_post:woff[l] + (j + 1) * n_post]
            if c.exact:
                a_l, a_s = net.trace_L[noff[l] + j], net.trace_s[noff[l] + j]
                for i in range(n_post):
                    r_l[i] += a_l * w_row[i]
                    r_s[i] += a_s * w_row[i]
                continue
            for age in range(taps):
                cnt = net.hist[(clock - 1 - age) % taps, noff[l] + j]
                if cnt != 0.0:
                    r_k = net.ring[(clock - 1 - age) % n_ring, post:post + n_post]
                    for i in range(n_post):
                        r_k[i] += cnt * w_row[i]
        if c.recursive:  # A(t) = sum_k a**(k+1) D(t-k)
            pow_l, pow_s = c.decay_L, c.decay_s
            for age in range(taps):
                d_k = net.ring[(clock - 1 - age) % n_ring, post:post + n_post]
                for i in range(n_post):
                    r_l[i] += pow_l * d_k[i]
                    r_s[i] += pow_s * d_k[i]
                pow_l *= c.decay_L
                pow_s *= c.decay_s


@numba.njit(**JIT_OPTIONS)
def filtered_now(c, net, ridx, l):
    """``s_l = dynamics.filtered_spikes(kappa, history)`` (truncated kernel)."""
    base, n = c.noff[l], c.sizes[l]
    s_l = net.s[base:base + n]
    s_l[:] = 0.0
    for k in range(c.taps):
        kk = c.kappa[k]
        h_k = net.hist[ridx[k], base:base + n]
        for i in range(n):
            s_l[i] += kk * h_k[i]


@numba.njit(**JIT_OPTIONS)
def kernel_sum(ring, didx, kappa, base, n, bias, out):
    """``out = bias + sum_k kappa[k] ring[didx[k]]`` over columns base..base+n-1, i.e.
    ``dynamics.dendrite(W, dynamics.filtered_spikes(kappa, history), b)`` from the ring of
    ``W @ S(t-k)``, four taps per pass (kernels of any shape)."""
    for i in range(n):
        out[i] = bias[i]
    k = 0
    taps = kappa.size
    while k + 4 <= taps:
        d1, d2 = ring[didx[k], base:base + n], ring[didx[k + 1], base:base + n]
        d3, d4 = ring[didx[k + 2], base:base + n], ring[didx[k + 3], base:base + n]
        k1, k2, k3, k4 = kappa[k], kappa[k + 1], kappa[k + 2], kappa[k + 3]
        for i in range(n):
            out[i] = fma(k4, d4[i], fma(k3, d3[i], fma(k2, d2[i], fma(k1, d1[i], out[i]))))
        k += 4
    while k < taps:
        d1 = ring[didx[k], base:base + n]
        k1 = kappa[k]
        for i in range(n):
            out[i] = fma(k1, d1[i], out[i])
        k += 1


@numba.njit(**JIT_OPTIONS)
def add_rows(WT, w0, n, spk, cnt, m, out):
    """``out += W @ S`` for the spikes ``S`` listed in ``spk``/``cnt`` (m of them): one row of
    ``W.T`` per spike, four rows per pass over ``out``."""
    q = 0
    while q + 4 <= m:
        a1, a2, a3, a4 = w0 + spk[q] * n, w0 + spk[q + 1] * n, w0 + spk[q + 2] * n, \
            w0 + spk[q + 3] * n
        r1, r2, r3, r4 = WT[a1:a1 + n], WT[a2:a2 + n], WT[a3:a3 + n], WT[a4:a4 + n]
        c1, c2, c3, c4 = cnt[q], cnt[q + 1], cnt[q + 2], cnt[q + 3]
        for i in range(n):
            out[i] = fma(c4, r4[i], fma(c3, r3[i], fma(c2, r2[i], fma(c1, r1[i], out[i]))))
        q += 4
    while q < m:
        a1 = w0 + spk[q] * n
        r1 = WT[a1:a1 + n]
        c1 = cnt[q]
        for i in range(n):
            out[i] = fma(c1, r1[i], out[i])
        q += 1


# ---------------------------------------------------------------------------------------------
# One phase, step by step (MODEL.md 2-4)


@numba.njit(**JIT_OPTIONS)
def run_phase(c, WT, B, YT, net, wk, key, phase, T, first, nwin, label, sum_v, sum_phi, sum_s,
              sum_fb):
    """Simulate one phase of ``T`` steps (MODEL.md 3; the target phase when ``label >= 0``).

    Leaves in ``wk`` the window sums over steps ``first .. first+nwin-1`` of the output
    layer's somatic voltages (``vacc``) and rates (``phacc``), and of the hidden layers' with
    ``sum_v`` and ``sum_phi`` (without ``sum_phi`` the hidden layers' ``net.phi`` is only
    up to date at the phase's end); with ``sum_s`` those of the filtered trains of every
    presynaptic layer (``sacc``); with ``sum_fb`` those of the apical feedback signals (by
    source layer, ``fbacc[0]``) and, for random plateau times, over each delay's plateau
    window (``fbacc[1 + delay]``).
    """
    sizes, noff, woff, kappa = c.sizes, c.noff, c.woff, c.kappa
    top = sizes.size - 1
    taps = c.taps
    n_ring = net.ring.shape[0]
    v, phi, s, hist, ring = net.v, net.phi, net.s, net.hist, net.ring
    vb, va, uu, p0s, phc, ridx, didx = wk.vb, wk.va, wk.u, wk.p0, wk.phc, wk.ridx, wk.didx
    cand, spk, cnts = wk.cand, wk.spk, wk.cnt
    vacc, phacc, sacc, fbacc = wk.vacc, wk.phacc, wk.sacc, wk.fbacc
    gA_on = c.g_A != 0.0
    vacc[:] = 0.0
    phacc[:] = 0.0

    # Windows of the feedback sums: 0 = the integration window, 1 + d = the plateau window of
    # the neurons whose plateau comes d steps before the phase's end (ReferenceEngine.run_phase).
    wstart, wend = wk.wstart, wk.wend
    n_windows = wstart.size
    wstart[0], wend[0] = first, first + nwin - 1
    for d in range(n_windows - 1):
        end = T - 1 - d
        start = end - nwin + 1 if c.integ_last else first
        # (a window that would begin before the phase begins with it instead; the reference's
        # slice ``va[start:end + 1]`` would wrap around to the phase's end)
        wstart[1 + d], wend[1 + d] = max(start, 0), end
    fb_lo, fb_hi = np.min(wstart), np.max(wend)
    if sum_fb:
        fbacc[:, :] = 0.0

    # Window sums of filtered trains, per spike (truncated kernel): a spike at step tp enters
    # s(tp + k) with weight kappa(k+1); wgt[tp + taps] is its total weight inside the window.
    per_spike = sum_s and not c.exact
    if sum_s:
        sacc[:] = 0.0
    wgt = np.zeros(taps + T if per_spike else 0)
    if per_spike:
        for tp in range(-taps, T):
            w = 0.0
            for k in range(taps):
                if first <= tp + k < first + nwin:
                    w += kappa[k]
            wgt[tp + taps] = w
        for age in range(taps):  # spikes of the steps before this phase
            w = wgt[taps - 1 - age]
            if w != 0.0:
                row = hist[(net.clock[0] - 1 - age) % taps]
                for j in range(noff[top]):
                    sacc[j] += row[j] * w

    clock = net.clock[0]
    slot, dslot = clock % taps, clock % n_ring
    for t in range(T):
        for k in range(taps):  # rows of steps t, t-1, ... (no integer division per step)
            ridx[k] = slot - k if slot >= k else slot - k + taps
            didx[k] = dslot - k if dslot >= k else dslot - k + n_ring
        oldest = dslot + 1 if dslot + 1 < n_ring else 0  # D(t - taps)
        in_win = first <= t < first + nwin

        # Apical signals as they stand before their source's update: step t-1 (MODEL.md 3).
        if sum_fb and fb_lo <= t <= fb_hi:
            signal = phi if c.fb_rates else s
            for w in range(n_windows):
                if wstart[w] <= t <= wend[w]:
                    for l in range(2, top + 1):
                        if c.is_source[l]:
                            acc_w = fbacc[w, noff[l]:noff[l + 1]]
                            sig_l = signal[noff[l]:noff[l + 1]]
                            for j in range(sizes[l]):
                                acc_w[j] += sig_l[j]

        hrow = hist[slot]
        rrow = ring[dslot]
        hrow[:] = 0.0
        rrow[noff[1]:] = 0.0  # columns of the layers that receive D(t)

        # Input spikes first (MODEL.md 3), rows of W[0].T into the ring of layer 1.
        nnz = wk.nnz[0]
        nz, x_rate, x_p0 = wk.nz, wk.x_rate, wk.x_p0
        for q in range(nnz):
            uu[q] = uniform(key, spike_counter(phase, t, 0, np.uint64(nz[q])))
        n_spikes = 0
        for q in range(nnz):  # branch-free list of the inputs that spike
            cand[n_spikes] = q
            n_spikes += 1 if uu[q] >= x_p0[q] else 0
        for k in range(n_spikes):
            q = cand[k]
            j = nz[q]
            cnt = poisson_tail(x_rate[q], uu[q], x_p0[q])
            hrow[j] = cnt
            spk[k] = j
            cnts[k] = cnt
            if per_spike:
                sacc[j] += cnt * wgt[t + taps]
        add_rows(WT, woff[0], sizes[1], spk, cnts, n_spikes, rrow[noff[1]:noff[2]])
        if c.exact:
            n0 = sizes[0]
            tr_l, tr_s, s_0 = net.trace_L[:n0], net.trace_s[:n0], s[:n0]
            for j in range(n0):
                tr_l[j], tr_s[j], s_0[j] = exact_filter_step(tr_l[j], tr_s[j], hrow[j],
                                                             c.decay_L, c.decay_s, c.tau_gap)
            if sum_s and in_win:
                acc_0 = sacc[:n0]
                for j in range(n0):
                    acc_0[j] += s_0[j]

        # Layers bottom-up: dendrites, soma, spikes.
        for l in range(1, top + 1):
            n, base = sizes[l], noff[l]
            v_l, phi_l, h_l = v[base:base + n], phi[base:base + n], hrow[base:base + n]
            b_l = B[base:base + n]

            # basal dendrite: dynamics.dendrite(W, filtered spikes below, b) through the ring
            if c.exact or c.recursive:
                rg_l, rg_s = net.ring_L[base:base + n], net.ring_s[base:base + n]
                d_t = rrow[base:base + n]
                if c.exact:  # dynamics.exact_filter_step on W @ traces
                    for i in range(n):
                        rg_l[i], rg_s[i], vb[i] = exact_filter_step(
                            rg_l[i], rg_s[i], d_t[i], c.decay_L, c.decay_s, c.tau_gap)
                else:  # the truncated sum, as the exact filter minus the tap leaving it
                    d_old = ring[oldest, base:base + n]
                    for i in range(n):
                        a_l = c.decay_L * (rg_l[i] + d_t[i]) - c.cut_L * d_old[i]
                        a_s = c.decay_s * (rg_s[i] + d_t[i]) - c.cut_s * d_old[i]
                        rg_l[i] = a_l
                        rg_s[i] = a_s
                        vb[i] = (a_l - a_s) / c.tau_gap
                for i in range(n):
                    vb[i] += b_l[i]
            else:
                kernel_sum(ring, didx, kappa, base, n, b_l, vb)

            if l < top:
                if gA_on:  # apical dendrite: dynamics.dendrite(Y, s_fb, 0)
                    src = c.src[l]
                    signal = phi if c.fb_rates else s
                    for i in range(n):
                        va[i] = 0.0
                    for j in range(sizes[src]):
                        f = signal[noff[src] + j]
                        if f != 0.0:
                            y_row = YT[c.yoff[l] + j * n:c.yoff[l] + (j + 1) * n]
                            for i in range(n):
                                va[i] += f * y_row[i]
                # va stays zero when g_A = 0: the apical term is then 0 * (V_a - V), as in
                # the reference.
                g_L, g_B, g_A, dt = c.g_L, c.g_B, c.g_A, c.dt
                for i in range(n):
                    v_l[i] = hidden_soma_step(v_l[i], vb[i], va[i], g_L, g_B, g_A, dt)
                    uu[i] = uniform(key, spike_counter(phase, t, l, np.uint64(i)))
                # Every unit's rate is needed for window sums, as a feedback signal and in the
                # state at the phase's end; otherwise only the spike candidates' (below).
                if (sum_phi and in_win) or (c.fb_rates and c.is_source[l]) or t == T - 1:
                    for i in range(n):
                        phi_l[i] = rate_fast(v_l[i], c.phi_max)
            else:
                g_L, g_D, dt, E_E, E_I = c.g_L, c.g_D, c.dt, c.E_E, c.E_I
                for i in range(n):
                    current = 0.0
                    if label >= 0:  # dynamics.teaching_conductances
                        g_E = 1.0 if i == label else 0.0
                        current = teaching_current(v_l[i], g_E, 1.0 - g_E, E_E, E_I)
                    vi = output_soma_step(v_l[i], vb[i], current, g_L, g_D, dt)
                    v_l[i] = vi
                    phi_l[i] = rate_fast(vi, c.phi_max)
                    uu[i] = uniform(key, spike_counter(phase, t, l, np.uint64(i)))

            # spikes (dynamics.poisson_from_uniform): a unit whose uniform is under
            # exp(-phi_max) <= exp(-phi) does not spike; phi and exp(-phi) of the others
            floor = c.spike_floor
            n_cand = 0
            for i in range(n):
                cand[n_cand] = i
                p0s[n_cand] = v_l[i]
                n_cand += 1 if uu[i] >= floor else 0
            for q in range(n_cand):
                phc[q] = rate_fast(p0s[q], c.phi_max)
                p0s[q] = fast_exp(-phc[q])
            n_spikes = 0
            for q in range(n_cand):  # branch-free list of the units that spike
                i = cand[q]
                spk[n_spikes] = i
                cnts[n_spikes] = p0s[q]
                phc[n_spikes] = phc[q]
                n_spikes += 1 if uu[i] >= p0s[q] else 0
            for k in range(n_spikes):
                i = spk[k]
                cnt = poisson_tail(phc[k], uu[i], cnts[k])
                h_l[i] = cnt
                cnts[k] = cnt
                if per_spike and l < top:
                    sacc[base + i] += cnt * wgt[t + taps]
            if l < top:  # rows of W[l].T into the ring above
                add_rows(WT, woff[l], sizes[l + 1], spk, cnts, n_spikes,
                         rrow[noff[l + 1]:noff[l + 2]])

            if c.exact:
                tr_l, tr_s, s_l = net.trace_L[base:base + n], net.trace_s[base:base + n], \
                    s[base:base + n]
                for i in range(n):
                    tr_l[i], tr_s[i], s_l[i] = exact_filter_step(tr_l[i], tr_s[i], h_l[i],
                                                                 c.decay_L, c.decay_s, c.tau_gap)
                if sum_s and in_win and l < top:
                    acc_l = sacc[base:base + n]
                    for i in range(n):
                        acc_l[i] += s_l[i]
            elif c.is_source[l] and (gA_on or t == T - 1 or (sum_fb and fb_lo <= t + 1 <= fb_hi)):
                filtered_now(c, net, ridx, l)

            if in_win:
                if sum_v or l == top:
                    vacc_l = vacc[base:base + n]
                    for i in range(n):
                        vacc_l[i] += v_l[i]
                if sum_phi or l == top:
                    phacc_l = phacc[base:base + n]
                    for i in range(n):
                        phacc_l[i] += phi_l[i]
        clock += 1
        slot = slot + 1 if slot + 1 < taps else 0
        dslot = dslot + 1 if dslot + 1 < n_ring else 0
    net.clock[0] = clock


# ---------------------------------------------------------------------------------------------
# Summaries, updates, feedback


@numba.njit(**JIT_OPTIONS)
def set_plateau_delays(c, key, phase, delays):
    """Per-neuron plateau delays of a phase (random plateau times, MODEL.md 4), drawn as
    ``rng.layer_normals(plateau_key, phase, layer, n)`` in ReferenceEngine.learn."""
    for l in range(1, c.sizes.size - 1):
        for i in range(c.sizes[l]):
            z = layer_normal(key, phase, l, i)
            delays[c.noff[l] + i] = plateau_delay(z, c.plateau_sd, c.plateau_max)


@numba.njit(**JIT_OPTIONS)
def apical_means(c, YT, wk, nwin, abar, alpha):
    """Mean apical voltage over each hidden neuron's plateau window and its plateau potential
    (MODEL.md 4): ``Y @ (window mean of the feedback signal)``, by linearity."""
    sizes, noff = c.sizes, c.noff
    for l in range(1, sizes.size - 1):
        n, base, src, y0 = sizes[l], noff[l], c.src[l], c.yoff[l]
        ns, sb = sizes[src], noff[src]
        abar_l = abar[base:base + n]
        y_l = YT[y0:y0 + ns * n]
        if not c.random_plateau:
            abar_l[:] = 0.0
            for j in range(ns):
                f = wk.fbacc[0, sb + j] / nwin
                y_j = y_l[j * n:(j + 1) * n]
                for i in range(n):
                    abar_l[i] += f * y_j[i]
        else:
            delays = wk.delays[base:base + n]
            for i in range(n):
                w = 1 + delays[i]
                count = wk.wend[w] - wk.wstart[w] + 1
                acc = 0.0
                for j in range(ns):
                    acc += y_l[j * n + i] * (wk.fbacc[w, sb + j] / count)
                abar_l[i] = acc
        alpha_l = alpha[base:base + n]
        for i in range(n):
            alpha_l[i] = plateau_fast(abar_l[i])


@numba.njit(**JIT_OPTIONS)
def apply_update(c, WT, B, net, m, E, sbar, eta, P, fix_rings):
    """plasticity.apply_update on the transposed weights ``W[m].T``: ``W -= eta P outer(E,
    sbar)`` (rows with ``sbar = 0`` are unchanged), ``b -= eta P E``; then the same rank-one
    correction of the ring ``W @ S(t-k)`` of layer m+1 and of its sums."""
    n_in, n_out = c.sizes[m], c.sizes[m + 1]
    pre, post, w0 = c.noff[m], c.noff[m + 1], c.woff[m]
    coef = eta * P
    sbar_m = sbar[pre:pre + n_in]
    w_m = WT[w0:w0 + n_in * n_out].reshape((n_in, n_out))
    for j in range(n_in):
        sj = sbar_m[j]
        if sj != 0.0:
            for i in range(n_out):
                w_m[j, i] -= coef * (E[i] * sj)
    b_m = B[post:post + n_out]
    for i in range(n_out):
        b_m[i] -= coef * E[i]
    if not fix_rings:
        return
    r_l, r_s = net.ring_L[post:post + n_out], net.ring_s[post:post + n_out]
    if c.exact:
        dot_l = np.dot(sbar_m, net.trace_L[pre:pre + n_in])
        dot_s = np.dot(sbar_m, net.trace_s[pre:pre + n_in])
        for i in range(n_out):
            r_l[i] -= coef * dot_l * E[i]
            r_s[i] -= coef * dot_s * E[i]
        return
    clock, taps, n_ring = net.clock[0], c.taps, net.ring.shape[0]
    sum_l = 0.0
    sum_s = 0.0
    pow_l, pow_s = c.decay_L, c.decay_s
    for age in range(taps):
        dot = np.dot(sbar_m, net.hist[(clock - 1 - age) % taps, pre:pre + n_in])
        if dot != 0.0:
            r_k = net.ring[(clock - 1 - age) % n_ring, post:post + n_out]
            for i in range(n_out):
                r_k[i] -= coef * dot * E[i]
        sum_l += pow_l * dot
        sum_s += pow_s * dot
        pow_l *= c.decay_L
        pow_s *= c.decay_s
    if c.recursive:
        for i in range(n_out):
            r_l[i] -= coef * sum_l * E[i]
            r_s[i] -= coef * sum_s * E[i]


@numba.njit(**JIT_OPTIONS)
def update_network(c, WT, B, YT, net, sm, fix_rings, angle_parts):
    """plasticity.update_network on the engine's layout: the output layer first, then the
    hidden layers top-down (backprop errors use the weights above after their update).
    ``angle_parts[m]`` gets (E.E_bp, E.E, E_bp.E_bp) of hidden layer m; the backprop errors
    are computed only when the rule or this recording uses them."""
    sizes, noff = c.sizes, c.noff
    top = sizes.size - 1
    tb, nt = noff[top], sizes[top]
    e_top = output_error(sm.phibar_t[tb:tb + nt], sm.vbar_f[tb:tb + nt], c.phi_max, c.k_D)
    apply_update(c, WT, B, net, top - 1, e_top, sm.sbar_f, c.eta[top - 1], c.P_out, fix_rings)
    e_bp_above = e_top
    e_above = e_top
    need_bp = c.rule == 1 or angle_parts.shape[0] > 0
    for l in range(top - 1, 0, -1):
        m = l - 1
        n, base, n_up = sizes[l], noff[l], sizes[l + 1]
        vbar = sm.vbar_f[base:base + n]
        w_up = c.woff[l]
        e_bp = e_bp_above[:0]
        if need_bp:
            e_bp = hidden_error_propagated(WT[w_up:w_up + n * n_up].reshape((n, n_up)),
                                           e_bp_above, vbar, c.phi_max, c.k_B)
        if c.rule == 0:
            e = hidden_error_local(sm.alpha_t[base:base + n], sm.alpha_f[base:base + n], vbar,
                                   c.phi_max, c.k_B)
        elif c.rule == 1:
            e = e_bp
        else:
            src = c.src[l]
            ns = sizes[src]
            y_l = YT[c.yoff[l]:c.yoff[l] + ns * n].reshape((ns, n)).T
            e = hidden_error_propagated(y_l, e_above if c.layerwise else e_top, vbar,
                                        c.phi_max, c.k_B)
        apply_update(c, WT, B, net, m, e, sm.sbar_f, c.eta[m], c.P_hidden, fix_rings)
        if c.fb_learning:
            e_inv = feedback_error(vbar, sm.alpha_f[base:base + n], sm.abar_f[base:base + n],
                                   c.phi_max)
            src = c.src[l]
            sb, y0 = noff[src], c.yoff[l]
            for j in range(sizes[src]):
                f = sm.sbfb_f[sb + j]
                y_j = YT[y0 + j * n:y0 + (j + 1) * n]
                for i in range(n):
                    y_j[i] -= c.eta_fb[m] * (e_inv[i] * f)
        if angle_parts.shape[0] > 0:
            angle_parts[m, 0] = np.dot(e, e_bp)
            angle_parts[m, 1] = np.dot(e, e)
            angle_parts[m, 2] = np.dot(e_bp, e_bp)
        e_bp_above = e_bp
        e_above = e


@numba.njit(**JIT_OPTIONS)
def refresh_feedback(c, WT, YT, noise_key):
    """ReferenceEngine.refresh_feedback with network.symmetric_feedback (MODEL.md 7):
    ``Y = W[M-1].T`` for the last hidden layer; below it ``Y[m] = W[m+1].T @ Y[m+1]``
    (broadcast) or ``W[m+1].T`` (layer-wise); then the noise, drawn as
    ``rng.layer_normals(noise_key, 0, m+1, Y[m].size)`` in Y's row-major order."""
    if c.feedback_mode == RANDOM:
        return
    sizes, woff, yoff = c.sizes, c.woff, c.yoff
    top = sizes.size - 1
    for l in range(top - 1, 0, -1):
        n, n_up = sizes[l], sizes[l + 1]
        y0, w0 = yoff[l], woff[l]
        if not c.layerwise and l < top - 1:
            # Y_l[i, j] = sum_k W[l][k, i] Y_{l+1}[k, j]
            ns = sizes[top]
            y1 = yoff[l + 1]
            for j in range(ns):
                y_up = YT[y1 + j * n_up:y1 + (j + 1) * n_up]
                y_j = YT[y0 + j * n:y0 + (j + 1) * n]
                for i in range(n):
                    y_j[i] = np.dot(WT[w0 + i * n_up:w0 + (i + 1) * n_up], y_up)
        else:
            w_l = WT[w0:w0 + n * n_up]
            for j in range(n_up):
                y_j = YT[y0 + j * n:y0 + (j + 1) * n]
                for i in range(n):
                    y_j[i] = w_l[i * n_up + j]
    if c.feedback_mode == NOISY:
        for l in range(1, top):
            n, ns, y0 = sizes[l], sizes[c.src[l]], yoff[l]
            y_l = YT[y0:y0 + ns * n]
            for i in range(n):
                for j in range(ns):
                    z = layer_normal(noise_key, 0, l, i * ns + j)
                    y_l[j * n + i] += c.noise_sd * z


@numba.njit(**JIT_OPTIONS)
def record_example(c, sm, label, e, loss_out, loss_hidden, correct, ubar_f):
    """Losses of MODEL.md 5, whether the forward phase picked the label and, when asked
    (``ubar_f`` has rows), the forward-phase mean output voltage."""
    sizes, noff = c.sizes, c.noff
    top = sizes.size - 1
    tb, nt = noff[top], sizes[top]
    if ubar_f.shape[0] > 0:
        ubar_f[e, :] = sm.vbar_f[tb:tb + nt]
    loss_out[e] = output_loss(sm.phibar_t[tb:tb + nt], sm.vbar_f[tb:tb + nt], c.phi_max)
    for l in range(1, top):
        b, n = noff[l], sizes[l]
        loss_hidden[e, l - 1] = hidden_loss(sm.alpha_t[b:b + n], sm.alpha_f[b:b + n])
    correct[e] = np.argmax(sm.vbar_f[tb:tb + nt]) == label


# ---------------------------------------------------------------------------------------------
# Kernels: spiking mode


@cached_njit(**JIT_OPTIONS)
def train_spiking(c, WT, B, YT, net, pixels, labels, lengths, windows, keys, plateau_keys,
                  noise_keys, loss_out, loss_hidden, correct, angle_parts, ubar_f):
    """ReferenceEngine.train in spiking mode, for a chunk of examples in order."""
    top = c.sizes.size - 1
    n_all = c.noff[-1]
    wk = new_work(c)
    sm = new_summary(c)
    rebuild_rings(c, WT, net)
    for e in range(pixels.shape[0]):
        set_input(c, pixels[e], wk, net)
        for p in range(2):
            first, nwin = windows[e, p, 0], windows[e, p, 1]
            if c.random_plateau:
                set_plateau_delays(c, plateau_keys[e], p, wk.delays)
            run_phase(c, WT, B, YT, net, wk, keys[e], p, lengths[e, p], first, nwin,
                      -1 if p == 0 else labels[e], p == 0, False, p == 0, top > 1)
            if p == 0:
                for j in range(c.noff[1], n_all):
                    sm.vbar_f[j] = wk.vacc[j] / nwin
                for j in range(c.noff[top]):
                    sm.sbar_f[j] = wk.sacc[j] / nwin
                if c.fb_learning:
                    for j in range(n_all):
                        sm.sbfb_f[j] = wk.fbacc[0, j] / nwin
                apical_means(c, YT, wk, nwin, sm.abar_f, sm.alpha_f)
            else:
                for j in range(c.noff[top], n_all):
                    sm.phibar_t[j] = wk.phacc[j] / nwin
                apical_means(c, YT, wk, nwin, sm.abar_t, sm.alpha_t)
        record_example(c, sm, labels[e], e, loss_out, loss_hidden, correct, ubar_f)
        update_network(c, WT, B, YT, net, sm, True, angle_parts[e])
        refresh_feedback(c, WT, YT, noise_keys[e])


@cached_njit(parallel=True, **JIT_OPTIONS)
def test_spiking(c, WT, B, YT, pixels, keys, T, nwin, n_blocks, out_v, out_rates):
    """ReferenceEngine.test in spiking mode: each image from a cleared state, one forward
    phase of ``T`` steps averaged over its last ``nwin`` (MODEL.md 9); images in parallel;
    hidden rates only when ``out_rates`` has rows."""
    sizes, noff = c.sizes, c.noff
    top = sizes.size - 1
    n_img = pixels.shape[0]
    hidden = out_rates.shape[0] > 0
    for blk in prange(n_blocks):
        lo = blk * n_img // n_blocks
        hi = (blk + 1) * n_img // n_blocks
        net = new_net(c)
        wk = new_work(c)
        for e in range(lo, hi):
            clear_net(net)
            set_input(c, pixels[e], wk, net)
            run_phase(c, WT, B, YT, net, wk, keys[e], 0, T, T - nwin, nwin, -1, False, hidden,
                      False, False)
            for i in range(sizes[top]):
                out_v[e, i] = wk.vacc[noff[top] + i] / nwin
            if hidden:
                for j in range(noff[1], noff[top]):
                    out_rates[e, j - noff[1]] = wk.phacc[j] / nwin


# ---------------------------------------------------------------------------------------------
# Kernels: rate mode (MODEL.md 8)


@numba.njit(**JIT_OPTIONS)
def rate_forward(c, WT, B, YT, pixels, label, sm, rates, vb):
    """ReferenceEngine.rate_phase for the forward phase and, when ``label >= 0``, the target
    phase (the hidden layers are the same in both). Fills ``sm.vbar_f``, ``sm.phibar_t``
    (output), plateaus; ``rates`` gets every layer's forward rates (= sbar_f and sbar_fb_f)."""
    sizes, noff, woff = c.sizes, c.noff, c.woff
    top = sizes.size - 1
    for j in range(sizes[0]):
        rates[j] = c.phi_max * pixels[j]
    for l in range(1, top + 1):
        n, base, pre = sizes[l], noff[l], noff[l - 1]
        for i in range(n):  # dynamics.dendrite, skipping silent presynaptic units
            vb[i] = 0.0
        rates_pre = rates[pre:pre + sizes[l - 1]]
        for j in range(sizes[l - 1]):
            r = rates_pre[j]
            if r != 0.0:
                w_row = WT[woff[l - 1] + j * n:woff[l - 1] + (j + 1) * n]
                for i in range(n):
                    vb[i] += r * w_row[i]
        b_l, v_l, r_l = B[base:base + n], sm.vbar_f[base:base + n], rates[base:base + n]
        for i in range(n):
            vb[i] += b_l[i]
        if l < top:
            for i in range(n):
                vi = rate_hidden_soma(vb[i], c.k_B)
                v_l[i] = vi
                r_l[i] = rate_fast(vi, c.phi_max)
        else:
            t_l = sm.phibar_t[base:base + n]
            for i in range(n):
                vi = rate_output_soma(vb[i], 0.0, 0.0, c.g_L, c.g_D, c.E_E, c.E_I)
                v_l[i] = vi
                r_l[i] = rate_fast(vi, c.phi_max)
                if label >= 0:
                    g_E = 1.0 if i == label else 0.0
                    ui = rate_output_soma(vb[i], g_E, 1.0 - g_E, c.g_L, c.g_D, c.E_E, c.E_I)
                    t_l[i] = rate_fast(ui, c.phi_max)
    if label < 0:
        return
    # plateaus: Y @ phibar of the source, forward and target
    tb = noff[top]
    for l in range(1, top):
        n, base, src, y0 = sizes[l], noff[l], c.src[l], c.yoff[l]
        sb = noff[src]
        a_f, a_t = sm.abar_f[base:base + n], sm.abar_t[base:base + n]
        a_f[:] = 0.0
        a_t[:] = 0.0
        for j in range(sizes[src]):
            f = rates[sb + j]
            g = sm.phibar_t[sb + j] if sb == tb else f
            y_j = YT[y0 + j * n:y0 + (j + 1) * n]
            for i in range(n):
                a_f[i] += f * y_j[i]
                a_t[i] += g * y_j[i]
        sm.alpha_f[base:base + n] = plateau(sm.abar_f[base:base + n])
        sm.alpha_t[base:base + n] = plateau(sm.abar_t[base:base + n])


@cached_njit(**JIT_OPTIONS)
def train_rate(c, WT, B, YT, pixels, labels, noise_keys, loss_out, loss_hidden, correct,
               angle_parts, ubar_f):
    """ReferenceEngine.train in rate mode, for a chunk of examples in order."""
    sm = new_summary(c)
    net = new_net(c)  # unused: rate mode has no ring to correct
    vb = np.zeros(np.max(c.sizes))
    for e in range(pixels.shape[0]):
        rate_forward(c, WT, B, YT, pixels[e], labels[e], sm, sm.scratch, vb)
        sm.sbar_f[:] = sm.scratch
        sm.sbfb_f[:] = sm.scratch
        record_example(c, sm, labels[e], e, loss_out, loss_hidden, correct, ubar_f)
        update_network(c, WT, B, YT, net, sm, False, angle_parts[e])
        refresh_feedback(c, WT, YT, noise_keys[e])


@cached_njit(parallel=True, **JIT_OPTIONS)
def test_rate(c, WT, B, YT, pixels, n_blocks, out_v, out_rates):
    """ReferenceEngine.test in rate mode; images in parallel."""
    sizes, noff = c.sizes, c.noff
    top = sizes.size - 1
    n_img = pixels.shape[0]
    for blk in prange(n_blocks):
        lo = blk * n_img // n_blocks
        hi = (blk + 1) * n_img // n_blocks
        sm = new_summary(c)
        vb = np.zeros(np.max(sizes))
        for e in range(lo, hi):
            rate_forward(c, WT, B, YT, pixels[e], -1, sm, sm.scratch, vb)
            for i in range(sizes[top]):
                out_v[e, i] = sm.vbar_f[noff[top] + i]
            if out_rates.shape[0] > 0:
                for j in range(noff[1], noff[top]):
                    out_rates[e, j - noff[1]] = sm.scratch[j]
