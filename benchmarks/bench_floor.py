"""The floor of a 1-ms step of paper-h1, and what splitting one example over two cores gives.

    python benchmarks/bench_floor.py --data-dir ../shared/data/mnist
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= python benchmarks/bench_floor.py ...   # AVX2

Part 1 times, each alone in a tight loop, the pieces of a training step that an exact
float64 engine cannot skip, written with the Numba engine's own compiled primitives
(``add_rows``, ``uniform_at``, ``hidden_soma_step``, ``rate_fast``, ``fast_exp``) on the spike
statistics of real MNIST digits (Poisson input at ``phi_max * pixel``):

- the input drive ``W[0] @ S(t)``: one row of ``W[0].T`` (500 float64) per input spike, the
  rows drawn from the example's nonzero pixels, so they stream from L2 as in the engine;
- the draws: one uniform per nonzero input pixel and per hidden and output unit;
- the hidden soma of 500 units; the rate and ``exp(-rate)`` of the spike candidates (the
  units whose uniform lies above ``exp(-phi_max)``, ~18%).

Their sum is a lower bound of the step: it leaves out the basal filter, the spike lists, the
output layer, the window sums and the per-example updates, and it times every piece with its
small arrays in L1, which the engine's streamed rows do not allow. Multiplied by the mean
steps of an example (two random-length phases) and of a test image (250 steps, one image per
thread), it bounds the speed-up any exact engine can show against the published-style
baseline of ``bench_engines.py``, measured here in the same run.

Part 2 splits the drive and the hidden units' draws and soma of each step between two
threads (each owns half of the 500 hidden units, so half of every ``W[0].T`` row), the way a
two-core training step would, with the two barriers per step that such a step needs (after
the hidden spikes, after the output layer), and prints the step time on one and on two
threads, and the barriers alone. The barrier is a spin on an atomic counter (persistent
threads; Numba's ``prange`` costs microseconds per launch).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engines import PublishedStyleBaseline, load_digits, make_batch, timed  # noqa: E402

from segdend.config import config_from_dict  # noqa: E402
from segdend.dynamics import Constants  # noqa: E402
from segdend.engines._numba_phase import add_rows  # noqa: E402
from segdend.engines._numba_prims import (  # noqa: E402
    JIT_OPTIONS,
    fast_exp,
    fma,
    hidden_soma_step,
    rate_fast,
    stream_origin,
    uniform_at,
)
from segdend.network import initialise  # noqa: E402
from segdend.rng import GAMMA  # noqa: E402

N_IN, N_HID = 784, 500


# ---------------------------------------------------------------------------------------------
# Part 1: the pieces of a step, each alone


@numba.njit(**JIT_OPTIONS)
def drive(WT, spikes, counts, n_spikes, out):
    """``out = W[0] @ S(t)`` for each step's spike list (the engine's ``add_rows``)."""
    total = 0.0
    for t in range(n_spikes.size):
        out[:] = 0.0
        add_rows(WT, 0, out.size, spikes[t], counts[t], n_spikes[t], out)
        total += out[0]
    return total


@numba.njit(**JIT_OPTIONS)
def draws(key, n_steps, gammas, uu):
    """One uniform per unit and step (``uniform_at`` from a per-unit offset table)."""
    total = 0.0
    for t in range(n_steps):
        origin = stream_origin(key, 0, t, 1)
        for i in range(gammas.size):
            uu[i] = uniform_at(origin + gammas[i])
        total += uu[0]
    return total


@numba.njit(**JIT_OPTIONS)
def soma(n_steps, v, vb, va, g_L, g_B, g_A, dt):
    for _ in range(n_steps):
        for i in range(v.size):
            v[i] = hidden_soma_step(v[i], vb[i], va[i], g_L, g_B, g_A, dt)
    return v[0]


@numba.njit(**JIT_OPTIONS)
def candidate_rates(n_steps, v, n_cand, phc, p0s, phi_max):
    for _ in range(n_steps):
        for q in range(n_cand):
            phc[q] = rate_fast(v[q], phi_max)
            p0s[q] = fast_exp(-phc[q])
    return p0s[0]


def input_spikes(images, n_steps, phi_max, seed=0):
    """Spike lists of ``n_steps`` steps, a new digit every 100 steps: Poisson counts at
    ``phi_max * pixel`` (statistics only: numpy's generator, not the engine's stream)."""
    gen = np.random.default_rng(seed)
    spikes = np.zeros((n_steps, N_IN), dtype=np.int64)
    counts = np.zeros((n_steps, N_IN))
    n_spikes = np.zeros(n_steps, dtype=np.int64)
    nnz = []
    for t in range(n_steps):
        pixels = images[(t // 100) % len(images)] / 255.0
        c = gen.poisson(phi_max * pixels)
        idx = np.flatnonzero(c)
        spikes[t, :idx.size], counts[t, :idx.size], n_spikes[t] = idx, c[idx], idx.size
        nnz.append(np.count_nonzero(pixels))
    return spikes, counts, n_spikes, float(np.mean(nnz))


def best_of(fn, repeats=5):
    fn()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def floor_per_step(WT, spikes, counts, n_spikes, nnz, k):
    """Microseconds per step of each piece, alone (``k``: the model's ``dynamics.Constants``)."""
    n = n_spikes.size
    out = np.zeros(N_HID)
    gen = np.random.default_rng(1)
    n_draws = int(round(nnz)) + N_HID + 10
    gammas = np.arange(n_draws).astype(np.uint64) * GAMMA
    uu = np.zeros(n_draws)
    v, vb, va = gen.normal(size=N_HID), gen.normal(size=N_HID), np.zeros(N_HID)
    n_cand = int(round((1.0 - np.exp(-k.phi_max)) * N_HID))
    phc, p0s = np.zeros(N_HID), np.zeros(N_HID)
    key = np.uint64(12345)
    pieces = {
        f"input drive ({n_spikes.mean():.1f} rows of W[0].T per step)":
            lambda: drive(WT, spikes, counts, n_spikes, out),
        f"uniforms ({n_draws} per step)": lambda: draws(key, n, gammas, uu),
        f"hidden soma ({N_HID})": lambda: soma(n, v, vb, va, k.g_L, k.g_B, k.g_A, k.dt),
        f"rate and exp(-rate) of {n_cand} candidates":
            lambda: candidate_rates(n, v, n_cand, phc, p0s, k.phi_max),
    }
    return {name: 1e6 * best_of(fn) / n for name, fn in pieces.items()}


# ---------------------------------------------------------------------------------------------
# Part 2: one step on two threads


def _element_pointer(context, builder, array_type, array, idx):
    ary = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, ary, [idx])


