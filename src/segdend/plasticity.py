"""Local losses and weight updates from phase summaries (MODEL.md sections 5 and 7).

Pure functions of arrays and floats, shared by every engine (the compiled engines ``njit``
these same functions). ``E`` vectors are the error terms; an update is
``W -= eta * P * outer(E, sbar_f)``, ``b -= eta * P * E``.
"""

from __future__ import annotations

import numpy as np

from segdend.dynamics import sigmoid, sigmoid_prime


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
    return (B @ e_above) * k_B * phi_max * sigmoid_prime(vbar_f)


def feedback_error(vbar_f, alpha_f, abar_f, phi_max):
    """Feedback learning (code only, MODEL.md 7):
    ``E_inv = -(phi_max sigmoid(Vbar_f) - alpha_f) sigmoid'(Abar_f)``."""
    return -(phi_max * sigmoid(vbar_f) - alpha_f) * sigmoid_prime(abar_f)


def apply_update(W, b, E, sbar_f, eta, P):
    """In place: ``W -= eta P outer(E, sbar_f)``, ``b -= eta P E`` (MODEL.md 5)."""
    W -= (eta * P) * np.outer(E, sbar_f)
    b -= (eta * P) * E


def output_loss(phibar_t, ubar_f, phi_max):
    """``L_out = ||phibar_t - phi_max sigmoid(Ubar_f)||^2`` (MODEL.md 5)."""
    d = phibar_t - phi_max * sigmoid(ubar_f)
    return float(d @ d)


def hidden_loss(alpha_t, alpha_f):
    """``L_hidden = ||alpha_t - alpha_f||^2`` (MODEL.md 5)."""
    d = alpha_t - alpha_f
    return float(d @ d)


def update_network(params, rule: str, wiring: str, c, eta, fwd, tgt, eta_feedback=None):
    """Apply one example's updates top-down after its target phase (MODEL.md 5 and 7).

    ``fwd`` and ``tgt`` are the forward- and target-phase :class:`~segdend.engines.base.
    PhaseSummary`. The hidden error of backprop uses the weights above *after* their update,
    as the published code does (it updates layers top-down in place). Returns the error
    vectors (bottom-up) and, for the local rule, the backprop errors of the same example
    (for the angle analysis).
    """
    n_layers = len(params.W)
    top = n_layers - 1
    errors: list[np.ndarray] = [np.empty(0)] * n_layers
    errors_bp: list[np.ndarray] = [np.empty(0)] * n_layers
    errors[top] = output_error(tgt.phibar[top], fwd.vbar[top], c.phi_max, c.k_D)
    errors_bp[top] = errors[top]
    apply_update(params.W[top], params.b[top], errors[top], fwd.sbar[top], eta[top], c.P_out)
    for m in range(top - 1, -1, -1):
        errors_bp[m] = hidden_error_propagated(params.W[m + 1].T, errors_bp[m + 1], fwd.vbar[m],
                                               c.phi_max, c.k_B)
        if rule == "local":
            errors[m] = hidden_error_local(tgt.alpha[m], fwd.alpha[m], fwd.vbar[m],
                                           c.phi_max, c.k_B)
        elif rule == "backprop":
            errors[m] = errors_bp[m]
        else:
            above = errors[top] if wiring == "broadcast" else errors[m + 1]
            errors[m] = hidden_error_propagated(params.Y[m], above, fwd.vbar[m],
                                                c.phi_max, c.k_B)
        apply_update(params.W[m], params.b[m], errors[m], fwd.sbar[m], eta[m], c.P_hidden)
        if eta_feedback is not None:
            e_inv = feedback_error(fwd.vbar[m], fwd.alpha[m], fwd.abar[m], c.phi_max)
            params.Y[m] -= eta_feedback[m] * np.outer(e_inv, fwd.sbar_fb[m])
    return errors, errors_bp
