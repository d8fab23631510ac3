"""Phase summaries and learning on the Numba engine's layout (MODEL.md 4-7).

Plateau potentials from the window sums, the weight and bias updates of
:mod:`segdend.plasticity` (compiled from that source by :mod:`segdend.engines._numba_prims`)
applied to the transposed weights with the matching correction of the synaptic ring, the
feedback variants, and the per-example losses.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np

from segdend.engines import _numba_layout as layout
from segdend.engines._numba_prims import (
    JIT_OPTIONS,
    dot,
    dot_sparse,
    feedback_error,
    hidden_error,
    hidden_error_propagated,
    hidden_loss,
    layer_normal,
    output_error,
    output_loss,
    plateau_delay,
    plateau_fast,
    refresh_variant,
    spike_counter,
    uniform,
)

Cfg = namedtuple("Cfg", [*layout.Cfg._fields, "rule_draws", "rule_needs_bp", "burst_scale",
                         "feedback_derived"])
"""The layout's constants (:data:`segdend.engines._numba_layout.Cfg`), the learning rule's:
``rule`` its index in ``plasticity.HIDDEN_RULES`` (:func:`~segdend.engines._numba_prims.
rule_index`), ``rule_draws`` / ``rule_needs_bp`` its ``Rule.draws`` / ``Rule.needs_bp``,
``burst_scale`` ``training.burst_scale``; and the feedback variant's: ``feedback`` its index
in ``feedback.FEEDBACK_VARIANTS`` (:func:`~segdend.engines._numba_prims.feedback_index`),
``feedback_derived`` its ``Feedback.derived``."""

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
def apply_update(c, WT, B, net, m, E, sbar, coef, fix_rings):
    """plasticity.apply_update on the transposed weights ``W[m].T``: ``W -= eta P outer(E,
    sbar)`` (rows with ``sbar = 0`` are unchanged), ``b -= eta P E`` with ``coef = eta P``
    (``Cfg.eta_P[m]``); then the same rank-one correction of the ring ``W @ S(t-k)`` of
    layer m+1 and of its sums."""
    n_in, n_out = c.sizes[m], c.sizes[m + 1]
    pre, post, w0 = c.noff[m], c.noff[m + 1], c.woff[m]
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
        dot_l = dot(sbar_m, net.trace_L[pre:pre + n_in])
        dot_s = dot(sbar_m, net.trace_s[pre:pre + n_in])
        for i in range(n_out):
            r_l[i] -= coef * dot_l * E[i]
            r_s[i] -= coef * dot_s * E[i]
        return
    clock, taps, n_ring = net.clock[0], c.taps, net.ring.shape[0]
    sum_l = 0.0
    sum_s = 0.0
    pow_l, pow_s = c.decay_L, c.decay_s
    for age in range(taps):
        overlap = dot_sparse(sbar_m, net.hist[(clock - 1 - age) % taps, pre:pre + n_in])
        if overlap != 0.0:
            r_k = net.ring[(clock - 1 - age) % n_ring, post:post + n_out]
            for i in range(n_out):
                r_k[i] -= coef * overlap * E[i]
        sum_l += pow_l * overlap
        sum_s += pow_s * overlap
        pow_l *= c.decay_L
        pow_s *= c.decay_s
    if c.recursive:
        for i in range(n_out):
            r_l[i] -= coef * sum_l * E[i]
            r_s[i] -= coef * sum_s * E[i]


@numba.njit(**JIT_OPTIONS)
def update_network(c, WT, B, YT, KT, net, sm, fix_rings, angle_parts, burst_key):
    """plasticity.update_network on the engine's layout: the output layer first, then the
    hidden layers top-down, each by the rule of plasticity.HIDDEN_RULES (backprop errors use
    the weights above after their update). ``angle_parts[m]`` gets (E.E_bp, E.E, E_bp.E_bp)
    of hidden layer m; the backprop errors are computed only when the rule or this recording
    uses them, the rule's uniforms (``rng.layer_uniforms(burst_key, phase, 0, l, n)``) only
    when it draws."""
    sizes, noff = c.sizes, c.noff
    top = sizes.size - 1
    tb, nt = noff[top], sizes[top]
    e_top = output_error(sm.phibar_t[tb:tb + nt], sm.vbar_f[tb:tb + nt], c.phi_max, c.k_D)
    apply_update(c, WT, B, net, top - 1, e_top, sm.sbar_f, c.eta_P[top - 1], fix_rings)
    e_bp_above = e_top
    e_above = e_top
    need_bp = c.rule_needs_bp or angle_parts.shape[0] > 0
    for l in range(top - 1, 0, -1):
        m = l - 1
        n, base, n_up = sizes[l], noff[l], sizes[l + 1]
        vbar = sm.vbar_f[base:base + n]
        w_up = c.woff[l]
        w_up_t = WT[w_up:w_up + n * n_up].reshape((n, n_up))
        e_bp = e_bp_above[:0]
        if need_bp:
            e_bp = hidden_error_propagated(w_up_t, e_bp_above, vbar, c.phi_max, c.k_B)
        ns = sizes[c.src[l]]
        y_l = YT[c.yoff[l]:c.yoff[l] + ns * n].reshape((ns, n)).T
        u_t = vbar[:0]
        u_f = vbar[:0]
        if c.rule_draws:
            u_t = np.empty(n)
            u_f = np.empty(n)
            for i in range(n):
                u_f[i] = uniform(burst_key, spike_counter(0, 0, l, np.uint64(i)))
                u_t[i] = uniform(burst_key, spike_counter(1, 0, l, np.uint64(i)))
        e = hidden_error(c.rule, sm.alpha_t[base:base + n], sm.alpha_f[base:base + n], vbar,
                         y_l, e_above if c.layerwise else e_top, w_up_t, e_bp_above, u_t, u_f,
                         c.phi_max, c.k_B, c.burst_scale)
        apply_update(c, WT, B, net, m, e, sm.sbar_f, c.eta_P[m], fix_rings)
        if c.fb_learning:
            e_inv = feedback_error(vbar, sm.alpha_f[base:base + n], sm.abar_f[base:base + n],
                                   c.phi_max)
            src = c.src[l]
            sb, y0 = noff[src], c.yoff[l]
            for j in range(sizes[src]):  # KT: plasticity.feedback_keep in YT's layout
                f = sm.sbfb_f[sb + j]
                y_j = YT[y0 + j * n:y0 + (j + 1) * n]
                k_j = KT[y0 + j * n:y0 + (j + 1) * n]
                for i in range(n):
                    y_j[i] -= c.eta_fb[m] * (e_inv[i] * f) * k_j[i]
        if angle_parts.shape[0] > 0:
            angle_parts[m, 0] = dot(e, e_bp)
            angle_parts[m, 1] = dot(e, e)
            angle_parts[m, 2] = dot(e_bp, e_bp)
        e_bp_above = e_bp
        e_above = e


@numba.njit(**JIT_OPTIONS)
def refresh_feedback(c, WT, YT, noise_key):
    """ReferenceEngine.refresh_feedback on the engine's layout: the variant ``c.feedback`` of
    feedback.FEEDBACK_VARIANTS (compiled, :data:`~segdend.engines._numba_prims.
    refresh_variant`) on views of ``WT`` and ``YT``, its result written back into ``YT``."""
    if not c.feedback_derived:
        return
    sizes, woff, yoff, src = c.sizes, c.woff, c.yoff, c.src
    top = sizes.size - 1
    W = [WT[woff[m]:woff[m + 1]].reshape((sizes[m], sizes[m + 1])) for m in range(top)]
    Y = [YT[yoff[l]:yoff[l] + sizes[src[l]] * sizes[l]].reshape((sizes[src[l]], sizes[l]))
         for l in range(1, top)]
    new = refresh_variant(c.feedback, W, Y, not c.layerwise, noise_key, c.noise_sd)
    for k in range(len(Y)):
        Y[k][:, :] = new[k]


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
