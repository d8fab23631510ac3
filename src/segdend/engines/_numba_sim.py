"""Compiled kernels of the Numba engine (MODEL.md 2-9).

One call trains on a whole chunk of examples, or tests a whole batch of images (in parallel
over images), so Python is entered once per chunk. The arithmetic is the reference engine's,
reorganised for speed without changing its value (beyond rounding):

- **Event-driven synapses.** Linear filtering commutes with the weights: the basal voltage
  ``W @ s(t) + b`` with ``s(t) = sum_k kappa(k+1) S(t-k)`` equals
  ``b + sum_k kappa(k+1) D(t-k)`` with ``D(t) = W @ S(t)``. ``D(t)`` is a sum of one weight row
  per spike (spikes are sparse: about 20 of 784 inputs per step), kept in a ring of the last
  ``taps`` steps (``Net.ring``); with the exact kernel, two exponential traces of ``D``
  (``Net.ring_L``, ``Net.ring_s``) replace the ring. The weights are stored transposed
  (one contiguous row per presynaptic unit). After a weight update
  ``W -= c outer(E, sbar)`` the ring is corrected by the same rank-one term.
- **Window sums instead of traces.** Phase summaries only need window means. The window sum of
  a filtered train is accumulated per spike (each spike's total kernel weight inside the
  window); the apical voltage is linear in the feedback signal, so its window mean is
  ``Y @ (window mean of the signal)``, and per step only when ``g_A > 0`` (then it drives the
  soma). With random plateau times each neuron picks the window of its delay (at most
  ``plateau_time_max + 1`` distinct windows).
- **Sparse inputs.** Only inputs with a nonzero pixel can spike; ``exp(-rate)`` of each is
  computed once per example, and updates of the first weights touch only rows whose
  ``sbar`` is nonzero.

State layout: vectors over all layers are concatenated (``Cfg.noff[l]`` is where layer l
starts; layer 0 is the input); the spike history ``Net.hist`` is a ring of ``taps`` rows,
row ``clock % taps`` holding the current step. Weights: ``WT`` holds ``W[m].T`` (n_m x
n_{m+1}) at ``Cfg.woff[m]``, ``YT`` holds ``Y.T`` of hidden layer l (n_src x n_l) at
``Cfg.yoff[l]``; ``B`` the biases at the layers' offsets.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np
from numba import prange

from segdend.engines._numba_prims import (
    JIT_OPTIONS,
    exact_filter_step,
    fast_exp,
    feedback_error,
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
    "taps", "kappa", "exact", "decay_L", "decay_s", "tau_gap",
    "phi_max", "dt", "g_L", "g_B", "g_A", "g_D", "E_E", "E_I", "k_B", "k_D", "P_hidden", "P_out",
    "fb_rates", "random_plateau", "plateau_sd", "plateau_max", "integ_last",
    "rule", "layerwise", "fb_learning", "eta", "eta_fb", "feedback_mode", "noise_sd",
])
"""Constants of a config (built once by the engine). ``rule``: 0 local, 1 backprop,
2 feedback alignment; ``feedback_mode``: 0 random, 1 symmetric, 2 noisy symmetric;
``src[l]``: the layer feeding hidden layer l's apical dendrite."""

Net = namedtuple("Net", ["v", "phi", "s", "trace_L", "trace_s", "hist", "ring", "ring_L",
                         "ring_s", "clock"])
"""The carried network state (spiking mode), see the module docstring."""

Work = namedtuple("Work", ["vb", "va", "u", "p0", "ridx", "vacc", "phacc", "sacc", "fbacc",
                           "wstart", "wend", "delays", "nz", "x_rate", "x_p0", "nnz"])
"""Scratch buffers and the window sums of one phase."""

Summary = namedtuple("Summary", ["vbar_f", "sbar_f", "abar_f", "alpha_f", "sbfb_f",
                                 "phibar_t", "abar_t", "alpha_t", "scratch"])
