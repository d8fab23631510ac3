"""Local losses and weight updates from phase summaries (MODEL.md sections 5 and 7).

Pure functions of arrays and floats, shared by every engine. ``E`` vectors are the error
terms; an update is ``W -= eta * P * outer(E, sbar_f)``, ``b -= eta * P * E`` (the
coefficient ``eta * P`` of each layer is ``model.ModelDescription.eta_P``).

**Hidden-layer learning rules** are the functions listed in :data:`HIDDEN_RULES`, all with the
signature of :func:`rule_local` (a layer's phase summary and its context; each rule reads only
what it needs). They reach arrays only through the module-level helpers ``sigmoid``,
``sigmoid_prime``, :func:`matvec`, ``poisson_from_uniform`` and the error functions below, so
each engine runs the very same function with its own helpers bound: the reference as written
(NumPy), the Numba engine compiled with :func:`~segdend.engines._numba_prims.jit_from`, the
torch engine rebound (:func:`rebind`) to tensor helpers with a leading member axis. A new rule
is one function here and its entry in :data:`HIDDEN_RULES`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from segdend import rng
from segdend.dynamics import poisson_from_uniform, sigmoid, sigmoid_prime
from segdend.errors import SegdendError

if TYPE_CHECKING:
    from segdend.model import ModelDescription


def rebind(fn, **callees):
    """A copy of ``fn`` whose global names ``callees`` (the helpers it calls) are replaced,
    ``fn`` itself untouched: how an engine runs this module's functions on its own arrays."""
    env = dict(fn.__globals__)
    env.update(callees)
    clone = types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__
    clone.__module__ = fn.__module__
    clone.__doc__ = fn.__doc__
    return clone


def matvec(B, e):
    """``B @ e``: a matrix times a vector (torch binds a batched version)."""
    return B @ e


def output_error(phibar_t, ubar_f, phi_max, k_D):
    """``E_out = -(phibar_t - phi_max sigmoid(Ubar_f)) k_D phi_max sigmoid'(Ubar_f)`` (MODEL.md 5)."""
    return -(phibar_t - phi_max * sigmoid(ubar_f)) * k_D * phi_max * sigmoid_prime(ubar_f)


def hidden_error_local(alpha_t, alpha_f, vbar_f, phi_max, k_B):
    """``E_m = -(alpha_t - alpha_f) k_B phi_max sigmoid'(Vbar_f)``: the local rule (MODEL.md 5)."""
    return -(alpha_t - alpha_f) * k_B * phi_max * sigmoid_prime(vbar_f)


def hidden_error_propagated(B, e_above, vbar_f, phi_max, k_B):
    """``E_m = (B @ E_above) k_B phi_max sigmoid'(Vbar_f)`` (MODEL.md 7).

    With ``B = W[m+1].T`` this is backprop; with the feedback matrix ``B = Y[m]`` it is
    feedback alignment (``E_above`` is then the output error for broadcast wiring).
    """
    return matvec(B, e_above) * k_B * phi_max * sigmoid_prime(vbar_f)


def feedback_error(vbar_f, alpha_f, abar_f, phi_max):
    """Feedback learning (code only, MODEL.md 7):
    ``E_inv = -(phi_max sigmoid(Vbar_f) - alpha_f) sigmoid'(Abar_f)``."""
    return -(phi_max * sigmoid(vbar_f) - alpha_f) * sigmoid_prime(abar_f)


# ---------------------------------------------------------------------------------------------
# Hidden-layer learning rules (one signature; chosen by name from HIDDEN_RULES)


