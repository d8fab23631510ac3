"""Speed of the Numba engine against a baseline in the style of the published (2017) code.

    python benchmarks/bench_engines.py --data-dir ../shared/data/mnist --baseline-examples 20
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= python benchmarks/bench_engines.py ...  # AVX2

For spiking (500, 10), spiking (500, 100, 10) and rate (500, 10) networks it prints the time
per training example (online learning, random phase lengths, the default config) and per
test image (250-step phase, from a cleared state) on real MNIST digits, the compile and
warm-up time of the first calls (excluded from the rates), the peak memory of the process,
and the ratio to a baseline measured in the same run on a few examples.

The baseline mimics the published implementation, written here from MODEL.md: a per-step
NumPy loop with dense matrix-vector products over all inputs every step (``W @ (history @
kappa)``), spikes from ``numpy.random.poisson``, every step's voltages kept and averaged at
the end of the phase, dense outer-product updates; rate mode as a dense per-example loop.

Times are wall-clock (CPU time in parentheses); the load average at the start is printed
because other work on the machine slows both engines.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from segdend import dynamics as dyn
from segdend import rng
from segdend.config import config_from_dict
from segdend.engines.base import TrainBatch
from segdend.engines.numba_engine import NumbaEngine
from segdend.network import initialise

CASES = [  # (label, mode, layers, learning rates of the paper)
    ("spiking (500, 10)", "spiking", (500, 10), (0.21, 0.21)),
    ("spiking (500, 100, 10)", "spiking", (500, 100, 10), (0.23, 0.23, 0.12)),
    ("rate (500, 10)", "rate", (500, 10), (0.21, 0.21)),
]


# ---------------------------------------------------------------------------------------------
# Data


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_digits(data_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training images (n, 784) uint8, their labels, test images (uint8)."""
    try:
        from segdend.data import load_mnist
    except ImportError:
        load_mnist = None
    if load_mnist is not None:
        mnist = load_mnist(data_dir, download=False)
        return mnist.train_images, mnist.train_labels.astype(np.int64), mnist.test_images
    d = Path(data_dir)
    return (_read_idx(d / "train-images-idx3-ubyte.gz").reshape(-1, 784),
            _read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64),
            _read_idx(d / "t10k-images-idx3-ubyte.gz").reshape(-1, 784))


def make_batch(config, images, labels, start, n, seed=0) -> TrainBatch:
    """Examples ``start .. start+n-1`` with random phase lengths and stream keys."""
    pos = np.arange(start, start + n)
    gen = rng.seed_sequence(seed, rng.PHASES, start)
    lengths = np.array([[dyn.phase_length(config.phases.min_length, w) for w in row]
                        for row in gen.wald(config.phases.wald_mean, config.phases.wald_scale,
                                            size=(n, 2))], dtype=np.int64)
    keys = [rng.derive_keys(rng.derive_key(seed, purpose, 0), pos)
            for purpose in (rng.TRAIN_SPIKES, rng.PLATEAU, rng.FEEDBACK_NOISE)]
    idx = pos % len(labels)
    return TrainBatch(images[idx] / 255.0, labels[idx], lengths, *keys)


# ---------------------------------------------------------------------------------------------
# Baseline: the published implementation's way of computing (written from MODEL.md)


