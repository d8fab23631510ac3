"""Compiled kernels of the Numba engine (MODEL.md 2-9).

One call trains on a whole chunk of examples, or tests a whole batch of images (in parallel
over images), so Python is entered once per chunk. The pieces live by concept:
:mod:`~segdend.engines._numba_layout` (constants, carried state, scratch),
:mod:`~segdend.engines._numba_phase` (one phase, step by step),
:mod:`~segdend.engines._numba_learn` (summaries and updates); the equations themselves are
:mod:`segdend.dynamics`, :mod:`segdend.plasticity` and :mod:`segdend.rng`, compiled.
"""

from __future__ import annotations

import numba
from numba import prange

from segdend.engines._numba_layout import (  # noqa: F401 - the engine's names for the layout
    Cfg,
    Net,
    RateWork,
    Summary,
    Work,
    clear_net,
    new_net,
    new_rate_work,
    new_summary,
    new_work,
    transpose_into,
)
from segdend.engines._numba_learn import (
    apical_means,
    record_example,
    refresh_feedback,
    set_plateau_delays,
    update_network,
)
from segdend.engines._numba_phase import (
    forward_plan,
    rebuild_rings,
    run_phase,
    set_input,
    target_plan,
)
from segdend.engines._numba_prims import (
    JIT_OPTIONS,
    cached_njit,
    plateau,
    rate_fast,
    rate_hidden_soma,
    rate_output_soma,
)

# ---------------------------------------------------------------------------------------------
# Kernels: spiking mode


@cached_njit(**JIT_OPTIONS)
def train_spiking(c, WT, B, YT, KT, net, pixels, labels, lengths, windows, keys, plateau_keys,
                  noise_keys, burst_keys, loss_out, loss_hidden, correct, angle_parts, ubar_f):
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
            if p == 0:
                plan = forward_plan(lengths[e, 0], first, nwin, True, False, True, top > 1)
            else:
                plan = target_plan(lengths[e, 1], first, nwin, labels[e], top > 1)
            run_phase(c, WT, B, YT, net, wk, keys[e], plan)
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
        update_network(c, WT, B, YT, KT, net, sm, True, angle_parts[e], burst_keys[e])
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
            run_phase(c, WT, B, YT, net, wk, keys[e],
                      forward_plan(T, T - nwin, nwin, False, hidden, False, False))
            for i in range(sizes[top]):
                out_v[e, i] = wk.vacc[noff[top] + i] / nwin
            if hidden:
                for j in range(noff[1], noff[top]):
                    out_rates[e, j - noff[1]] = wk.phacc[j] / nwin


# ---------------------------------------------------------------------------------------------
# Kernels: rate mode (MODEL.md 8)


@numba.njit(**JIT_OPTIONS)
def add_scaled_rows(acc, M, rows, coefs, count):
    """``acc[i] += coefs[k] * M[rows[k], i]`` for ``k = 0 .. count-1`` in that order: the
    sum over presynaptic units of dynamics.dendrite (MODEL.md 3, 8), one row per unit.

    Four rows per pass over ``acc``: each element still gets the same products added one at
    a time in the same order (``((acc + p0) + p1) + ...``, a mul then an add each), but
    ``acc`` is loaded and stored once per four rows instead of once per row, which is what
    bounds a row-at-a-time loop. (The spiking kernels' ``_numba_phase.add_rows`` fuses each
    product into an fma instead, hence the two names: rate mode adds a rounded product, as it
    always has.)"""
    n = acc.size
    k = 0
    while k + 4 <= count:
        r0, r1, r2, r3 = coefs[k], coefs[k + 1], coefs[k + 2], coefs[k + 3]
        w0, w1, w2, w3 = M[rows[k]], M[rows[k + 1]], M[rows[k + 2]], M[rows[k + 3]]
        for i in range(n):
            acc[i] = acc[i] + r0 * w0[i] + r1 * w1[i] + r2 * w2[i] + r3 * w3[i]
        k += 4
    while k < count:
        r, w = coefs[k], M[rows[k]]
        for i in range(n):
            acc[i] += r * w[i]
        k += 1


