"""Each equation group of MODEL.md against hand-computed values."""

import math

import numpy as np
import pytest

from segdend import dynamics as dyn
from segdend import plasticity as pl
from segdend.config import ModelConfig


def test_psp_kernel_taps_match_formula_and_sum():
    taps = dyn.psp_kernel_taps(3.0, 10.0, 10)
    k1 = (math.exp(-1 / 10) - math.exp(-1 / 3)) / 7
    assert taps[0] == pytest.approx(k1, rel=1e-15)
    assert taps.shape == (10,)
    assert taps.sum() == pytest.approx(0.510, abs=5e-4)  # MODEL.md 2: ~0.510, not 1
    assert dyn.psp_kernel_taps(3.0, 10.0, 5000).sum() == pytest.approx(1.0, abs=5e-3)


def test_filtered_spikes_weights_current_step_by_kappa1():
    taps = dyn.psp_kernel_taps(3.0, 10.0, 10)
    history = np.zeros((10, 2))
    history[0, 0] = 1  # a spike now
    history[3, 1] = 2  # two spikes 3 steps ago
    s = dyn.filtered_spikes(taps, history)
    assert s[0] == taps[0] and s[1] == 2 * taps[3]


def test_exact_filter_recurrence_equals_untruncated_sum():
    c = dyn.Constants.from_config(ModelConfig(kernel="exact"))
    gen = np.random.default_rng(1)
    spikes = gen.poisson(0.3, size=(80, 4)).astype(float)
    a_L = a_s = np.zeros(4)
    for t in range(80):
        a_L, a_s, s = dyn.exact_filter_step(a_L, a_s, spikes[t], c.decay_L, c.decay_s, c.tau_gap)
    k = dyn.psp_kernel(np.arange(1, 81, dtype=float), 3.0, 10.0)
    expected = k @ spikes[::-1]
    np.testing.assert_allclose(s, expected, rtol=1e-12)


@pytest.mark.parametrize("n, w_avg, w_sd", [(784, 0.01871, 0.5049), (500, 0.02933, 0.6321),
                                           (100, 0.14667, 1.4104)])
def test_init_moments(n, w_avg, w_sd):
    a, s = dyn.init_moments(n, 3.0, 3.0, 0.8, 0.2)
    assert a == pytest.approx(w_avg, abs=1e-5)
    assert s == pytest.approx(w_sd, abs=1e-4)


def test_hidden_soma_converges_to_k_B_times_basal():
    c = dyn.Constants.from_config(ModelConfig(g_A=0.05))
    v, vb, va = np.zeros(3), np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.0, -1.0])
    for _ in range(500):
        v = dyn.hidden_soma_step(v, vb, va, c.g_L, c.g_B, c.g_A, c.dt)
    expected = (c.g_B * vb + c.g_A * va) / (c.g_L + c.g_B + c.g_A)
    np.testing.assert_allclose(v, expected, rtol=1e-10)
    assert c.k_B == pytest.approx(0.6 / 0.75)


def test_output_soma_steady_states_forward_and_target():
    c = dyn.Constants.from_config(ModelConfig())
    ub = np.array([1.0, 2.0, -1.0])
    g_E, g_I = dyn.teaching_conductances(1, 3)
    np.testing.assert_array_equal(g_E, [0, 1, 0])
    np.testing.assert_array_equal(g_I, [1, 0, 1])
    u_f, u_t = np.zeros(3), np.zeros(3)
    for _ in range(500):
        u_f = dyn.output_soma_step(u_f, ub, 0.0, c.g_L, c.g_D, c.dt)
        u_t = dyn.output_soma_step(u_t, ub, dyn.teaching_current(u_t, g_E, g_I, c.E_E, c.E_I),
                                   c.g_L, c.g_D, c.dt)
    np.testing.assert_allclose(u_f, c.k_D * ub, rtol=1e-10)
    np.testing.assert_allclose(u_f, dyn.rate_output_soma(ub, 0, 0, c.g_L, c.g_D, c.E_E, c.E_I))
    np.testing.assert_allclose(
        u_t, dyn.rate_output_soma(ub, g_E, g_I, c.g_L, c.g_D, c.E_E, c.E_I), rtol=1e-10)
    assert u_t[1] == pytest.approx((0.6 * 2 + 8) / 1.7)