"""What the updates need of an example (vectors over all layers): forward-phase means of
somata, filtered trains (by presynaptic layer), apical voltages, plateaus and feedback
signals (by source layer); target-phase rates and plateaus."""

RATE, SYMMETRIC, NOISY = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Allocation


@numba.njit(**JIT_OPTIONS)
def new_net(c):
    n_all = c.noff[-1]
    return Net(np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
               np.zeros(n_all), np.zeros((c.taps, n_all)), np.zeros((c.taps, n_all)),
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
                np.zeros(c.taps, dtype=np.int64), np.zeros(n_all), np.zeros(n_all),
                np.zeros(n_all), np.zeros((n_windows, n_all)),
                np.zeros(n_windows, dtype=np.int64), np.zeros(n_windows, dtype=np.int64),
                np.zeros(n_all, dtype=np.int64), np.zeros(n0, dtype=np.int64), np.zeros(n0),
                np.zeros(n0), np.zeros(1, dtype=np.int64))


@numba.njit(**JIT_OPTIONS)
def new_summary(c):
    n_all = c.noff[-1]
    return Summary(np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
                   np.zeros(n_all), np.zeros(n_all), np.zeros(n_all), np.zeros(n_all),
                   np.zeros(n_all))


# ---------------------------------------------------------------------------------------------
# One phase, step by step (MODEL.md 2-4)


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
    """``ring[k] = W @ S(t-k)`` (truncated kernel) or ``ring_L/ring_s = W @ trace_L/trace_s``
    (exact) from the spike history, for a state that comes from outside."""
    sizes, noff, woff = c.sizes, c.noff, c.woff
    top = sizes.size - 1
    net.ring[:, :] = 0.0
    net.ring_L[:] = 0.0
    net.ring_s[:] = 0.0
    for l in range(top):
        n_post, post = sizes[l + 1], noff[l + 1]
        for j in range(sizes[l]):
            w0 = woff[l] + j * n_post
            if c.exact:
                a_l, a_s = net.trace_L[noff[l] + j], net.trace_s[noff[l] + j]
                for i in range(n_post):
                    net.ring_L[post + i] += a_l * WT[w0 + i]
                    net.ring_s[post + i] += a_s * WT[w0 + i]
            else:
                for k in range(c.taps):
                    cnt = net.hist[k, noff[l] + j]
                    if cnt != 0.0:
                        for i in range(n_post):
                            net.ring[k, post + i] += cnt * WT[w0 + i]


@numba.njit(**JIT_OPTIONS)
def filtered_now(c, net, ridx, l):
    """``s_l = dynamics.filtered_spikes(kappa, history)`` from the ring (truncated kernel)."""
    base, n = c.noff[l], c.sizes[l]
    for i in range(n):
        net.s[base + i] = 0.0
    for k in range(c.taps):
        kk = c.kappa[k]
        row = net.hist[ridx[k]]
        for i in range(n):
            net.s[base + i] += kk * row[base + i]