@intrinsic
def atomic_load(typingctx, arr, idx):
    """``arr[idx]`` (int64) with acquire ordering."""

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], *args)
        return builder.load_atomic(ptr, "acquire", 8)

    return nbtypes.int64(arr, idx), codegen


@intrinsic
def atomic_increment(typingctx, arr, idx):
    """``arr[idx] += 1`` (int64), atomically, acquire-release; returns the old value."""

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], *args)
        return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "acq_rel")

    return nbtypes.int64(arr, idx), codegen


@numba.njit(**JIT_OPTIONS)
def barrier(counter, n_threads, generation):
    """Wait until every thread has arrived ``generation`` times (counter never reset)."""
    atomic_increment(counter, 0)
    target = n_threads * generation
    while atomic_load(counter, 0) < target:
        pass


@numba.njit(**JIT_OPTIONS)  # (JIT_OPTIONS releases the GIL)
def half_step_loop(WT, spikes, counts, n_spikes, lo, hi, key, gammas, soma_k, out, uu, v,
                   counter, n_threads):
    """Steps over the hidden units lo..hi-1: their part of the drive (four rows per pass,
    fused multiply-adds, as ``add_rows``), their uniforms (from the engine's table of per-unit
    offsets) and soma (``soma_k = (g_L, g_B, g_A, dt)``), then two barriers."""
    n = hi - lo
    g_L, g_B, g_A, dt = soma_k
    o, u_l, v_l, gam = out[lo:hi], uu[lo:hi], v[lo:hi], gammas[lo:hi]
    generation = 0
    for t in range(n_spikes.size):
        o[:] = 0.0
        m = n_spikes[t]
        spk, cnt = spikes[t], counts[t]
        q = 0
        while q + 4 <= m:
            r1, r2 = WT[spk[q], lo:hi], WT[spk[q + 1], lo:hi]
            r3, r4 = WT[spk[q + 2], lo:hi], WT[spk[q + 3], lo:hi]
            c1, c2, c3, c4 = cnt[q], cnt[q + 1], cnt[q + 2], cnt[q + 3]
            for i in range(n):
                o[i] = fma(c4, r4[i], fma(c3, r3[i], fma(c2, r2[i], fma(c1, r1[i], o[i]))))
            q += 4
        while q < m:
            r1, c1 = WT[spk[q], lo:hi], cnt[q]
            for i in range(n):
                o[i] = fma(c1, r1[i], o[i])
            q += 1
        origin = stream_origin(key, 0, t, 1)
        for i in range(n):
            v_l[i] = hidden_soma_step(v_l[i], o[i], 0.0, g_L, g_B, g_A, dt)
            u_l[i] = uniform_at(origin + gam[i])
        if n_threads > 1:
            generation += 1
            barrier(counter, n_threads, generation)  # hidden spikes complete
            generation += 1
            barrier(counter, n_threads, generation)  # output layer complete
    return generation