@numba.njit(**JIT_OPTIONS)
def rate_forward(c, WT, B, YT, pixels, label, sm, rates, rw):
    """ReferenceEngine.rate_phase for the forward phase and, when ``label >= 0``, the target
    phase (the hidden layers are the same in both). Fills ``sm.vbar_f``, ``sm.phibar_t``
    (output), plateaus; ``rates`` gets every layer's forward rates (= sbar_f and sbar_fb_f).
    ``rw``: the example's scratch (``_numba_layout.RateWork``)."""
    sizes, noff, woff = c.sizes, c.noff, c.woff
    vb, rows, coefs = rw.vb, rw.rows, rw.coefs
    top = sizes.size - 1
    for j in range(sizes[0]):
        rates[j] = c.phi_max * pixels[j]
    for l in range(1, top + 1):
        n, base, pre, n_pre = sizes[l], noff[l], noff[l - 1], sizes[l - 1]
        v_acc = vb[:n]
        v_acc[:] = 0.0
        count = 0  # dynamics.dendrite, skipping silent presynaptic units
        for j in range(n_pre):
            r = rates[pre + j]
            if r != 0.0:
                rows[count] = j
                coefs[count] = r
                count += 1
        w_l = WT[woff[l - 1]:woff[l]].reshape((n_pre, n))
        add_scaled_rows(v_acc, w_l, rows, coefs, count)
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
    # plateaus: Y @ phibar of the source, forward and target (every source unit, zero or not)
    tb = noff[top]
    for l in range(1, top):
        n, base, src, y0 = sizes[l], noff[l], c.src[l], c.yoff[l]
        sb, ns = noff[src], sizes[src]
        a_f, a_t = sm.abar_f[base:base + n], sm.abar_t[base:base + n]
        a_f[:] = 0.0
        a_t[:] = 0.0
        y_l = YT[y0:y0 + ns * n].reshape((ns, n))
        for j in range(ns):
            rows[j] = j
        add_scaled_rows(a_f, y_l, rows, rates[sb:sb + ns], ns)
        add_scaled_rows(a_t, y_l, rows,
                        sm.phibar_t[sb:sb + ns] if sb == tb else rates[sb:sb + ns], ns)
        sm.alpha_f[base:base + n] = plateau(sm.abar_f[base:base + n])
        sm.alpha_t[base:base + n] = plateau(sm.abar_t[base:base + n])


@cached_njit(**JIT_OPTIONS)
def train_rate(c, WT, B, YT, KT, pixels, labels, noise_keys, burst_keys, loss_out, loss_hidden,
               correct, angle_parts, ubar_f):
    """ReferenceEngine.train in rate mode, for a chunk of examples in order."""
    sm = new_summary(c)
    net = new_net(c)  # unused: rate mode has no ring to correct
    rw = new_rate_work(c)
    for e in range(pixels.shape[0]):
        rate_forward(c, WT, B, YT, pixels[e], labels[e], sm, sm.scratch, rw)
        sm.sbar_f[:] = sm.scratch
        sm.sbfb_f[:] = sm.scratch
        record_example(c, sm, labels[e], e, loss_out, loss_hidden, correct, ubar_f)
        update_network(c, WT, B, YT, KT, net, sm, False, angle_parts[e], burst_keys[e])
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
        rw = new_rate_work(c)
        for e in range(lo, hi):
            rate_forward(c, WT, B, YT, pixels[e], -1, sm, sm.scratch, rw)
            for i in range(sizes[top]):
                out_v[e, i] = sm.vbar_f[noff[top] + i]
            if out_rates.shape[0] > 0:
                for j in range(noff[1], noff[top]):
                    out_rates[e, j - noff[1]] = sm.scratch[j]