def rule_local(alpha_t, alpha_f, vbar_f, B_fa, e_fa_above, W_up_T, e_bp_above, u_t, u_f,
               phi_max, k_B, burst_scale):
    """The paper's local rule (MODEL.md 5): the plateau difference ``alpha_t - alpha_f``.

    The common signature of every rule, for hidden layer m: ``alpha_t``, ``alpha_f`` (n,)
    target- and forward-phase plateaus; ``vbar_f`` (n,) forward-phase mean somatic voltage;
    ``B_fa`` (n, n_src) the feedback matrix ``Y[m]``; ``e_fa_above`` the output error
    (broadcast wiring) or the error of layer m+1 (layer-wise); ``W_up_T`` ``W[m+1].T`` after
    its update; ``e_bp_above`` the backprop error of layer m+1 (given only to rules with
    ``needs_bp``); ``u_t``, ``u_f`` (n,) uniforms of the target and forward phase (given only
    to rules that ``draw``); ``phi_max``, ``k_B``; ``burst_scale`` (``training.burst_scale``).
    Returns ``E_m`` (n,).
    """
    return hidden_error_local(alpha_t, alpha_f, vbar_f, phi_max, k_B)


def rule_backprop(alpha_t, alpha_f, vbar_f, B_fa, e_fa_above, W_up_T, e_bp_above, u_t, u_f,
                  phi_max, k_B, burst_scale):
    """Backprop (MODEL.md 7): ``E_m = (W[m+1].T @ E_bp[m+1]) k_B phi_max sigmoid'(Vbar_f)``."""
    return hidden_error_propagated(W_up_T, e_bp_above, vbar_f, phi_max, k_B)


def rule_feedback_alignment(alpha_t, alpha_f, vbar_f, B_fa, e_fa_above, W_up_T, e_bp_above,
                            u_t, u_f, phi_max, k_B, burst_scale):
    """Feedback alignment (MODEL.md 7): the error above sent through the fixed feedback
    matrix, ``E_m = (Y[m] @ E_above) k_B phi_max sigmoid'(Vbar_f)``."""
    return hidden_error_propagated(B_fa, e_fa_above, vbar_f, phi_max, k_B)


def rule_burst(alpha_t, alpha_f, vbar_f, B_fa, e_fa_above, W_up_T, e_bp_above, u_t, u_f,
               phi_max, k_B, burst_scale):
    """Plateau bursts (the paper's Methods, eq. 36-37; MODEL.md 5): at the end of each phase
    a hidden neuron fires ``N ~ Poisson(s alpha) / s`` bursts (``s = burst_scale``; the mean
    is ``alpha`` for any s, the noise shrinks as s grows), and the local rule uses the burst
    counts in place of the plateaus: ``E_m = -(N_t - N_f) k_B phi_max sigmoid'(Vbar_f)``.
    Counts by inverse CDF of the uniforms ``u_t``, ``u_f``, so every engine draws the same."""
    n_t = poisson_from_uniform(burst_scale * alpha_t, u_t) / burst_scale
    n_f = poisson_from_uniform(burst_scale * alpha_f, u_f) / burst_scale
    return hidden_error_local(n_t, n_f, vbar_f, phi_max, k_B)


@dataclass(frozen=True)
class Rule:
    """A hidden-layer learning rule: its ``name`` (``training.learning_rule``), its ``error``
    function (the signature of :func:`rule_local`), whether it ``draws`` (engines then give
    it the uniforms ``rng.layer_uniforms(burst_key, phase, 0, m + 1, n)`` of the forward
    (phase 0) and target phase (phase 1)) and whether it ``needs_bp`` (engines then compute
    the backprop errors of the layers above)."""

    name: str
    error: types.FunctionType
    draws: bool = False
    needs_bp: bool = False


HIDDEN_RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("local", rule_local),
    Rule("backprop", rule_backprop, needs_bp=True),
    Rule("feedback_alignment", rule_feedback_alignment),
    Rule("burst", rule_burst, draws=True),
)}
"""Every hidden-layer learning rule, by name, in a fixed order."""


def hidden_rule(name: str) -> Rule:
    """The rule called ``name`` (``training.learning_rule``); raises SegdendError otherwise."""
    rule = HIDDEN_RULES.get(name)
    if rule is None:
        raise SegdendError(f"`training.learning_rule` must be one of "
                           f"{', '.join(HIDDEN_RULES)}; got {name!r}")
    return rule


def apply_update(W, b, E, sbar_f, eta_P):
    """In place: ``W -= eta P outer(E, sbar_f)``, ``b -= eta P E`` (MODEL.md 5); ``eta_P``
    the layer's ``eta * P``."""
    W -= eta_P * np.outer(E, sbar_f)
    b -= eta_P * E