def test_teaching_current_form_is_not_divided_by_g_L():
    i = dyn.teaching_current(np.array([1.0]), np.array([1.0]), np.array([0.0]), 8.0, -8.0)
    assert i[0] == 7.0


def test_poisson_inverse_cdf_boundaries_and_moments():
    r = np.full(4, 0.2)
    p0 = math.exp(-0.2)
    u = np.array([0.0, p0 - 1e-12, p0 + 1e-12, p0 + 0.2 * p0 + 1e-9])
    np.testing.assert_array_equal(dyn.poisson_from_uniform(r, u), [0, 0, 1, 2])
    gen = np.random.default_rng(0)
    rates = np.full(200_000, 0.7)
    k = dyn.poisson_from_uniform(rates, gen.random(rates.size))
    assert k.mean() == pytest.approx(0.7, abs=0.01)
    assert k.var() == pytest.approx(0.7, abs=0.02)
    assert np.all(dyn.poisson_from_uniform(np.zeros(3), np.array([0.0, 0.5, 0.999])) == 0)


def test_update_formulas_by_hand():
    phi_max, k_D, k_B = 0.2, 0.6 / 0.7, 0.8
    ubar, phibar_t = np.array([0.5, -1.0]), np.array([0.18, 0.01])
    s = 1 / (1 + np.exp(-ubar))
    e_out = pl.output_error(phibar_t, ubar, phi_max, k_D)
    np.testing.assert_allclose(e_out, -(phibar_t - 0.2 * s) * k_D * 0.2 * s * (1 - s))
    alpha_t, alpha_f, vbar = np.array([0.6]), np.array([0.5]), np.array([0.0])
    e = pl.hidden_error_local(alpha_t, alpha_f, vbar, phi_max, k_B)
    assert e[0] == pytest.approx(-0.1 * 0.8 * 0.2 * 0.25)
    W, b = np.ones((1, 2)), np.zeros(1)
    pl.apply_update(W, b, e, np.array([0.1, 0.0]), 0.21 * 100.0)
    np.testing.assert_allclose(W, [[1 - 0.21 * 100 * e[0] * 0.1, 1.0]])
    assert b[0] == pytest.approx(-0.21 * 100 * e[0])
    assert pl.output_loss(phibar_t, ubar, phi_max) == pytest.approx(np.sum((phibar_t - .2 * s)**2))
    assert pl.hidden_loss(alpha_t, alpha_f) == pytest.approx(0.01)


def test_integration_windows():
    from segdend.config import PhaseConfig

    assert dyn.integration_window(PhaseConfig(), 53) == (33, 20)
    assert dyn.integration_window(PhaseConfig(integration="settle"), 53) == (30, 23)
    assert dyn.plateau_delay(0.4, 3.0, 5) == 1
    assert dyn.plateau_delay(-3.0, 3.0, 5) == 5


def test_sparse_feedback_silences_exactly_80_percent_and_scales_by_five():
    from segdend.network import initialise

    dense = initialise(ModelConfig(n_inputs=20, layers=(50, 10)), 3)
    sparse = initialise(ModelConfig(n_inputs=20, layers=(50, 10), feedback_sparsity=0.8), 3)
    zero = sparse.Y[0] == 0
    assert zero.sum() == 400
    np.testing.assert_allclose(sparse.Y[0][~zero], 5 * dense.Y[0][~zero])
    plain = initialise(ModelConfig(n_inputs=20, layers=(50, 10), feedback_sparsity=0.8,
                                   feedback_sparse_gain=1.0), 3)
    np.testing.assert_allclose(plain.Y[0][~zero], dense.Y[0][~zero])


def test_initial_weights_have_the_spec_moments():
    from segdend.network import initialise

    p = initialise(ModelConfig(), 0)
    w_avg, w_sd = dyn.init_moments(784, 3, 3, 0.8, 0.2)
    assert p.W[0].mean() == pytest.approx(w_avg, abs=0.01)
    # U(-1, 1) * 3.465 W_sd has SD 2 W_sd (MODEL.md 6)
    assert p.W[0].std() == pytest.approx(2 * w_sd, rel=0.01)
    y_avg, y_sd = dyn.init_moments(500, 3, 3, 0.8, 0.2)
    assert p.Y[0].shape == (500, 10) and p.Y[0].mean() == pytest.approx(y_avg, abs=0.05)
    assert np.all(np.abs(p.b[0] - 0.8) <= 3.465 * 0.001 + 1e-12)