class PublishedStyleBaseline:
    """Per-step dense NumPy simulation of the default model (local rule, g_A = 0, broadcast
    feedback, 10-tap kernel, last-20-steps window), one phase at a time."""

    def __init__(self, config, params, seed=0):
        m, self.c = config.model, dyn.Constants.from_config(config.model)
        self.sizes = (m.n_inputs, *m.layers)
        self.W = [w.copy() for w in params.W]
        self.b = [x.copy() for x in params.b]
        self.Y = [y.copy() for y in params.Y]
        self.eta = config.training.eta
        self.window = config.phases.window
        self.gen = np.random.default_rng(seed)
        self.clear()

    def clear(self):
        taps = len(self.c.kappa)
        self.v = [np.zeros(n) for n in self.sizes]
        self.hist = [np.zeros((n, taps)) for n in self.sizes]  # (units, taps), newest first

    def _psp(self, l):
        return self.hist[l] @ self.c.kappa  # filtered spikes of every unit, every step

    def _spike(self, l, rates):
        h = self.hist[l]
        h[:, 1:] = h[:, :-1].copy()
        h[:, 0] = self.gen.poisson(rates)

    def phase(self, x, T, label=None, window=None):
        c, top = self.c, len(self.sizes) - 1
        keep = {"v": [[] for _ in range(top + 1)], "s": [[] for _ in range(top + 1)],
                "phi": [[] for _ in range(top + 1)], "va": [[] for _ in range(top)]}
        x_rate = c.phi_max * x
        for _ in range(T):
            self._spike(0, x_rate)
            s_fb = self._psp(top)  # the output's filtered spikes before its update
            for l in range(1, top + 1):
                s_below = self._psp(l - 1)
                vb = self.W[l - 1] @ s_below + self.b[l - 1]
                v = self.v[l]
                if l < top:
                    va = self.Y[l - 1] @ s_fb
                    v = v + c.dt * (-c.g_L * v + c.g_B * (vb - v) + c.g_A * (va - v))
                    keep["va"][l].append(va)
                else:
                    current = 0.0
                    if label is not None:
                        g_e = np.zeros(len(v))
                        g_e[label] = 1.0
                        current = g_e * (c.E_E - v) + (1 - g_e) * (c.E_I - v)
                    v = v + c.dt * (-c.g_L * v + c.g_D * (vb - v) + current)
                phi = c.phi_max / (1.0 + np.exp(-v))
                self.v[l] = v
                self._spike(l, phi)
                keep["v"][l].append(v)
                keep["s"][l - 1].append(s_below)
                keep["phi"][l].append(phi)
        n = window or self.window
        mean = {k: [np.mean(a[-n:], axis=0) if a else None for a in arrs]
                for k, arrs in keep.items()}
        return mean

    def train_example(self, x, label, T_f, T_t):
        c, top = self.c, len(self.sizes) - 1
        f = self.phase(x, T_f)
        t = self.phase(x, T_t, label)

        def sp(z):
            s = 1.0 / (1.0 + np.exp(-z))
            return s * (1.0 - s)

        u = f["v"][top]
        e = -(t["phi"][top] - c.phi_max / (1.0 + np.exp(-u))) * c.k_D * c.phi_max * sp(u)
        self.W[top - 1] -= self.eta[top - 1] * c.P_out * np.outer(e, f["s"][top - 1])
        self.b[top - 1] -= self.eta[top - 1] * c.P_out * e
        for l in range(top - 1, 0, -1):
            a_f, a_t = 1.0 / (1.0 + np.exp(-f["va"][l])), 1.0 / (1.0 + np.exp(-t["va"][l]))
            e = -(a_t - a_f) * c.k_B * c.phi_max * sp(f["v"][l])
            self.W[l - 1] -= self.eta[l - 1] * c.P_hidden * np.outer(e, f["s"][l - 1])
            self.b[l - 1] -= self.eta[l - 1] * c.P_hidden * e

    def test_image(self, x, T, window):
        self.clear()
        return int(np.argmax(self.phase(x, T, window=window)["v"][-1]))

    # rate mode: dense per-example mat-vecs (MODEL.md 8)
    def rate_example(self, x, label=None):
        c, top = self.c, len(self.sizes) - 1
        s, rates, vs = c.phi_max * x, [c.phi_max * x], []
        for l in range(1, top + 1):
            vb = self.W[l - 1] @ s + self.b[l - 1]
            v = c.k_B * vb if l < top else c.g_D * vb / (c.g_L + c.g_D)
            s = c.phi_max / (1.0 + np.exp(-v))
            vs.append(v)
            rates.append(s)
        if label is None:
            return int(np.argmax(vs[-1]))
        g_e = np.zeros(len(s))
        g_e[label] = 1.0
        vb = self.W[-1] @ rates[-2] + self.b[-1]
        u_t = (c.g_D * vb + g_e * c.E_E + (1 - g_e) * c.E_I) / (c.g_L + c.g_D + 1.0)
        y_t = c.phi_max / (1.0 + np.exp(-u_t))
        u = vs[-1]
        sg = 1.0 / (1.0 + np.exp(-u))
        e = -(y_t - c.phi_max * sg) * c.k_D * c.phi_max * sg * (1 - sg)
        self.W[-1] -= self.eta[-1] * c.P_out * np.outer(e, rates[-2])
        self.b[-1] -= self.eta[-1] * c.P_out * e
        for l in range(top - 1, 0, -1):
            a_f = 1.0 / (1.0 + np.exp(-(self.Y[l - 1] @ rates[-1])))
            a_t = 1.0 / (1.0 + np.exp(-(self.Y[l - 1] @ y_t)))
            sv = 1.0 / (1.0 + np.exp(-vs[l - 1]))
            e = -(a_t - a_f) * c.k_B * c.phi_max * sv * (1 - sv)
            self.W[l - 1] -= self.eta[l - 1] * c.P_hidden * np.outer(e, rates[l - 1])
            self.b[l - 1] -= self.eta[l - 1] * c.P_hidden * e
        return None


