"""The network's parameters: weights, biases, feedback matrices (MODEL.md sections 1, 6, 7).

:class:`Params` holds plain NumPy float64 arrays, bottom-up: ``W[m]`` (n_m x n_{m-1}),
``b[m]`` (n_m) for every layer including the output, ``Y[m]`` for every hidden layer
(n_m x 10 with broadcast wiring, n_m x n_{m+1} layer-wise) and the fixed sparse-feedback masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segdend import rng
from segdend.config import ModelConfig
from segdend.dynamics import init_moments
from segdend.errors import SegdendError
from segdend.model import feedback_source


@dataclass
class Params:
    W: list[np.ndarray]
    b: list[np.ndarray]
    Y: list[np.ndarray]
    Y_mask: list[np.ndarray] = field(default_factory=list)
    """Fixed multiplicative masks of the feedback weights (all ones without sparsity)."""

    def copy(self) -> Params:
        return Params([w.copy() for w in self.W], [x.copy() for x in self.b],
                      [y.copy() for y in self.Y], [m.copy() for m in self.Y_mask])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name, arrs in (("W", self.W), ("b", self.b), ("Y", self.Y), ("Y_mask", self.Y_mask)):
            for i, a in enumerate(arrs):
                out[f"{name}{i}"] = a
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Params:
        def grab(prefix: str) -> list[np.ndarray]:
            out, i = [], 0
            while f"{prefix}{i}" in arrays:
                out.append(np.array(arrays[f"{prefix}{i}"], dtype=np.float64))
                i += 1
            return out
        return cls(grab("W"), grab("b"), grab("Y"), grab("Y_mask"))

    def all_finite(self) -> str | None:
        """Name of the first array holding a non-finite value, or None."""
        for name, a in self.arrays().items():
            if not np.all(np.isfinite(a)):
                return name
        return None


def feedback_shape(model: ModelConfig, m: int) -> tuple[int, int]:
    """Shape of ``Y[m]`` for hidden layer m (MODEL.md 1: broadcast or layer-wise wiring)."""
    return model.layers[m], (model.n_inputs, *model.layers)[feedback_source(model, m)]


def check_shapes(model: ModelConfig, params: Params) -> None:
    """Refuse parameter arrays that do not fit the config, naming the first misfit."""
    sizes = (model.n_inputs, *model.layers)
    expected = {}
    for m in range(len(model.layers)):
        expected[f"W[{m}]"] = (params.W, m, (sizes[m + 1], sizes[m]))
        expected[f"b[{m}]"] = (params.b, m, (sizes[m + 1],))
    for m in range(model.n_hidden_layers):
        expected[f"Y[{m}]"] = (params.Y, m, feedback_shape(model, m))
    for name, (arrs, i, shape) in expected.items():
        if i >= len(arrs):
            raise SegdendError(f"parameter {name} is missing; give one array per layer")
        if arrs[i].shape != shape:
            raise SegdendError(f"parameter {name} has shape {arrs[i].shape}; expected {shape}")
    if len(params.W) != len(model.layers) or len(params.Y) != model.n_hidden_layers:
        raise SegdendError(
            f"got {len(params.W)} weight matrices and {len(params.Y)} feedback matrices for "
            f"{len(model.layers)} layers; expected {len(model.layers)} and {model.n_hidden_layers}"
        )


def _uniform_spread(gen: np.random.Generator, shape, variant: str) -> np.ndarray:
    # The published code scales U(-1, 1) by 3.465 ~ sqrt(12), so the SD is twice W_sd; an
    # earlier revision used U(0, 1) - 0.5 (SD = W_sd). Both are offered (MODEL.md 6).
    if variant == "optimised":
        return gen.uniform(-1.0, 1.0, size=shape)
    return gen.uniform(0.0, 1.0, size=shape) - 0.5


def initialise(model: ModelConfig, seed: int) -> Params:
    """Initial W, b, Y (and sparse masks) for a config and seed (MODEL.md 6, 7)."""
    gen = rng.seed_sequence(seed, rng.INIT)
    sizes = (model.n_inputs, *model.layers)
    W, b, Y = [], [], []
    moments = [init_moments(sizes[m], model.init_v_avg, model.init_v_sd, model.init_b_avg,
                            model.phi_max) for m in range(len(model.layers))]
    for m in range(len(model.layers)):
        shape = (sizes[m + 1], sizes[m])
        if model.init == "uniform":
            W.append(0.1 * gen.uniform(-1.0, 1.0, size=shape))
            b.append(gen.uniform(-1.0, 1.0, size=sizes[m + 1]))
        else:
            w_avg, w_sd = moments[m]
            W.append(w_avg + 3.465 * w_sd * _uniform_spread(gen, shape, model.init))
            b.append(model.init_b_avg
                     + 3.465 * model.init_b_sd * _uniform_spread(gen, sizes[m + 1], model.init))
    for m in range(model.n_hidden_layers):
        shape = feedback_shape(model, m)
        if model.init == "uniform":
            Y.append(gen.uniform(-1.0, 1.0, size=shape))
        else:
            # Feedback into hidden layer m uses the moments of the layer above (MODEL.md 6).
            w_avg, w_sd = moments[m + 1]
            Y.append(w_avg + 3.465 * w_sd * _uniform_spread(gen, shape, model.init))
    params = Params(W, b, Y, [np.ones_like(y) for y in Y])
    apply_sparsity(model, params, seed)
    return params


def apply_sparsity(model: ModelConfig, params: Params, seed: int) -> None:
    """Sparse feedback: zero a fixed random fraction of each Y, scale the rest (MODEL.md 7)."""
    if model.feedback_sparsity == 0:
        return
    gen = rng.seed_sequence(seed, rng.SPARSE_MASK)
    gain = (model.feedback_sparse_gain if model.feedback_sparse_gain is not None
            else 1.0 / (1.0 - model.feedback_sparsity))
    for m, y in enumerate(params.Y):
        # Exactly round(p * size) entries are silenced, as the published code does.
        keep = np.ones(y.size)
        keep[gen.choice(y.size, int(round(model.feedback_sparsity * y.size)), replace=False)] = 0
        params.Y_mask[m] = keep.reshape(y.shape) * gain
        params.Y[m] = y * params.Y_mask[m]

