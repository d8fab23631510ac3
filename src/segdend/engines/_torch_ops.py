"""Torch twins of the few equations of :mod:`segdend.dynamics` that cannot take torch tensors
as they are, :mod:`segdend.plasticity`'s functions bound to tensor helpers, and the
time-batched building blocks.

The purely arithmetic equations (soma steps, teaching current, rate-mode somata, the exact
filter step) are called from :mod:`segdend.dynamics` directly by the torch engine; the ones
here call NumPy functions (``np.exp``) and are restated on torch with the same formula and
the same order of operations. ``tests/engines/test_torch_engine.py`` checks every twin
against its NumPy original. Sigmoids use ``torch.sigmoid``, which computes the same
``1 / (1 + exp(-x))`` as :func:`segdend.dynamics.sigmoid` to within an ulp or two.

The errors of :mod:`segdend.plasticity` (output, hidden rules, feedback learning) and the
feedback variants of :mod:`segdend.feedback` are those modules' own functions with tensor
helpers bound (:func:`segdend.plasticity.rebind`): no restatement. All errors and losses
take a leading member dimension: vectors are (S, n), matrices (S, n, m).
"""

from __future__ import annotations

import numpy as np
import torch

from segdend import dynamics as dyn
from segdend import feedback, plasticity
from segdend.engines import _torch_rng as trng
from segdend.plasticity import rebind

# ---------------------------------------------------------------------------------------------
# dynamics.py twins


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """:func:`segdend.dynamics.sigmoid`."""
    return torch.sigmoid(x)


def sigmoid_prime(x: torch.Tensor) -> torch.Tensor:
    """:func:`segdend.dynamics.sigmoid_prime`: ``s (1 - s)``."""
    s = torch.sigmoid(x)
    return s * (1.0 - s)


def rate(v: torch.Tensor, phi_max: float) -> torch.Tensor:
    """:func:`segdend.dynamics.rate`: ``phi_max * sigmoid(V)`` (MODEL.md 3)."""
    return phi_max * torch.sigmoid(v)


# Entries past level 0 up to which the search runs in NumPy on the host (the reference's own
# function) rather than as a loop of device kernels with a synchronisation per level.
HOST_POISSON_MAX = 1 << 15


def poisson_from_uniform(rate: torch.Tensor, u: torch.Tensor,
                         host_max: int = HOST_POISSON_MAX) -> torch.Tensor:
    """:func:`segdend.dynamics.poisson_from_uniform` on tensors, with broadcasting.

    Level 0 (``u >= exp(-rate)``: at least one spike) is decided for every entry on the
    device; rates are at most phi_max, so few entries pass. Those are gathered and their
    counts finished by :func:`segdend.dynamics.poisson_from_uniform` itself on the host (on
    the CPU, or when at most ``host_max`` entries passed), or else by the same search on the
    device (:func:`_poisson_tail`). ``rate`` may be smaller than ``u`` and broadcast (e.g.
    constant input rates over a phase's steps).
    """
    p0 = torch.exp(-rate)
    active = u >= p0
    count = active.to(rate.dtype)
    where = torch.nonzero(active, as_tuple=True)
    n = where[0].numel()
    if n == 0:
        return count
    shape = active.shape
    r = rate.expand(shape)[where]
    uu = u.expand(shape)[where]
    if rate.device.type == "cpu" or n <= host_max:
        host = torch.stack([r, uu]).cpu().numpy()  # one transfer from a GPU
        tail = dyn.poisson_from_uniform(host[0], host[1])
        values = torch.from_numpy(tail).to(device=count.device, dtype=count.dtype)
        count.index_put_(where, values)
    else:
        count.index_put_(where, _poisson_tail(r, uu, p0.expand(shape)[where]))
    return count