# ---------------------------------------------------------------------------------------------


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def bench_case(label, mode, layers, eta, data, args):
    train_x, train_y, test_u8 = data
    m = args.test_images
    test_x = test_u8[:max(m, 20)] / 255.0
    config = config_from_dict({"model": {"mode": mode, "layers": list(layers)},
                               "training": {"eta": list(eta), "threads": args.threads}})
    engine = NumbaEngine(config)
    params = initialise(config.model, seed=0)
    state = engine.new_state()
    test_keys = rng.derive_keys(rng.derive_key(0, rng.TEST_SPIKES, 0), np.arange(len(test_x)))
    T, window = config.phases.test_length, config.phases.test_window

    # first calls: compilation (or loading the on-disk cache) and warm-up
    _, w_train, _ = timed(lambda: engine.train(params, state, make_batch(
        config, train_x, train_y, 0, 20)))
    _, w_test, _ = timed(lambda: engine.test(params, test_x[:20], test_keys[:20]))

    n = args.examples
    train_batch = make_batch(config, train_x, train_y, 20, n)  # built untimed, as the baseline's
    res, t_train, c_train = timed(lambda: engine.train(params, state, train_batch))
    out, t_test, c_test = timed(lambda: engine.test(params, test_x[:m], test_keys[:m]))

    base = PublishedStyleBaseline(config, initialise(config.model, seed=0))
    nb = args.baseline_examples if mode == "spiking" else 20 * args.baseline_examples
    batch = make_batch(config, train_x, train_y, 20, nb)
    if mode == "spiking":
        _, tb_train, _ = timed(lambda: [base.train_example(batch.pixels[i], batch.labels[i],
                                                           *batch.lengths[i])
                                        for i in range(nb)])
        nt = max(1, args.baseline_examples // 2)
        _, tb_test, _ = timed(lambda: [base.test_image(test_x[i], T, window)
                                       for i in range(nt)])
    else:
        _, tb_train, _ = timed(lambda: [base.rate_example(batch.pixels[i], batch.labels[i])
                                        for i in range(nb)])
        nt = nb
        _, tb_test, _ = timed(lambda: [base.rate_example(test_x[i]) for i in range(nt)])

    ms = dict(train=1e3 * t_train / n, train_cpu=1e3 * c_train / n,
              test=1e3 * t_test / m, test_cpu=1e3 * c_test / m,
              base_train=1e3 * tb_train / nb, base_test=1e3 * tb_test / nt)
    print(f"\n{label}: {n} training examples (accuracy during training "
          f"{res.correct.mean():.3f}), {m} test images")
    print(f"  first calls (compile or cache load + warm-up): train {w_train:.1f} s, "
          f"test {w_test:.1f} s")
    print(f"  numba    train {ms['train']:8.4f} ms/example ({ms['train_cpu']:.4f} cpu)   "
          f"test {ms['test']:8.4f} ms/image ({ms['test_cpu']:.4f} cpu, {args.threads} threads)")
    print(f"  baseline train {ms['base_train']:8.3f} ms/example ({nb} examples)        "
          f"test {ms['base_test']:8.3f} ms/image ({nt} images)")
    print(f"  speed-up train x{ms['base_train'] / ms['train']:.0f}, "
          f"test x{ms['base_test'] / ms['test']:.0f}")
    return ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("SEGDEND_TEST_MNIST",
                                                   "../shared/data/mnist"))
    ap.add_argument("--examples", type=int, default=3000, help="training examples timed")
    ap.add_argument("--test-images", type=int, default=2000, help="test images timed")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for testing (training is sequential)")
    ap.add_argument("--baseline-examples", type=int, default=6,
                    help="spiking examples for the baseline (rate mode: 20x as many)")
    args = ap.parse_args(argv)

    data = load_digits(args.data_dir)
    load1, load5, _ = os.getloadavg()
    print(f"Numba engine benchmark: {os.cpu_count()} CPUs, load average {load1:.2f} "
          f"(5 min {load5:.2f}), python {sys.version.split()[0]}")
    for case in CASES:
        bench_case(*case, data, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak memory (max RSS of this process): {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