def squared_norm(d):
    """``d . d`` (the Numba engine binds a loop summed in index order, see
    ``_numba_prims.dot``)."""
    return d @ d


def output_loss(phibar_t, ubar_f, phi_max):
    """``L_out = ||phibar_t - phi_max sigmoid(Ubar_f)||^2`` (MODEL.md 5)."""
    d = phibar_t - phi_max * sigmoid(ubar_f)
    return float(squared_norm(d))


def hidden_loss(alpha_t, alpha_f):
    """``L_hidden = ||alpha_t - alpha_f||^2`` (MODEL.md 5)."""
    d = alpha_t - alpha_f
    return float(squared_norm(d))


def update_network(params, model: ModelDescription, fwd, tgt, burst_key=None):
    """Apply one example's updates top-down after its target phase (MODEL.md 5 and 7).

    ``model`` is the network's :class:`~segdend.model.ModelDescription` (its rule, wiring,
    constants, ``eta_P``, ``eta_feedback`` (None: no feedback learning) and
    ``burst_scale``); ``fwd`` and ``tgt`` are the forward- and target-phase
    :class:`~segdend.engines.base.PhaseSummary`; ``burst_key`` the example's key of the
    rule's draws (rules that draw). The hidden error of backprop uses the weights
    above *after* their update, as the published code does (it updates layers top-down in
    place). Returns the error vectors (bottom-up) and the backprop errors of the same example
    (for the angle analysis).
    """
    hidden, c, eta_P, eta_feedback = model.rule, model.constants, model.eta_P, model.eta_feedback
    n_layers = len(params.W)
    top = n_layers - 1
    errors: list[np.ndarray] = [np.empty(0)] * n_layers
    errors_bp: list[np.ndarray] = [np.empty(0)] * n_layers
    errors[top] = output_error(tgt.phibar[top], fwd.vbar[top], c.phi_max, c.k_D)
    errors_bp[top] = errors[top]
    apply_update(params.W[top], params.b[top], errors[top], fwd.sbar[top], eta_P[top])
    for m in range(top - 1, -1, -1):
        W_up_T = params.W[m + 1].T
        errors_bp[m] = hidden_error_propagated(W_up_T, errors_bp[m + 1], fwd.vbar[m],
                                               c.phi_max, c.k_B)
        u_t = u_f = None
        if hidden.draws:
            if burst_key is None:
                raise SegdendError(f"the {hidden.name!r} learning rule draws random numbers: the "
                                   "batch needs burst_keys (train.make_batch makes them)")
            n = fwd.vbar[m].shape[0]
            u_f = rng.layer_uniforms(burst_key, 0, 0, m + 1, n)
            u_t = rng.layer_uniforms(burst_key, 1, 0, m + 1, n)
        above = errors[top] if model.broadcast else errors[m + 1]
        errors[m] = hidden.error(tgt.alpha[m], fwd.alpha[m], fwd.vbar[m], params.Y[m], above,
                                 W_up_T, errors_bp[m + 1], u_t, u_f, c.phi_max, c.k_B,
                                 model.burst_scale)
        apply_update(params.W[m], params.b[m], errors[m], fwd.sbar[m], eta_P[m])
        if eta_feedback is not None:
            e_inv = feedback_error(fwd.vbar[m], fwd.alpha[m], fwd.abar[m], c.phi_max)
            params.Y[m] -= eta_feedback[m] * np.outer(e_inv, fwd.sbar_fb[m]) * \
                feedback_keep(params.Y_mask, m, params.Y[m])
    return errors, errors_bp


def feedback_keep(Y_mask, m, Y):
    """Which entries of ``Y[m]`` feedback learning may change: 1 where the sparse feedback
    mask keeps the synapse, 0 where it silenced it (MODEL.md 7: the mask is fixed, so a
    silenced synapse stays silent); all ones without a mask. Multiplying a change by 1.0 is
    exact, so dense feedback learns exactly as before."""
    if m >= len(Y_mask) or Y_mask[m].shape != Y.shape:
        return np.ones_like(Y)
    return (Y_mask[m] != 0).astype(Y.dtype)