@numba.njit(**JIT_OPTIONS)
def run_phase(c, WT, B, YT, net, wk, key, phase, T, first, nwin, label, sum_s, sum_fb):
    """Simulate one phase of ``T`` steps (MODEL.md 3; target phase when ``label >= 0``).

    Leaves in ``wk`` the window sums over steps ``first .. first+nwin-1`` of somatic voltages
    (``vacc``) and rates (``phacc``) of every layer; with ``sum_s`` those of the filtered
    trains of every presynaptic layer (``sacc``); with ``sum_fb`` those of the apical feedback
    signals (by source layer, ``fbacc[0]``) and, for random plateau times, over each delay's
    plateau window (``fbacc[1 + delay]``).
    """
    sizes, noff, woff, kappa = c.sizes, c.noff, c.woff, c.kappa
    top = sizes.size - 1
    taps = c.taps
    v, phi, s, hist, ring = net.v, net.phi, net.s, net.hist, net.ring
    vb, va, uu, pp, ridx = wk.vb, wk.va, wk.u, wk.p0, wk.ridx
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
    for t in range(T):
        slot = clock % taps
        for k in range(taps):
            ridx[k] = (slot - k) % taps
        in_win = first <= t < first + nwin

        # Apical signals as they stand before their source's update: step t-1 (MODEL.md 3).
        if sum_fb and fb_lo <= t <= fb_hi:
            signal = phi if c.fb_rates else s
            for w in range(n_windows):
                if wstart[w] <= t <= wend[w]:
                    for l in range(2, top + 1):
                        if c.is_source[l]:
                            for j in range(noff[l], noff[l] + sizes[l]):
                                fbacc[w, j] += signal[j]

        hrow = hist[slot]
        rrow = ring[slot]
        hrow[:] = 0.0
        rrow[:] = 0.0

        # Input spikes first (MODEL.md 3), rows of W[0].T into the ring of layer 1.
        nnz = wk.nnz[0]
        for q in range(nnz):
            uu[q] = uniform(key, spike_counter(phase, t, 0, np.uint64(wk.nz[q])))
        n1, post = sizes[1], noff[1]
        for q in range(nnz):
            if uu[q] >= wk.x_p0[q]:
                j = wk.nz[q]
                cnt = poisson_tail(wk.x_rate[q], uu[q], wk.x_p0[q])
                hrow[j] = cnt
                w0 = woff[0] + j * n1
                for i in range(n1):
                    rrow[post + i] += cnt * WT[w0 + i]
                if per_spike:
                    sacc[j] += cnt * wgt[t + taps]
        if c.exact:
            for j in range(sizes[0]):
                net.trace_L[j], net.trace_s[j], s[j] = exact_filter_step(
                    net.trace_L[j], net.trace_s[j], hrow[j], c.decay_L, c.decay_s, c.tau_gap)
            if sum_s and in_win:
                for j in range(sizes[0]):
                    sacc[j] += s[j]

        # Layers bottom-up: dendrites, soma, spikes.
        for l in range(1, top + 1):
            n, base = sizes[l], noff[l]
            # basal dendrite: dynamics.dendrite through the ring
            if c.exact:
                for i in range(n):
                    net.ring_L[base + i], net.ring_s[base + i], vb[i] = exact_filter_step(
                        net.ring_L[base + i], net.ring_s[base + i], rrow[base + i],
                        c.decay_L, c.decay_s, c.tau_gap)
            else:
                for i in range(n):
                    vb[i] = 0.0
                for k in range(taps):
                    kk = kappa[k]
                    row = ring[ridx[k]]
                    for i in range(n):
                        vb[i] += kk * row[base + i]
            for i in range(n):
                vb[i] += B[base + i]

            if l < top:
                if gA_on:  # apical dendrite: dynamics.dendrite(Y, s_fb, 0)
                    src = c.src[l]
                    signal = phi if c.fb_rates else s
                    y0 = c.yoff[l]
                    for i in range(n):
                        va[i] = 0.0
                    for j in range(sizes[src]):
                        f = signal[noff[src] + j]
                        if f != 0.0:
                            for i in range(n):
                                va[i] += f * YT[y0 + j * n + i]
                # va is zero when g_A = 0: the apical term is then 0 * (V_a - V), as in the
                # reference.
                for i in range(n):
                    vi = hidden_soma_step(v[base + i], vb[i], va[i], c.g_L, c.g_B, c.g_A, c.dt)
                    ph = rate_fast(vi, c.phi_max)
                    v[base + i] = vi
                    phi[base + i] = ph
                    uu[i] = uniform(key, spike_counter(phase, t, l, np.uint64(i)))
                    pp[i] = fast_exp(-ph)
            else:
                for i in range(n):
                    ui = v[base + i]
                    current = 0.0
                    if label >= 0:  # dynamics.teaching_conductances
                        g_E = 1.0 if i == label else 0.0
                        current = teaching_current(ui, g_E, 1.0 - g_E, c.E_E, c.E_I)
                    vi = output_soma_step(ui, vb[i], current, c.g_L, c.g_D, c.dt)
                    ph = rate_fast(vi, c.phi_max)
                    v[base + i] = vi
                    phi[base + i] = ph
                    uu[i] = uniform(key, spike_counter(phase, t, l, np.uint64(i)))
                    pp[i] = fast_exp(-ph)

            # spikes (dynamics.poisson_from_uniform), rows of W[l].T into the ring above
            n_post = sizes[l + 1] if l < top else 0
            post = noff[l + 1] if l < top else 0
            for i in range(n):
                if uu[i] >= pp[i]:
                    cnt = poisson_tail(phi[base + i], uu[i], pp[i])
                    hrow[base + i] = cnt
                    if l < top:
                        w0 = woff[l] + i * n_post
                        for q in range(n_post):
                            rrow[post + q] += cnt * WT[w0 + q]
                        if per_spike:
                            sacc[base + i] += cnt * wgt[t + taps]

            if c.exact:
                for i in range(n):
                    net.trace_L[base + i], net.trace_s[base + i], s[base + i] = \
                        exact_filter_step(net.trace_L[base + i], net.trace_s[base + i],
                                          hrow[base + i], c.decay_L, c.decay_s, c.tau_gap)
                if sum_s and in_win and l < top:
                    for i in range(n):
                        sacc[base + i] += s[base + i]
            elif c.is_source[l] and (gA_on or t == T - 1 or (sum_fb and fb_lo <= t + 1 <= fb_hi)):
                filtered_now(c, net, ridx, l)

            if in_win:
                for i in range(n):
                    vacc[base + i] += v[base + i]
                    phacc[base + i] += phi[base + i]
        clock += 1
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
        if not c.random_plateau:
            for i in range(n):
                abar[base + i] = 0.0
            for j in range(ns):
                f = wk.fbacc[0, sb + j] / nwin
                for i in range(n):
                    abar[base + i] += f * YT[y0 + j * n + i]
        else:
            for i in range(n):
                w = 1 + wk.delays[base + i]
                count = wk.wend[w] - wk.wstart[w] + 1
                acc = 0.0
                for j in range(ns):
                    acc += YT[y0 + j * n + i] * (wk.fbacc[w, sb + j] / count)
                abar[base + i] = acc
        alpha[base:base + n] = plateau(abar[base:base + n])