def _poisson_tail(r: torch.Tensor, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Counts of entries known to pass level 0, by the search of
    :func:`segdend.dynamics.poisson_from_uniform` on the device: the same operations in the
    same order (``p = p * rate / k``, ``cdf = cdf + p``, continue while ``u >= cdf`` and
    ``p > 0``), so bit-equal to it."""
    cdf = p
    count = torch.ones_like(r)
    more = torch.ones_like(u, dtype=torch.bool)
    k = 1
    while True:
        p = p * r / float(k)
        cdf = cdf + p
        more = more & (u >= cdf) & (p > 0)
        if not bool(more.any()):
            return count
        count += more
        k += 1


# ---------------------------------------------------------------------------------------------
# plasticity.py on tensors (batched over members): its own functions, with tensor helpers bound


def matvec(B: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """:func:`segdend.plasticity.matvec` per member: (S, n, m) @ (S, m) -> (S, n)."""
    return (B @ e.unsqueeze(-1)).squeeze(-1)


def poisson_counts(rate: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """:func:`segdend.dynamics.poisson_from_uniform` for a rule's draws: counts in float64
    (as the reference), returned in ``rate``'s dtype."""
    return poisson_from_uniform(rate.to(torch.float64), u).to(rate.dtype)


output_error = rebind(plasticity.output_error, sigmoid=sigmoid, sigmoid_prime=sigmoid_prime)
hidden_error_local = rebind(plasticity.hidden_error_local, sigmoid_prime=sigmoid_prime)
hidden_error_propagated = rebind(plasticity.hidden_error_propagated,
                                 sigmoid_prime=sigmoid_prime, matvec=matvec)
feedback_error = rebind(plasticity.feedback_error, sigmoid=sigmoid, sigmoid_prime=sigmoid_prime)

RULE_CALLEES = dict(sigmoid=sigmoid, sigmoid_prime=sigmoid_prime, matvec=matvec,
                    poisson_from_uniform=poisson_counts, hidden_error_local=hidden_error_local,
                    hidden_error_propagated=hidden_error_propagated)
"""What a rule of plasticity.py may call, on tensors with a leading member axis."""


def hidden_rule_error(name: str):
    """The error function of rule ``name`` of ``plasticity.HIDDEN_RULES``, on tensors."""
    return rebind(plasticity.hidden_rule(name).error, **RULE_CALLEES)


# ---------------------------------------------------------------------------------------------
# feedback.py on tensors (batched over members): its variants, with tensor helpers bound


def fb_transposed(W: torch.Tensor) -> torch.Tensor:
    """:func:`segdend.feedback.transposed` per member: (S, n, m) -> (S, m, n), a view (the
    engine copies the result into its feedback matrices)."""
    return W.transpose(1, 2)


def fb_transpose_matmul(W: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """:func:`segdend.feedback.transpose_matmul` per member: ``W.T @ Y``."""
    return W.transpose(1, 2) @ Y


def fb_add_normals(Y: torch.Tensor, sd: float, keys: torch.Tensor, layer: int) -> torch.Tensor:
    """:func:`segdend.feedback.add_normals` per member, ``keys`` (S,) int64: each member's
    ``rng.layer_normals(key, 0, layer, Y.size)`` in its matrix's row-major order."""
    S, a, b = Y.shape
    noise = trng.layer_normals(keys, 0, layer, a * b).view(S, a, b)
    return Y + sd * noise.to(Y.dtype)


fb_symmetric = rebind(feedback.symmetric, transposed=fb_transposed,
                      transpose_matmul=fb_transpose_matmul)

FEEDBACK_CALLEES = dict(transposed=fb_transposed, transpose_matmul=fb_transpose_matmul,
                        add_normals=fb_add_normals, symmetric=fb_symmetric)
"""What a feedback variant of feedback.py may call, on tensors with a leading member axis."""


def feedback_refresh(name: str):
    """The refresh function of variant ``name`` of ``feedback.FEEDBACK_VARIANTS``, on
    tensors."""
    return rebind(feedback.feedback_variant(name).refresh, **FEEDBACK_CALLEES)


def outer(e: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per-member ``np.outer``: (S, n), (S, m) -> (S, n, m)."""
    return e.unsqueeze(-1) * s.unsqueeze(-2)


def apply_update(W, b, E, sbar_f, scale: torch.Tensor) -> None:
    """:func:`segdend.plasticity.apply_update` in place, ``scale = eta * P`` per member (S,):
    ``W -= outer(scale E, sbar_f)`` as one fused batched product, ``b -= scale E``."""
    scaled = scale[:, None] * E
    W.baddbmm_(scaled.unsqueeze(-1), sbar_f.unsqueeze(-2), alpha=-1.0)
    b -= scaled


def output_loss(phibar_t, ubar_f, phi_max: float):
    """:func:`segdend.plasticity.output_loss` per member: (S,)."""
    d = phibar_t - phi_max * sigmoid(ubar_f)
    return (d * d).sum(-1)


def hidden_loss(alpha_t, alpha_f):
    """:func:`segdend.plasticity.hidden_loss` per member: (S,)."""
    d = alpha_t - alpha_f
    return (d * d).sum(-1)


def angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``reference._angle`` per member: degrees between (S, n) vectors, NaN if one is zero."""
    denom = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
    cos = torch.clamp((a * b).sum(-1) / denom, -1.0, 1.0)
    out = torch.rad2deg(torch.arccos(cos))
    return torch.where(denom == 0, torch.full_like(out, float("nan")), out)


# ---------------------------------------------------------------------------------------------
# Time-batched building blocks


class LinearScan:
    """``v(t) = a v(t-1) + drive(t)`` along dim 1 of (S, T, ...) tensors, ``v(-1) = v0``.

    Computed in blocks of ``block`` steps: inside a block ``v = L @ drive + a^(i+1) v_prev``
    with the lower-triangular Toeplitz matrix ``L[i, j] = a^(i-j)`` (one matrix product for
    all units), then the block's last value carries to the next block. ``a`` is a Python
    float (one matrix product per block) or a tensor broadcastable to (S, 1, ...) (per-unit
    decay, e.g. the output soma with a teaching current; elementwise Toeplitz sums).
    Powers are built by repeated multiplication, as the step-by-step recurrence does.
    """

    def __init__(self, block: int = 64):
        self.block = block
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _scalar_tables(self, a: float, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (a, dtype, str(device))
        if key not in self._cache:
            n = self.block
            pw = torch.cat([torch.ones(1, dtype=torch.float64),
                            torch.cumprod(torch.full((n,), a, dtype=torch.float64), 0)])
            i = torch.arange(n)[:, None]
            j = torch.arange(n)[None, :]
            L = torch.where(i >= j, pw[(i - j).clamp(min=0)], torch.zeros((), dtype=torch.float64))
            self._cache[key] = (L.to(device=device, dtype=dtype),
                                pw[1:].to(device=device, dtype=dtype))
        return self._cache[key]

    def __call__(self, a, drive: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
        S, T = drive.shape[:2]
        rest = drive.shape[2:]
        out = torch.empty_like(drive)
        prev = v0.expand(S, *rest)
        if isinstance(a, float):
            L, pw1 = self._scalar_tables(a, drive.dtype, drive.device)
            for start in range(0, T, self.block):
                tb = min(self.block, T - start)
                d = drive[:, start:start + tb].reshape(S, tb, -1)
                y = torch.matmul(L[:tb, :tb], d)
                y += pw1[:tb, None] * prev.reshape(S, 1, -1)
                out[:, start:start + tb] = y.view(S, tb, *rest)
                prev = out[:, start + tb - 1]
            return out
        a = a.expand(S, 1, *rest)
        n = min(self.block, T)
        pw = torch.cat([torch.ones_like(a), torch.cumprod(a.expand(S, n, *rest), 1)], 1)
        i = torch.arange(n, device=drive.device)[:, None]
        j = torch.arange(n, device=drive.device)[None, :]
        tri = (i >= j).to(drive.dtype).view(1, n, n, *([1] * len(rest)))
        L = pw[:, (i - j).clamp(min=0)] * tri  # (S, n, n, *rest)
        for start in range(0, T, self.block):
            tb = min(self.block, T - start)
            y = (L[:, :tb, :tb] * drive[:, None, start:start + tb]).sum(2)
            y += pw[:, 1:tb + 1] * prev.unsqueeze(1)
            out[:, start:start + tb] = y
            prev = out[:, start + tb - 1]
        return out


class TruncatedFilter:
    """Filtered trains ``s(t) = sum_k kappa[k] S(t-k)`` over a phase (MODEL.md 2).

    ``ext`` (S, taps + steps, ...) holds the carried history, oldest first, then the phase's
    spike counts (``ext[:, taps + t] = S(t)``). Computed in blocks of ``block`` steps, each as
    one product with the banded matrix ``K[i, i + taps - 1 - k] = kappa[k]`` (one kernel per
    block instead of one per tap).
    """

    def __init__(self, kappa, block: int = 64):
        self.kappa = torch.as_tensor(np.asarray(kappa, dtype=np.float64))
        self.taps = int(self.kappa.shape[0])
        self.block = block
        self._cache: dict[tuple, torch.Tensor] = {}

    def _band(self, dtype, device) -> torch.Tensor:
        key = (dtype, str(device))
        if key not in self._cache:
            n, taps = self.block, self.taps
            i = torch.arange(n)[:, None]
            j = torch.arange(n + taps - 1)[None, :]
            k = taps - 1 - (j - i)
            valid = (k >= 0) & (k < taps)
            band = torch.where(valid, self.kappa[k.clamp(0, taps - 1)],
                               torch.zeros((), dtype=torch.float64))
            self._cache[key] = band.to(device=device, dtype=dtype)
        return self._cache[key]

    def __call__(self, ext: torch.Tensor, steps: int) -> torch.Tensor:
        S, taps = ext.shape[0], self.taps
        rest = ext.shape[2:]
        band = self._band(ext.dtype, ext.device)
        out = torch.empty(S, steps, *rest, dtype=ext.dtype, device=ext.device)
        for start in range(0, steps, self.block):
            tb = min(self.block, steps - start)
            window = ext[:, start + 1:start + tb + taps].reshape(S, tb + taps - 1, -1)
            out[:, start:start + tb] = torch.matmul(band[:tb, :tb + taps - 1],
                                                    window).view(S, tb, *rest)
        return out
