"""A small Python API for cross-checking: explicit weights in, exact example order, weights out.

>>> from segdend import Network, build_config
>>> cfg = build_config("paper-h1", overrides=["model.mode='rate'"])
>>> net = Network(cfg, W=[W0, W1], b=[b0, b1], Y=[Y0])          # or Network(cfg) to initialise
>>> losses = net.train_online(images, labels)                     # in exactly this order
>>> net.weights()["W0"]                                           # NumPy arrays back
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segdend import rng
from segdend.config import RunConfig
from segdend.engines.base import TrainResult
from segdend.engines.registry import get_engine
from segdend.network import Params, check_shapes, initialise
from segdend.train import as_pixels, epoch_plan, make_batch, test_keys


class Network:
    """A network of ``config`` with its own engine and carried state.

    Parameters
    ----------
    config : RunConfig
    W, b : sequences of arrays, bottom-up, one per layer (hidden layers then output), optional
    Y : sequence of feedback arrays, one per hidden layer, optional
        Without arrays the network is initialised from ``config.training.seed`` (MODEL.md 6).
    """

    def __init__(self, config: RunConfig, W: Sequence[np.ndarray] | None = None,
                 b: Sequence[np.ndarray] | None = None, Y: Sequence[np.ndarray] | None = None):
        self.config = config
        self.params = initialise(config.model, config.training.seed)
        if W is not None:
            self.params.W = [np.array(w, dtype=np.float64) for w in W]
        if b is not None:
            self.params.b = [np.array(x, dtype=np.float64) for x in b]
        if Y is not None:
            self.params.Y = [np.array(y, dtype=np.float64) for y in Y]
            self.params.Y_mask = [np.ones_like(y) for y in self.params.Y]
        check_shapes(config.model, self.params)
        self.engine = get_engine(config)
        self.state = self.engine.new_state()
        self.examples_seen = 0

    def train_online(self, images: np.ndarray, labels: np.ndarray,
                     phase_lengths: np.ndarray | None = None) -> TrainResult:
        """Learn ``images`` (uint8 0-255 or floats in [0, 1]) one at a time in the given order.

        Phase lengths default to the config's rule, drawn from the seed for this call's
        examples; the spike streams are keyed by the running example count, so two calls of
        n examples equal one call of 2n.
        """
        n = len(labels)
        positions = np.arange(self.examples_seen, self.examples_seen + n)
        if phase_lengths is None:
            _, lengths = epoch_plan(self.config, 0, self.examples_seen + n)
            lengths = lengths[positions]
        else:
            lengths = np.asarray(phase_lengths, dtype=np.int64).reshape(n, 2)
        batch = make_batch(self.config, np.asarray(images), np.asarray(labels), 0, positions,
                           np.arange(n), lengths)
        result = self.engine.train(self.params, self.state, batch)
        self.examples_seen += n
        return result

    def predict(self, images: np.ndarray, seed_path: tuple[int, ...] = (9,)) -> np.ndarray:
        """Predicted classes, each image from a cleared state (MODEL.md 9)."""
        keys = test_keys(self.config, seed_path, len(images))
        return self.engine.test(self.params, as_pixels(images), keys).predictions

    def test_error(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Percent misclassified."""
        return 100.0 * float(np.mean(self.predict(images) != np.asarray(labels)))

    def weights(self) -> dict[str, np.ndarray]:
        """Copies of W0.., b0.., Y0.. as NumPy float64 arrays."""
        return {k: v.copy() for k, v in self.params.arrays().items() if not k.startswith("Y_m")}


def derive_example_key(seed: int, epoch: int, position: int) -> np.uint64:
    """The spike-stream key of one training example (for external cross-checks)."""
    return rng.derive_key(seed, rng.TRAIN_SPIKES, epoch, position)


__all__ = ["Network", "Params", "derive_example_key"]
