"""Analyses of saved results (MODEL.md section 10): pure functions of arrays.

Nothing here reads files, trains or draws; :mod:`segdend.experiments` loads a run's saved
recordings, losses and weights and passes the arrays in, and :mod:`segdend.plots` draws what
comes out. Every function documents the shapes it takes and returns.

- :func:`angle_deg` and :func:`smooth`: the angle between the local and the backprop hidden
  updates, smoothed over 100 examples (Fig. 7A).
- :func:`jacobian_product` and :func:`jacobian_eigenvalue`: Theorem 1's condition, the largest
  eigenvalue of ``(I - J)^T (I - J)`` (Fig. 5, supplement 1).
- :func:`pearson` and :func:`loss_correlation_by_class`: hidden vs output loss (Fig. 5B/C).
- :func:`max_correlations`, :func:`shuffle_pixels`: receptive fields against a backprop-trained
  network, with a shuffled control (Fig. 7B/C).
- :func:`tsne_embedding` and :func:`cluster_quality`: t-SNE of test activity (Fig. 6C).
- :func:`mean_sd` and :func:`downsample`: small summaries for tables and figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------
# Summaries


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value), ignoring NaN.

    Returns (nan, nan) when there is no finite value.
    """
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return float(x.mean()), sd


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = 2000
               ) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` evenly spaced points of a curve (always keeping the last)."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) <= max_points:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
    return x[idx], y[idx]


def smooth(x: np.ndarray, window: int = 100) -> np.ndarray:
    """Trailing moving average over ``window`` examples, ignoring NaN.

    Element ``i`` is the mean of the finite values among ``x[max(0, i-window+1) : i+1]``
    (so the first ``window-1`` points average what is available); NaN where none is finite.

    Parameters
    ----------
    x : (n,) array
    window : int, > 0

    Returns
    -------
    (n,) float array
    """
    if window <= 0:
        raise ValueError(f"window must be > 0; got {window}")
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    total = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    count = np.concatenate([[0], np.cumsum(ok)])
    hi = np.arange(1, len(x) + 1)
    lo = np.maximum(hi - window, 0)
    n = count[hi] - count[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[hi] - total[lo]) / np.maximum(n, 1), np.nan)


# ---------------------------------------------------------------------------------------------
# Angle to backprop (Fig. 7A)


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Angle in degrees between vectors ``a`` and ``b`` (or between matching rows).

    Parameters
    ----------
    a, b : (n,) or (k, n) arrays of the same shape

    Returns
    -------
    float for vectors, (k,) array for rows; NaN where either vector is zero.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"angle_deg needs arrays of one shape; got {a.shape} and {b.shape}")
    dot = np.sum(a * b, axis=-1)
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norm > 0, dot / np.where(norm > 0, norm, 1.0), np.nan)
    out = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return float(out) if np.ndim(out) == 0 else out


# ---------------------------------------------------------------------------------------------
# Jacobian condition (Theorem 1; Fig. 5, supplement 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def jacobian_product(ubar_f: np.ndarray, W_out: np.ndarray, Y: np.ndarray, *,
                     phi_max: float, k_D: float) -> np.ndarray:
    """``J_beta @ J_gamma`` of one example (MODEL.md 10), a (n_out, n_out) matrix.

    ``J_beta = diag(phi_max sigmoid'(Ubar_f)) @ (k_D W[M-1])`` (n_out x n) and
    ``J_gamma = diag(sigmoid'(Y @ phi_max sigmoid(Ubar_f))) @ Y`` (n x n_out).

    Parameters
    ----------
    ubar_f : (n_out,) forward-phase average output voltage
    W_out : (n_out, n) output weights ``W[M-1]``
    Y : (n, n_out) feedback weights of the last hidden layer
    """
    s = _sigmoid(ubar_f)
    j_beta = (phi_max * s * (1.0 - s))[:, None] * (k_D * W_out)
    a = _sigmoid(Y @ (phi_max * s))
    j_gamma = (a * (1.0 - a))[:, None] * Y
    return j_beta @ j_gamma


def jacobian_eigenvalue(ubar_f: np.ndarray, W_out: np.ndarray, Y: np.ndarray, *,
                        phi_max: float, k_D: float) -> float:
    """Largest eigenvalue of ``(I - J)^T (I - J)``, J the mean of :func:`jacobian_product`
    over the examples (rows) of ``ubar_f`` (MODEL.md 10; Theorem 1 asks for a value < 1).

    Parameters
    ----------
    ubar_f : (k, n_out) forward-phase average output voltages of k examples (the paper: the
        last 100), all evaluated with the same weights ``W_out`` and ``Y``.
    """
    ubar_f = np.atleast_2d(np.asarray(ubar_f, dtype=float))
    if ubar_f.shape[0] == 0:
        return math.nan
    J = np.mean([jacobian_product(u, W_out, Y, phi_max=phi_max, k_D=k_D) for u in ubar_f],
                axis=0)
    return max_eigenvalue_i_minus(J)


def max_eigenvalue_i_minus(J: np.ndarray) -> float:
    """Largest eigenvalue of ``(I - J)^T (I - J)`` for a square ``J``."""
    J = np.asarray(J, dtype=float)
    D = np.eye(J.shape[0]) - J
    return float(np.linalg.eigvalsh(D.T @ D).max())


# ---------------------------------------------------------------------------------------------
# Loss correlation (Fig. 5B/C)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two (n,) arrays; NaN for fewer than 3 points or a constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denom) if denom > 0 else math.nan


def loss_correlation_by_class(loss_hidden: np.ndarray, loss_out: np.ndarray,
                              labels: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """Pearson r between per-example hidden and output losses within each class.

    Parameters
    ----------
    loss_hidden, loss_out, labels : (n,) arrays of one epoch's examples

    Returns
    -------
    (n_classes,) array of r (NaN for classes with fewer than 3 examples)
    """
    labels = np.asarray(labels)
    return np.array([pearson(np.asarray(loss_hidden)[labels == c],
                             np.asarray(loss_out)[labels == c]) for c in range(n_classes)])


# ---------------------------------------------------------------------------------------------
# Receptive fields (Fig. 7B/C)


def _standardise_rows(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    A = A - A.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(A, axis=1, keepdims=True)
    return A / np.where(norm > 0, norm, 1.0)


def correlation_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson r between every row of ``A`` (k, p) and every row of ``B`` (l, p): (k, l)."""
    return _standardise_rows(A) @ _standardise_rows(B).T


def max_correlations(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """For each row of ``A`` (a receptive field), its largest Pearson r with any row of ``B``.

    Parameters
    ----------
    A : (k, p) receptive fields (rows of ``W[0]``) of one network
    B : (l, p) receptive fields of the reference (backprop-trained) network

    Returns
    -------
    (k,) array
    """
    return correlation_matrix(A, B).max(axis=1)


def shuffle_pixels(A: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """The shuffled control: each row's pixels in its own random order (same values)."""
    A = np.asarray(A)
    return np.array([row[gen.permutation(row.size)] for row in A])


def as_images(A: np.ndarray, side: int = 28) -> np.ndarray:
    """Rows of ``W[0]`` (k, side*side) as (k, side, side) images."""
    A = np.asarray(A)
    if A.shape[1] != side * side:
        raise ValueError(f"receptive fields need {side * side} inputs; got {A.shape[1]}")
    return A.reshape(A.shape[0], side, side)


# ---------------------------------------------------------------------------------------------
# t-SNE (Fig. 6C)


def tsne_embedding(X: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE embedding of the rows of ``X`` (n, d) (scikit-learn), (n, 2).

    The perplexity is lowered to ``(n - 1) / 3`` for small ``n`` (t-SNE needs n > 3 *
    perplexity).
    """
    from sklearn.manifold import TSNE

    X = np.asarray(X, dtype=float)
    n = X.shape[0]
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points; got {n}")
    perplexity = min(perplexity, (n - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto")
    if n >= 500:
        return tsne.fit_transform(X)
    # Small problems finish faster on one thread than with OpenMP threads competing for
    # busy cores.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return tsne.fit_transform(X)


def cluster_quality(points: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette score of ``points`` (n, d) grouped by ``labels`` (n,), in [-1, 1];
    higher means cleaner class clusters. NaN when fewer than two classes are present."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return math.nan
    return float(silhouette_score(points, labels))
