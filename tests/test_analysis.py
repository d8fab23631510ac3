"""Analyses of saved results (MODEL.md 10): known answers from hand computation."""

import math

import numpy as np
import pytest

from segdend import analysis

# -- summaries ---------------------------------------------------------------------------------


def test_mean_sd_uses_sample_sd_and_ignores_missing_values():
    assert analysis.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert analysis.mean_sd([4.0]) == (4.0, 0.0)
    assert analysis.mean_sd([1.0, None, float("nan"), 3.0]) == (2.0, math.sqrt(2.0))
    m, s = analysis.mean_sd([])
    assert math.isnan(m) and math.isnan(s)


def test_downsample_keeps_ends_and_limits_points():
    x = np.arange(10_000)
    xs, ys = analysis.downsample(x, x * 2, 100)
    assert len(xs) <= 100 and xs[0] == 0 and xs[-1] == 9_999
    assert np.array_equal(ys, xs * 2)
    xs, _ = analysis.downsample(x[:50], x[:50], 100)
    assert len(xs) == 50


def test_smooth_is_a_trailing_mean_over_available_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert np.allclose(analysis.smooth(x, 2), [1.0, 1.5, 2.5, 3.5, 4.5])
    assert np.allclose(analysis.smooth(x, 100), np.cumsum(x) / np.arange(1, 6))
    assert np.allclose(analysis.smooth(np.full(300, 7.0), 100), 7.0)


def test_smooth_ignores_nan():
    out = analysis.smooth(np.array([np.nan, 2.0, np.nan, 4.0]), 2)
    assert math.isnan(out[0]) and out[1] == 2.0 and out[2] == 2.0 and out[3] == 4.0
    with pytest.raises(ValueError, match="window"):
        analysis.smooth(np.ones(3), 0)


# -- angle to backprop ---------------------------------------------------------------------------


def test_angle_of_identical_orthogonal_and_opposite_vectors():
    a = np.array([1.0, 2.0, -0.5])
    assert analysis.angle_deg(a, a) == pytest.approx(0.0, abs=1e-6)
    assert analysis.angle_deg(a, 3 * a) == pytest.approx(0.0, abs=1e-6)
    assert analysis.angle_deg(np.array([1.0, 0.0]), np.array([0.0, 5.0])) == pytest.approx(90.0)
    assert analysis.angle_deg(a, -a) == pytest.approx(180.0)
    assert analysis.angle_deg(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(45.0)


def test_angle_of_rows_and_of_a_zero_vector():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    out = analysis.angle_deg(a, b)
    assert out[:2] == pytest.approx([0.0, 90.0]) and math.isnan(out[2])
    with pytest.raises(ValueError, match="one shape"):
        analysis.angle_deg(np.ones(2), np.ones(3))


# -- Jacobian condition -------------------------------------------------------------------------


def test_eigenvalue_of_identity_is_zero_and_of_zero_is_one():
    assert analysis.max_eigenvalue_i_minus(np.eye(10)) == pytest.approx(0.0, abs=1e-12)
    assert analysis.max_eigenvalue_i_minus(np.zeros((10, 10))) == pytest.approx(1.0)
    # J = 3I: (I - J)^T (I - J) = 4I
    assert analysis.max_eigenvalue_i_minus(3 * np.eye(4)) == pytest.approx(4.0)
    # A rotation by 90 degrees: I - J has singular values sqrt(2)
    J = np.array([[0.0, -1.0], [1.0, 0.0]])
    assert analysis.max_eigenvalue_i_minus(J) == pytest.approx(2.0)


def _sig(x):
    return 1 / (1 + np.exp(-x))


def test_jacobian_product_matches_the_spec_formula():
    gen = np.random.default_rng(1)
    n_out, n = 4, 6
    ubar, W, Y = gen.normal(size=n_out), gen.normal(size=(n_out, n)), gen.normal(size=(n, n_out))
    phi_max, k_D = 0.2, 6 / 7
    s = _sig(ubar)
    j_beta = np.diag(phi_max * s * (1 - s)) @ (k_D * W)
    a = _sig(Y @ (phi_max * s))
    j_gamma = np.diag(a * (1 - a)) @ Y
    got = analysis.jacobian_product(ubar, W, Y, phi_max=phi_max, k_D=k_D)
    assert got.shape == (n_out, n_out)
    assert np.allclose(got, j_beta @ j_gamma)


def test_jacobian_eigenvalue_averages_J_over_examples_first():
    gen = np.random.default_rng(2)
    ubar, W, Y = gen.normal(size=(5, 3)), gen.normal(size=(3, 4)), gen.normal(size=(4, 3))
    J = np.mean([analysis.jacobian_product(u, W, Y, phi_max=0.2, k_D=0.9) for u in ubar], 0)
    expect = np.linalg.eigvalsh((np.eye(3) - J).T @ (np.eye(3) - J)).max()
    assert analysis.jacobian_eigenvalue(ubar, W, Y, phi_max=0.2, k_D=0.9) == pytest.approx(
        expect)
    # With no feedforward weights J = 0 and the eigenvalue is exactly 1.
    assert analysis.jacobian_eigenvalue(ubar, 0 * W, Y, phi_max=0.2, k_D=0.9) == pytest.approx(
        1.0)
    assert math.isnan(analysis.jacobian_eigenvalue(np.zeros((0, 3)), W, Y, phi_max=0.2,
                                                   k_D=0.9))


# -- loss correlation -----------------------------------------------------------------------------


def test_pearson_known_values():
    x = np.arange(10.0)
    assert analysis.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert analysis.pearson(x, -x) == pytest.approx(-1.0)
    assert analysis.pearson(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(
        0.8)
    assert math.isnan(analysis.pearson(x, np.ones(10)))
    assert math.isnan(analysis.pearson(x[:2], x[:2]))


def test_loss_correlation_per_class_on_constructed_data():
    gen = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], [50, 50, 50, 2])
    lo = gen.random(152)
    lh = np.empty(152)
    lh[labels == 0] = 3 * lo[labels == 0] + 1  # r = 1
    lh[labels == 1] = -lo[labels == 1]  # r = -1
    lh[labels == 2] = gen.random(50)  # unrelated: |r| small
    lh[labels == 3] = lo[labels == 3]  # two examples: undefined
    r = analysis.loss_correlation_by_class(lh, lo, labels, n_classes=5)
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(-1.0)
    assert abs(r[2]) < 0.4
    assert math.isnan(r[3]) and math.isnan(r[4])