@numba.njit(**JIT_OPTIONS)
def apply_update(c, WT, B, net, m, E, sbar, eta, P, fix_rings):
    """plasticity.apply_update on the transposed weights ``W[m].T``: ``W -= eta P outer(E,
    sbar)`` (rows with ``sbar = 0`` are unchanged), ``b -= eta P E``; then the same rank-one
    correction of the ring ``W @ S(t-k)`` of layer m+1."""
    n_in, n_out = c.sizes[m], c.sizes[m + 1]
    pre, post, w0 = c.noff[m], c.noff[m + 1], c.woff[m]
    coef = eta * P
    for j in range(n_in):
        sj = sbar[pre + j]
        if sj != 0.0:
            row = w0 + j * n_out
            for i in range(n_out):
                WT[row + i] -= coef * (E[i] * sj)
    for i in range(n_out):
        B[post + i] -= coef * E[i]
    if not fix_rings:
        return
    if c.exact:
        dot_l = 0.0
        dot_s = 0.0
        for j in range(n_in):
            dot_l += sbar[pre + j] * net.trace_L[pre + j]
            dot_s += sbar[pre + j] * net.trace_s[pre + j]
        for i in range(n_out):
            net.ring_L[post + i] -= coef * dot_l * E[i]
            net.ring_s[post + i] -= coef * dot_s * E[i]
    else:
        for k in range(c.taps):
            dot = 0.0
            for j in range(n_in):
                dot += sbar[pre + j] * net.hist[k, pre + j]
            if dot != 0.0:
                for i in range(n_out):
                    net.ring[k, post + i] -= coef * dot * E[i]


