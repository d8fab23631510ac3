"""One phase of the spiking network, step by step, compiled (MODEL.md 2-4 and 9).

:func:`run_phase` reads like ``ReferenceEngine.run_phase``: each 1-ms step draws the input
spikes, then, layer by layer bottom-up, forms the basal (and apical) dendritic voltages,
integrates the soma, draws the spikes and adds them to what the layer above receives; window
sums are kept for the phase summaries. The arithmetic is the reference engine's,
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

Loops index views (``x[a:b]``) from 0 rather than ``x[a + i]``: Numba's negative-index check on
an offset of unknown sign would stop LLVM from vectorising them. The layout of the arrays is
described in :mod:`segdend.engines._numba_layout`.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np

from segdend.engines._numba_prims import (
    JIT_OPTIONS,
    exact_filter_step,
    fast_exp,
    fma,
    hidden_soma_step,
    output_soma_step,
    poisson_tail,
    rate_fast,
    stream_origin,
    teaching_current,
    uniform_at,
)

# ---------------------------------------------------------------------------------------------
# What a phase is asked for

PhasePlan = namedtuple("PhasePlan", ["phase", "T", "first", "nwin", "label", "sum_v",
                                     "sum_phi", "sum_s", "sum_fb"])
"""One call of :func:`run_phase`: phase index ``phase`` (0 forward, 1 target: it selects the
phase's spike draws) of ``T`` steps, the target phase (teaching conductances towards
``label``) when ``label >= 0``, and the window sums to keep over steps ``first ..
first+nwin-1``: always the output layer's somatic voltages (``wk.vacc``) and rates
(``wk.phacc``); the hidden layers' too with ``sum_v`` and ``sum_phi`` (without ``sum_phi``
the hidden layers' ``net.phi`` is only up to date at the phase's end); with ``sum_s`` those
of the filtered trains of every presynaptic layer (``wk.sacc``); with ``sum_fb`` those of
the apical feedback signals (by source layer, ``wk.fbacc[0]``) and, for random plateau
times, over each delay's plateau window (``wk.fbacc[1 + delay]``)."""


@numba.njit(**JIT_OPTIONS)
def forward_plan(T, first, nwin, sum_v, sum_phi, sum_s, sum_fb):
    """The plan of a forward phase (phase 0, no teaching current; also a test's)."""
    return PhasePlan(0, T, first, nwin, -1, sum_v, sum_phi, sum_s, sum_fb)


@numba.njit(**JIT_OPTIONS)
def target_plan(T, first, nwin, label, sum_fb):
    """The plan of a target phase (MODEL.md 4): teaching conductances towards ``label``; only
    the output layer's window sums and, when asked, the feedback signals'."""
    return PhasePlan(1, T, first, nwin, label, False, False, False, sum_fb)


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
            wk.x_gamma[nnz] = wk.unit_gamma[j]  # its draw's offset, packed with the others
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


@numba.njit(inline="always", **JIT_OPTIONS)
def input_spikes(c, wk, key, phase, t, hrow):
    """Spike counts of the input layer in step t (MODEL.md 3) into ``hrow``, listed in
    ``wk.spk``/``wk.cnt``; only the example's nonzero pixels can spike. Returns their
    number."""
    nnz = wk.nnz[0]
    nz, x_rate, x_p0, x_gamma, uu, cand = wk.nz, wk.x_rate, wk.x_p0, wk.x_gamma, wk.u, wk.cand
    origin = stream_origin(key, phase, t, 0)
    for q in range(nnz):
        uu[q] = uniform_at(origin + x_gamma[q])
    n_spikes = 0
    for q in range(nnz):  # branch-free list of the inputs that spike
        cand[n_spikes] = q
        n_spikes += 1 if uu[q] >= x_p0[q] else 0
    for k in range(n_spikes):
        q = cand[k]
        j = nz[q]
        cnt = poisson_tail(x_rate[q], uu[q], x_p0[q])
        hrow[j] = cnt
        wk.spk[k] = j
        wk.cnt[k] = cnt
    return n_spikes


