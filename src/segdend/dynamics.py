"""The model's equations, each written once (MODEL.md sections 2-6).

Every function here is a pure function of NumPy arrays and floats, with no Python objects in
its signature, so that the same source serves the step-by-step reference simulator (plain
NumPy) and the compiled engines (``numba.njit`` of these very functions). Derived constants
are gathered in :class:`Constants`, computed from a validated config when a network is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segdend.config import ModelConfig, PhaseConfig

# ---------------------------------------------------------------------------------------------
# Derived constants


@dataclass(frozen=True)
class Constants:
    """Numbers derived from the config (never computed at import)."""

    phi_max: float
    dt: float
    g_L: float
    g_B: float
    g_A: float
    g_D: float
    E_E: float
    E_I: float
    k_B: float
    k_D: float
    P_hidden: float
    P_out: float
    kappa: np.ndarray  # PSP kernel taps kappa(1..mem), truncated kernel
    exact_kernel: bool
    decay_L: float  # exp(-dt/tau_L), exact kernel
    decay_s: float  # exp(-dt/tau_s)
    tau_gap: float  # tau_L - tau_s

    @classmethod
    def from_config(cls, model: ModelConfig) -> Constants:
        return cls(
            phi_max=model.phi_max, dt=model.dt, g_L=model.g_L, g_B=model.g_B, g_A=model.g_A,
            g_D=model.g_D, E_E=model.E_E, E_I=model.E_I,
            k_B=model.g_B / (model.g_L + model.g_B + model.g_A),
            k_D=model.g_D / (model.g_L + model.g_D),
            P_hidden=20.0 / model.phi_max,
            P_out=20.0 / model.phi_max**2,
            kappa=psp_kernel_taps(model.tau_s, model.tau_L, model.kernel_taps, model.dt),
            exact_kernel=model.kernel == "exact",
            decay_L=math.exp(-model.dt / model.tau_L),
            decay_s=math.exp(-model.dt / model.tau_s),
            tau_gap=model.tau_L - model.tau_s,
        )


def integration_window(phases: PhaseConfig, length: int) -> tuple[int, int]:
    """First step and number of steps averaged in a phase of ``length`` steps (MODEL.md 4)."""
    if phases.integration == "last":
        return length - phases.window, phases.window
    return phases.settle, length - phases.settle


def phase_length(min_length: int, wald_draw: float) -> int:
    """Random phase length ``T = min + int(wald)`` (MODEL.md 4)."""
    return min_length + int(wald_draw)


def plateau_delay(normal_draw: float, sd: float, max_delay: int) -> int:
    """Steps before the phase's end at which a neuron's plateau happens (random plateau times):
    ``min(|int(N(0, sd))|, max_delay)`` (MODEL.md 4)."""
    return min(abs(int(normal_draw * sd)), max_delay)


# ---------------------------------------------------------------------------------------------
# Section 2: spikes and synaptic filtering


def psp_kernel(t: np.ndarray | float, tau_s: float, tau_L: float) -> np.ndarray | float:
    """PSP kernel ``kappa(t) = (exp(-t/tau_L) - exp(-t/tau_s)) / (tau_L - tau_s)`` (MODEL.md 2)."""
    return (np.exp(-t / tau_L) - np.exp(-t / tau_s)) / (tau_L - tau_s)


def psp_kernel_taps(tau_s: float, tau_L: float, n_taps: int, dt: float = 1.0) -> np.ndarray:
    """Taps ``kappa(k+1)``, k = 0..n_taps-1: the current step's spike gets kappa(1) (MODEL.md 2)."""
    return psp_kernel(dt * np.arange(1, n_taps + 1, dtype=np.float64), tau_s, tau_L)