# -- receptive fields ----------------------------------------------------------------------------


def test_max_correlation_of_fields_with_themselves_is_one():
    gen = np.random.default_rng(3)
    A = gen.normal(size=(20, 784))
    assert np.allclose(analysis.max_correlations(A, A), 1.0)
    # Scaling and shifting a field does not change its correlation.
    assert np.allclose(analysis.max_correlations(2 * A[:5] + 3, A), 1.0)
    C = analysis.correlation_matrix(A, A)
    assert np.allclose(C, C.T) and np.allclose(np.diag(C), 1.0)


def test_shuffled_control_keeps_values_and_loses_structure():
    gen = np.random.default_rng(4)
    smooth_fields = np.cumsum(gen.normal(size=(30, 784)), axis=1)  # spatially structured
    shuffled = analysis.shuffle_pixels(smooth_fields, np.random.default_rng(0))
    assert np.allclose(np.sort(shuffled, axis=1), np.sort(smooth_fields, axis=1))
    assert analysis.max_correlations(shuffled, smooth_fields).mean() < 0.5
    assert analysis.as_images(smooth_fields).shape == (30, 28, 28)
    with pytest.raises(ValueError, match="784"):
        analysis.as_images(np.zeros((2, 10)))


# -- t-SNE -----------------------------------------------------------------------------------------


def test_tsne_separates_well_separated_clusters():
    gen = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2], 20)
    X = gen.normal(size=(60, 30)) * 0.1 + 10 * labels[:, None] * np.eye(30)[0]
    emb = analysis.tsne_embedding(X, seed=0)
    assert emb.shape == (60, 2)
    assert analysis.cluster_quality(emb, labels) > 0.7
    assert analysis.cluster_quality(X, labels) > 0.7
    assert math.isnan(analysis.cluster_quality(X, np.zeros(60)))
    with pytest.raises(ValueError, match="at least 5"):
        analysis.tsne_embedding(X[:3])