@numba.njit(inline="always", **JIT_OPTIONS)
def exact_traces(c, net, hrow, base, n, add_to_window, sacc):
    """``dynamics.exact_filter_step`` of units base..base+n-1 (exact kernel): traces and the
    filtered train ``s``, added to the window sums when asked."""
    tr_l, tr_s, s_l = net.trace_L[base:base + n], net.trace_s[base:base + n], \
        net.s[base:base + n]
    h_l = hrow[base:base + n]
    for i in range(n):
        tr_l[i], tr_s[i], s_l[i] = exact_filter_step(tr_l[i], tr_s[i], h_l[i], c.decay_L,
                                                     c.decay_s, c.tau_gap)
    if add_to_window:
        acc = sacc[base:base + n]
        for i in range(n):
            acc[i] += s_l[i]


@numba.njit(inline="always", **JIT_OPTIONS)
def add_window_weights(wk, base, n_spikes, w):
    """Window sums of filtered trains, per spike: each spike's total kernel weight ``w``
    inside the window (see :func:`spike_window_weights`)."""
    if w != 0.0:
        for k in range(n_spikes):
            wk.sacc[base + wk.spk[k]] += wk.cnt[k] * w


@numba.njit(**JIT_OPTIONS)
def spike_window_weights(c, net, wk, T, first, nwin):
    """Weights ``wgt[tp + taps]``: the total kernel weight inside the window of a spike at
    step tp (it enters s(tp + k) with weight kappa(k+1)); and the window sums of the spikes
    of the steps before this phase, added to ``wk.sacc``."""
    taps, kappa, noff = c.taps, c.kappa, c.noff
    top = c.sizes.size - 1
    wgt = np.zeros(taps + T)
    for tp in range(-taps, T):
        w = 0.0
        for k in range(taps):
            if first <= tp + k < first + nwin:
                w += kappa[k]
        wgt[tp + taps] = w
    for age in range(taps):
        w = wgt[taps - 1 - age]
        if w != 0.0:
            row = net.hist[(net.clock[0] - 1 - age) % taps]
            for j in range(noff[top]):
                wk.sacc[j] += row[j] * w
    return wgt


@numba.njit(**JIT_OPTIONS)
def feedback_windows(c, wk, T, first, nwin):
    """Windows of the feedback sums: 0 = the integration window, 1 + d = the plateau window of
    the neurons whose plateau comes d steps before the phase's end (ReferenceEngine.run_phase).
    Returns the first and last step any window covers."""
    wstart, wend = wk.wstart, wk.wend
    wstart[0], wend[0] = first, first + nwin - 1
    for d in range(wstart.size - 1):
        end = T - 1 - d
        start = end - nwin + 1 if c.integ_last else first
        # (a window that would begin before the phase begins with it instead; the reference's
        # slice ``va[start:end + 1]`` would wrap around to the phase's end)
        wstart[1 + d], wend[1 + d] = max(start, 0), end
    return np.min(wstart), np.max(wend)


@numba.njit(inline="always", **JIT_OPTIONS)
def add_feedback_signals(c, net, wk, t):
    """Add the apical feedback signals (by source layer) of step t to the sums of every
    window that covers t; signals as they stand before their source's update (step t-1)."""
    top = c.sizes.size - 1
    signal = net.phi if c.fb_rates else net.s
    for w in range(wk.wstart.size):
        if wk.wstart[w] <= t <= wk.wend[w]:
            for l in range(2, top + 1):
                if c.is_source[l]:
                    acc_w = wk.fbacc[w, c.noff[l]:c.noff[l + 1]]
                    sig_l = signal[c.noff[l]:c.noff[l + 1]]
                    for j in range(c.sizes[l]):
                        acc_w[j] += sig_l[j]