def filtered_spikes(kappa: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Truncated filtered train ``s(t) = sum_k kappa(k+1) S(t-k)``; ``history[k] = S(t-k)``."""
    return kappa @ history


def exact_filter_step(trace_L, trace_s, spikes, decay_L, decay_s, tau_gap):
    """Untruncated two-exponential filter as two recurrences (MODEL.md 2, option).

    With ``a(t) = sum_k exp(-(k+1)/tau) S(t-k)`` we have ``a(t) = exp(-1/tau) (a(t-1) + S(t))``,
    and ``s(t) = (a_L(t) - a_s(t)) / (tau_L - tau_s)``. Returns (trace_L, trace_s, s).
    """
    trace_L = decay_L * (trace_L + spikes)
    trace_s = decay_s * (trace_s + spikes)
    return trace_L, trace_s, (trace_L - trace_s) / tau_gap


def poisson_from_uniform(rate: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Poisson counts with mean ``rate`` by inverse CDF of the uniforms ``u`` (MODEL.md 2).

    The smallest k with ``P(N <= k) > u``. Rates here are at most phi_max (<= 1 per step), so
    the loop ends after a few terms; inverse CDF lets every engine share the same uniforms.
    """
    p = np.exp(-rate)
    cdf = p.copy()
    k = np.zeros_like(rate)
    more = u >= cdf
    while np.any(more):
        k = k + more
        p = p * rate / np.maximum(k, 1.0)
        cdf = cdf + p * more
        more = more & (u >= cdf) & (p > 0)
    return k


# ---------------------------------------------------------------------------------------------
# Section 3: compartments


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_prime(x):
    s = 1.0 / (1.0 + np.exp(-x))
    return s * (1.0 - s)


def rate(v, phi_max):
    """Firing rate per step ``phi = phi_max * sigmoid(V)`` (MODEL.md 3)."""
    return phi_max * sigmoid(v)


def dendrite(weights: np.ndarray, s_presyn: np.ndarray, bias) -> np.ndarray:
    """Basal (or output-dendrite) voltage ``V_b = W @ s + b``; apical with ``b = 0`` (MODEL.md 3)."""
    return weights @ s_presyn + bias


def hidden_soma_step(v, v_basal, v_apical, g_L, g_B, g_A, dt):
    """Hidden soma, explicit Euler (MODEL.md 3):
    ``V += dt * (-g_L V + g_B (V_b - V) + g_A (V_a - V))``."""
    return v + dt * (-g_L * v + g_B * (v_basal - v) + g_A * (v_apical - v))


def teaching_current(u, g_E, g_I, E_E, E_I):
    """Somatic teaching current of the target phase ``I = g_E (E_E - U) + g_I (E_I - U)``
    (MODEL.md 3); ``g_E``/``g_I`` are per-neuron arrays (1/0 for the correct class)."""
    return g_E * (E_E - u) + g_I * (E_I - u)


def output_soma_step(u, u_basal, current, g_L, g_D, dt):
    """Output soma, explicit Euler (MODEL.md 3): ``U += dt * (-g_L U + g_D (U_b - U) + I)``."""
    return u + dt * (-g_L * u + g_D * (u_basal - u) + current)


def teaching_conductances(label: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``g_E = 1, g_I = 0`` for the correct class, ``g_E = 0, g_I = 1`` for the others."""
    g_E = np.zeros(n_out)
    g_E[label] = 1.0
    return g_E, 1.0 - g_E


def plateau(mean_v_apical):
    """Plateau potential ``alpha = sigmoid(mean V_a over the window)`` (MODEL.md 4)."""
    return sigmoid(mean_v_apical)


# ---------------------------------------------------------------------------------------------
# Section 8: rate mode (steady states)


def rate_hidden_soma(v_basal, k_B):
    """Rate mode hidden soma at steady state ``V = k_B V_b`` (MODEL.md 8)."""
    return k_B * v_basal


def rate_output_soma(u_basal, g_E, g_I, g_L, g_D, E_E, E_I):
    """Rate mode output soma at steady state (MODEL.md 8):
    ``U = (g_D U_b + g_E E_E + g_I E_I) / (g_L + g_D + g_E + g_I)``; forward phase: g_E = g_I = 0."""
    return (g_D * u_basal + g_E * E_E + g_I * E_I) / (g_L + g_D + g_E + g_I)


# ---------------------------------------------------------------------------------------------
# Section 6: initialisation


def init_moments(n_in: int, v_avg: float, v_sd: float, b_avg: float, phi_max: float
                 ) -> tuple[float, float]:
    """Mean and SD of initial weights for fan-in ``n_in`` ("weight optimisation", MODEL.md 6)."""
    nu = phi_max / 4.0
    v_sm = v_sd**2 + v_avg**2
    w_avg = (v_avg - b_avg) / (nu * n_in * v_avg)
    w_sm = (v_sm + nu**2 * (n_in - n_in**2) * w_avg**2 * v_avg**2
            - 2 * n_in * nu * b_avg * v_avg * w_avg - b_avg**2) / (n_in * nu**2 * v_sm)
    return w_avg, math.sqrt(w_sm - w_avg**2)