@numba.njit(**JIT_OPTIONS)
def update_network(c, WT, B, YT, net, sm, fix_rings, angle_parts):
    """plasticity.update_network on the engine's layout: the output layer first, then the
    hidden layers top-down (backprop errors use the weights above after their update).
    ``angle_parts[m]`` gets (E.E_bp, E.E, E_bp.E_bp) of hidden layer m."""
    sizes, noff = c.sizes, c.noff
    top = sizes.size - 1
    tb, nt = noff[top], sizes[top]
    e_top = output_error(sm.phibar_t[tb:tb + nt], sm.vbar_f[tb:tb + nt], c.phi_max, c.k_D)
    apply_update(c, WT, B, net, top - 1, e_top, sm.sbar_f, c.eta[top - 1], c.P_out, fix_rings)
    e_bp_above = e_top
    e_above = e_top
    for l in range(top - 1, 0, -1):
        m = l - 1
        n, base, n_up = sizes[l], noff[l], sizes[l + 1]
        vbar = sm.vbar_f[base:base + n]
        w_up = c.woff[l]
        e_bp = hidden_error_propagated(WT[w_up:w_up + n * n_up].reshape((n, n_up)), e_bp_above,
                                       vbar, c.phi_max, c.k_B)
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
                for i in range(n):
                    YT[y0 + j * n + i] -= c.eta_fb[m] * (e_inv[i] * f)
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
    if c.feedback_mode == RATE:
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
                for i in range(n):
                    acc = 0.0
                    for k in range(n_up):
                        acc += WT[w0 + i * n_up + k] * YT[y1 + j * n_up + k]
                    YT[y0 + j * n + i] = acc
        else:
            for j in range(n_up):
                for i in range(n):
                    YT[y0 + j * n + i] = WT[w0 + i * n_up + j]
    if c.feedback_mode == NOISY:
        for l in range(1, top):
            n, ns, y0 = sizes[l], sizes[c.src[l]], yoff[l]
            for i in range(n):
                for j in range(ns):
                    z = layer_normal(noise_key, 0, l, i * ns + j)
                    YT[y0 + j * n + i] += c.noise_sd * z


@numba.njit(**JIT_OPTIONS)
def record_example(c, sm, label, e, loss_out, loss_hidden, correct):
    """Losses of MODEL.md 5 and whether the forward phase picked the label."""
    sizes, noff = c.sizes, c.noff
    top = sizes.size - 1
    tb, nt = noff[top], sizes[top]
    loss_out[e] = output_loss(sm.phibar_t[tb:tb + nt], sm.vbar_f[tb:tb + nt], c.phi_max)
    for l in range(1, top):
        b, n = noff[l], sizes[l]
        loss_hidden[e, l - 1] = hidden_loss(sm.alpha_t[b:b + n], sm.alpha_f[b:b + n])
    correct[e] = np.argmax(sm.vbar_f[tb:tb + nt]) == label


# ---------------------------------------------------------------------------------------------
# Kernels: spiking mode


@numba.njit(cache=True, **JIT_OPTIONS)
def train_spiking(c, WT, B, YT, net, pixels, labels, lengths, windows, keys, plateau_keys,
                  noise_keys, loss_out, loss_hidden, correct, angle_parts):
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
                      -1 if p == 0 else labels[e], p == 0, top > 1)
            if p == 0:
                for j in range(n_all):
                    sm.vbar_f[j] = wk.vacc[j] / nwin
                    sm.sbar_f[j] = wk.sacc[j] / nwin
                    sm.sbfb_f[j] = wk.fbacc[0, j] / nwin
                apical_means(c, YT, wk, nwin, sm.abar_f, sm.alpha_f)
            else:
                for j in range(n_all):
                    sm.phibar_t[j] = wk.phacc[j] / nwin
                apical_means(c, YT, wk, nwin, sm.abar_t, sm.alpha_t)
        record_example(c, sm, labels[e], e, loss_out, loss_hidden, correct)
        update_network(c, WT, B, YT, net, sm, True, angle_parts[e])
        refresh_feedback(c, WT, YT, noise_keys[e])