@numba.njit(**JIT_OPTIONS)
def run_phase(c, WT, B, YT, net, wk, key, plan):
    """Simulate one phase as ``plan`` (a :class:`PhasePlan`) says (MODEL.md 3), from the
    state in ``net``, with the weights ``WT``, ``B``, ``YT`` and the example's stream ``key``;
    leaves the window sums the plan asks for in ``wk``."""
    phase, T, first, nwin, label = plan.phase, plan.T, plan.first, plan.nwin, plan.label
    sum_v, sum_phi, sum_s, sum_fb = plan.sum_v, plan.sum_phi, plan.sum_s, plan.sum_fb
    sizes, noff, woff, kappa = c.sizes, c.noff, c.woff, c.kappa
    top = sizes.size - 1
    taps = c.taps
    n_ring = net.ring.shape[0]
    v, phi, s, hist, ring = net.v, net.phi, net.s, net.hist, net.ring
    vb, va, uu, p0s, phc, ridx, didx = wk.vb, wk.va, wk.u, wk.p0, wk.phc, wk.ridx, wk.didx
    cand, spk, cnts, unit_gamma = wk.cand, wk.spk, wk.cnt, wk.unit_gamma
    vacc, phacc, sacc, fbacc = wk.vacc, wk.phacc, wk.sacc, wk.fbacc
    gA_on = not c.segregated
    vacc[:] = 0.0
    phacc[:] = 0.0

    fb_lo, fb_hi = feedback_windows(c, wk, T, first, nwin)
    if sum_fb:
        fbacc[:, :] = 0.0
    per_spike = sum_s and not c.exact  # window sums of filtered trains, per spike
    if sum_s:
        sacc[:] = 0.0
    wgt = spike_window_weights(c, net, wk, T, first, nwin) if per_spike else np.zeros(0)

    clock = net.clock[0]
    slot, dslot = clock % taps, clock % n_ring
    for t in range(T):
        for k in range(taps):  # rows of steps t, t-1, ... (no integer division per step)
            ridx[k] = slot - k if slot >= k else slot - k + taps
            didx[k] = dslot - k if dslot >= k else dslot - k + n_ring
        oldest = dslot + 1 if dslot + 1 < n_ring else 0  # D(t - taps)
        in_win = first <= t < first + nwin

        if sum_fb and fb_lo <= t <= fb_hi:
            add_feedback_signals(c, net, wk, t)

        # This step's rows of the spike history and of the ring D = W @ S.
        hrow = hist[slot]
        rrow = ring[dslot]
        hrow[:] = 0.0
        rrow[noff[1]:] = 0.0  # columns of the layers that receive D(t)

        # Input spikes first (MODEL.md 3), rows of W[0].T into the ring of layer 1.
        n_spikes = input_spikes(c, wk, key, phase, t, hrow)
        if per_spike:
            add_window_weights(wk, 0, n_spikes, wgt[t + taps])
        add_rows(WT, woff[0], sizes[1], spk, cnts, n_spikes, rrow[noff[1]:noff[2]])
        if c.exact:
            exact_traces(c, net, hrow, 0, sizes[0], sum_s and in_win, sacc)

        # Layers bottom-up: dendrites, soma, spikes.
        for l in range(1, top + 1):
            n, base = sizes[l], noff[l]
            v_l, phi_l, h_l = v[base:base + n], phi[base:base + n], hrow[base:base + n]
            b_l = B[base:base + n]

            # Basal dendrite: dynamics.dendrite(W, filtered spikes below, b) through the ring.
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

            # Apical dendrite and soma (hidden) or teaching current and soma (output), and
            # the spike uniforms.
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
                origin = stream_origin(key, phase, t, l)
                for i in range(n):
                    v_l[i] = hidden_soma_step(v_l[i], vb[i], va[i], g_L, g_B, g_A, dt)
                    uu[i] = uniform_at(origin + unit_gamma[i])
                # Every unit's rate is needed for window sums, as a feedback signal and in the
                # state at the phase's end; otherwise only the spike candidates' (below).
                if (sum_phi and in_win) or (c.fb_rates and c.is_source[l]) or t == T - 1:
                    for i in range(n):
                        phi_l[i] = rate_fast(v_l[i], c.phi_max)
            else:
                g_L, g_D, dt, E_E, E_I = c.g_L, c.g_D, c.dt, c.E_E, c.E_I
                origin = stream_origin(key, phase, t, l)
                for i in range(n):
                    current = 0.0
                    if label >= 0:  # dynamics.teaching_conductances
                        g_E = 1.0 if i == label else 0.0
                        current = teaching_current(v_l[i], g_E, 1.0 - g_E, E_E, E_I)
                    vi = output_soma_step(v_l[i], vb[i], current, g_L, g_D, dt)
                    v_l[i] = vi
                    phi_l[i] = rate_fast(vi, c.phi_max)
                    uu[i] = uniform_at(origin + unit_gamma[i])

            # Spikes (dynamics.poisson_from_uniform): a unit whose uniform is under
            # exp(-phi_max) <= exp(-phi) does not spike; phi and exp(-phi) of the others.
            # (This step stays inline: as a function, even inlined, it cost 3-10%.)
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
                exact_traces(c, net, hrow, base, n, sum_s and in_win and l < top, sacc)
            elif c.is_source[l] and (gA_on or t == T - 1 or (sum_fb and fb_lo <= t + 1 <= fb_hi)):
                filtered_now(c, net, ridx, l)

            # Window sums for the phase summaries.
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