def split_step(WT, spikes, counts, n_spikes, k, repeats=5):
    """Microseconds per step on one thread, on two, and of the two barriers alone (medians)."""
    n = n_spikes.size
    key = np.uint64(7)
    gammas = np.arange(N_HID).astype(np.uint64) * GAMMA
    soma_k = (k.g_L, k.g_B, k.g_A, k.dt)
    out, uu, v = np.zeros(N_HID), np.zeros(N_HID), np.zeros(N_HID)
    no_spikes = np.zeros(n, dtype=np.int64)

    def run(parts, spike_counts):
        counter = np.zeros(8, dtype=np.int64)
        threads = [threading.Thread(target=half_step_loop, args=(
            WT, spikes, counts, spike_counts, lo, hi, key, gammas, soma_k, out, uu, v, counter,
            len(parts)))
            for lo, hi in parts]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    half = (N_HID // 16) * 8  # a cache-line boundary
    layouts = {"one thread": ([(0, N_HID)], n_spikes),
               "two threads": ([(0, half), (half, N_HID)], n_spikes),
               "two threads, barriers only": ([(0, 0), (0, 0)], no_spikes)}
    res = {}
    for name, (parts, spike_counts) in layouts.items():
        run(parts, spike_counts[:10])  # compile, start
        times = sorted(run(parts, spike_counts) for _ in range(repeats))
        res[name] = [1e6 * x / n for x in times]
    return res


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("SEGDEND_TEST_MNIST",
                                                         "../shared/data/mnist"))
    ap.add_argument("--steps", type=int, default=20000, help="simulated steps per timing")
    ap.add_argument("--baseline-examples", type=int, default=20)
    args = ap.parse_args()
    train_x, train_y, test_u8 = load_digits(args.data_dir)
    print(f"Floor of a paper-h1 step: {os.cpu_count()} CPUs, Numba target "
          f"{os.environ.get('NUMBA_CPU_NAME', 'host')}, load average {os.getloadavg()[0]:.2f}")

    config = config_from_dict({"model": {"layers": [N_HID, 10]},
                               "training": {"eta": [0.21, 0.21]}})
    WT = np.ascontiguousarray(initialise(config.model, seed=0).W[0].T)
    k = Constants.from_config(config.model)
    spikes, counts, n_spikes, nnz = input_spikes(train_x[:200], args.steps, k.phi_max)
    pieces = floor_per_step(WT.ravel(), spikes, counts, n_spikes, nnz, k)
    print(f"\nPart 1: pieces of a step, each alone ({args.steps} steps, {nnz:.0f} nonzero pixels "
          "per digit)")
    for name, us in pieces.items():
        print(f"  {name:48s} {us:6.3f} us/step")
    floor = sum(pieces.values())
    print(f"  {'sum (a lower bound of the step)':48s} {floor:6.3f} us/step")

    batch = make_batch(config, train_x, train_y, 0, 2000)
    steps_train = batch.lengths.sum(axis=1).mean()
    base = PublishedStyleBaseline(config, initialise(config.model, seed=0))
    nb = args.baseline_examples
    _, t_base, _ = timed(lambda: [base.train_example(batch.pixels[i], batch.labels[i],
                                                     *batch.lengths[i]) for i in range(nb)])
    nt = max(1, nb // 2)
    test_x = test_u8[:nt] / 255.0
    T, window = config.phases.test_length, config.phases.test_window
    _, t_base_test, _ = timed(lambda: [base.test_image(test_x[i], T, window) for i in range(nt)])
    base_train, base_test = 1e3 * t_base / nb, 1e3 * t_base_test / nt
    threads = os.cpu_count() or 1
    best_train = floor * steps_train / 1e3
    best_test = floor * T / 1e3 / threads
    print(f"  a training example: {steps_train:.1f} steps -> at least {best_train:.3f} ms; "
          f"baseline {base_train:.2f} ms ({nb} examples): at most x{base_train / best_train:.0f}")
    print(f"  a test image: {T} steps, {threads} threads -> at least {best_test:.3f} ms; "
          f"baseline {base_test:.2f} ms ({nt} images): at most x{base_test / best_test:.0f}")

    print("\nPart 2: the drive, draws and soma of a step split over two threads "
          "(two barriers per step)")
    split = split_step(WT, spikes, counts, n_spikes, k)
    for name, times in split.items():
        print(f"  {name:30s} median {np.median(times):6.3f} us/step "
              f"(range {times[0]:.3f}-{times[-1]:.3f})")
    one, two = np.median(split["one thread"]), np.median(split["two threads"])
    print(f"  speed-up of the split part: x{one / two:.2f}")


if __name__ == "__main__":
    main()