@numba.njit(cache=True, parallel=True, **JIT_OPTIONS)
def test_spiking(c, WT, B, YT, pixels, keys, T, nwin, n_blocks, out_v, out_rates):
    """ReferenceEngine.test in spiking mode: each image from a cleared state, one forward
    phase of ``T`` steps averaged over its last ``nwin`` (MODEL.md 9); images in parallel."""
    sizes, noff = c.sizes, c.noff
    top = sizes.size - 1
    n_img = pixels.shape[0]
    for blk in prange(n_blocks):
        lo = blk * n_img // n_blocks
        hi = (blk + 1) * n_img // n_blocks
        net = new_net(c)
        wk = new_work(c)
        for e in range(lo, hi):
            clear_net(net)
            set_input(c, pixels[e], wk, net)
            run_phase(c, WT, B, YT, net, wk, keys[e], 0, T, T - nwin, nwin, -1, False, False)
            for i in range(sizes[top]):
                out_v[e, i] = wk.vacc[noff[top] + i] / nwin
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
        for j in range(sizes[l - 1]):
            r = rates[pre + j]
            if r != 0.0:
                w0 = woff[l - 1] + j * n
                for i in range(n):
                    vb[i] += r * WT[w0 + i]
        for i in range(n):
            vb[i] += B[base + i]
        if l < top:
            for i in range(n):
                vi = rate_hidden_soma(vb[i], c.k_B)
                sm.vbar_f[base + i] = vi
                rates[base + i] = rate_fast(vi, c.phi_max)
        else:
            for i in range(n):
                vi = rate_output_soma(vb[i], 0.0, 0.0, c.g_L, c.g_D, c.E_E, c.E_I)
                sm.vbar_f[base + i] = vi
                rates[base + i] = rate_fast(vi, c.phi_max)
                if label >= 0:
                    g_E = 1.0 if i == label else 0.0
                    ui = rate_output_soma(vb[i], g_E, 1.0 - g_E, c.g_L, c.g_D, c.E_E, c.E_I)
                    sm.phibar_t[base + i] = rate_fast(ui, c.phi_max)
    if label < 0:
        return
    # plateaus: Y @ phibar of the source, forward and target
    tb = noff[top]
    for l in range(1, top):
        n, base, src, y0 = sizes[l], noff[l], c.src[l], c.yoff[l]
        sb = noff[src]
        for i in range(n):
            sm.abar_f[base + i] = 0.0
            sm.abar_t[base + i] = 0.0
        for j in range(sizes[src]):
            f = rates[sb + j]
            g = sm.phibar_t[sb + j] if sb == tb else f
            for i in range(n):
                sm.abar_f[base + i] += f * YT[y0 + j * n + i]
                sm.abar_t[base + i] += g * YT[y0 + j * n + i]
        sm.alpha_f[base:base + n] = plateau(sm.abar_f[base:base + n])
        sm.alpha_t[base:base + n] = plateau(sm.abar_t[base:base + n])


@numba.njit(cache=True, **JIT_OPTIONS)
def train_rate(c, WT, B, YT, pixels, labels, noise_keys, loss_out, loss_hidden, correct,
               angle_parts):
    """ReferenceEngine.train in rate mode, for a chunk of examples in order."""
    sm = new_summary(c)
    net = new_net(c)  # unused: rate mode has no ring to correct
    vb = np.zeros(np.max(c.sizes))
    for e in range(pixels.shape[0]):
        rate_forward(c, WT, B, YT, pixels[e], labels[e], sm, sm.scratch, vb)
        sm.sbar_f[:] = sm.scratch
        sm.sbfb_f[:] = sm.scratch
        record_example(c, sm, labels[e], e, loss_out, loss_hidden, correct)
        update_network(c, WT, B, YT, net, sm, False, angle_parts[e])
        refresh_feedback(c, WT, YT, noise_keys[e])


@numba.njit(cache=True, parallel=True, **JIT_OPTIONS)
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
            for j in range(noff[1], noff[top]):
                out_rates[e, j - noff[1]] = sm.scratch[j]
