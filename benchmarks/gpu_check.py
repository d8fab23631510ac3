"""Check and time the torch engine: CUDA equivalence with the CPU reference, then speed.

    python benchmarks/gpu_check.py            # everything the machine allows
    python benchmarks/gpu_check.py --quick    # fewer examples (CPU: ~1 minute)

On a machine with CUDA: (1) spike uniforms bit-equal to ``segdend.rng`` on the GPU; (2) a
small network trained on CUDA in float64 equals the CPU reference (losses, ``correct``,
weights, carried state, test voltages) for several options; (3) timing of the (500, 10)
network in spiking mode, training and testing, float32 and float64, single networks and
populations of 8 and 32 members; rate mode for comparison. Without CUDA the CUDA parts are
skipped (the equivalence check then runs the torch engine on the CPU) and the CPU rows are
timed (``training.threads`` intra-op threads, default 1).
Images are synthetic (MNIST-like sparsity), so no data set is needed. Exit code 1 if an
equivalence check fails. Budget: well under 4 minutes on an H200.

:func:`measure` is the reusable timing function (ms per training example and per test
image, per member).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from segdend import rng
from segdend.config import config_from_dict
from segdend.engines.base import TrainBatch
from segdend.engines.reference import ReferenceEngine
from segdend.engines.torch_engine import TorchEngine, TorchPopulation
from segdend.network import initialise


def synthetic_batch(config, n: int, seed: int = 0) -> TrainBatch:
    """MNIST-like images (~20% of pixels lit), labels, random phase lengths, stream keys."""
    gen = np.random.default_rng(seed)
    n_in = config.model.n_inputs
    pixels = gen.random((n, n_in)) * (gen.random((n, n_in)) < 0.2)
    labels = gen.integers(0, config.model.layers[-1], n)
    ph = config.phases
    lengths = ph.min_length + gen.wald(ph.wald_mean, ph.wald_scale, size=(n, 2)).astype(np.int64)
    keys = [rng.derive_keys(rng.derive_key(seed, purpose, 0), np.arange(n))
            for purpose in (rng.TRAIN_SPIKES, rng.PLATEAU, rng.FEEDBACK_NOISE)]
    return TrainBatch(pixels, labels, lengths, *keys)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config, n_train: int, n_test: int, members: int = 1, repeats: int = 1,
            max_batch: int | None = None) -> dict[str, float]:
    """Milliseconds per training example and per test image, per member (best of
    ``repeats``), after a warm-up; ``members > 1`` times a :class:`TorchPopulation`."""
    if members == 1:
        eng = TorchEngine(config, max_batch=max_batch)
    else:
        eng = TorchPopulation(config, max_batch=max_batch)
    params = [initialise(config.model, i) for i in range(members)]
    states = [eng.new_state() for _ in range(members)]
    batches = [synthetic_batch(config, n_train, seed=i) for i in range(members)]
    warm = [synthetic_batch(config, 2, seed=100 + i) for i in range(members)]
    test_pixels = synthetic_batch(config, n_test, seed=999).pixels
    keys = [rng.derive_keys(rng.derive_key(i, rng.TEST_SPIKES), np.arange(n_test))
            for i in range(members)]

    def train(bs):
        if members == 1:
            eng.train(params[0], states[0], bs[0])
        else:
            eng.train(params, states, bs)

    def test(n):
        if members == 1:
            eng.test(params[0], test_pixels[:n], keys[0][:n])
        else:
            eng.test(params, test_pixels[:n], [k[:n] for k in keys])

    train(warm)
    test(min(n_test, 4))
    best_train = best_test = float("inf")
    for _ in range(repeats):
        _sync(eng.device)
        t = time.perf_counter()
        train(batches)
        _sync(eng.device)
        best_train = min(best_train, (time.perf_counter() - t) / (n_train * members))
        t = time.perf_counter()
        test(n_test)
        _sync(eng.device)
        best_test = min(best_test, (time.perf_counter() - t) / (n_test * members))
    return {"train_ms": 1e3 * best_train, "test_ms": 1e3 * best_test}


# ---------------------------------------------------------------------------------------------
# Equivalence on CUDA


def _small_config(device: str, **model):
    return config_from_dict({"model": {"n_inputs": 30, "layers": [7, 5, 3], **model},
                             "training": {"eta": [0.21, 0.21, 0.21], "device": device}})


def check_uniforms(device: str) -> float:
    from segdend.engines import _torch_rng as trng
    gen = np.random.default_rng(0)
    keys = gen.integers(0, 2**64, size=64, dtype=np.uint64)
    counters = gen.integers(0, 2**52, size=4096, dtype=np.uint64)
    with np.errstate(over="ignore"):
        want = rng.uniform(keys[:, None], counters[None, :])
    got = trng.uniform(torch.as_tensor(trng.keys_as_int64(keys), device=device)[:, None],
                       torch.as_tensor(counters.view(np.int64), device=device)[None, :])
    return float(np.abs(got.cpu().numpy() - want).max())


def check_equivalence(device: str) -> list[tuple[str, float, bool]]:
    """(case, largest difference, predictions and flags identical) of CUDA float64 vs the
    CPU reference over 4 training examples and 6 test images of a (7, 5, 3) network."""
    cases = {"spiking": {}, "exact kernel": {"kernel": "exact"}, "g_A=0.3": {"g_A": 0.3},
             "random plateaus": {"plateau_times": "random"},
             "noisy symmetric": {"feedback": "noisy_symmetric"}, "rate mode": {"mode": "rate"}}
    rows = []
    for name, model in cases.items():
        cpu_cfg, dev_cfg = _small_config("cpu", **model), _small_config(device, **model)
        ref, eng = ReferenceEngine(cpu_cfg), TorchEngine(dev_cfg)
        p_ref = initialise(cpu_cfg.model, 1)
        p_eng = p_ref.copy()
        s_ref, s_eng = ref.new_state(), eng.new_state()
        batch = synthetic_batch(cpu_cfg, 4)
        r_ref, r_eng = ref.train(p_ref, s_ref, batch), eng.train(p_eng, s_eng, batch)
        diffs = [np.abs(r_ref.loss_out - r_eng.loss_out).max(),
                 np.abs(r_ref.loss_hidden - r_eng.loss_hidden).max()]
        diffs += [np.abs(a - b).max() for a, b in zip(p_ref.W + p_ref.b + p_ref.Y,
                                                      p_eng.W + p_eng.b + p_eng.Y, strict=True)]
        diffs += [np.abs(s_ref.arrays[k] - s_eng.arrays[k]).max() for k in s_ref.arrays]
        pixels = synthetic_batch(cpu_cfg, 6, seed=7).pixels
        keys = rng.derive_keys(rng.derive_key(3, rng.TEST_SPIKES), np.arange(6))
        t_ref, t_eng = ref.test(p_ref, pixels, keys), eng.test(p_ref, pixels, keys)
        diffs.append(np.abs(t_ref.output_voltage - t_eng.output_voltage).max())
        same = (np.array_equal(r_ref.correct, r_eng.correct)
                and np.array_equal(t_ref.predictions, t_eng.predictions))
        rows.append((name, float(max(diffs)), bool(same)))
    return rows


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer examples")
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}; CUDA: "
          f"{torch.cuda.get_device_name(0) if cuda else 'not available'}")
    ok = True
    dev = "cuda" if cuda else "cpu"
    err = check_uniforms(dev)
    print(f"uniforms on {dev} vs rng.uniform: max |diff| = {err:.1e}"
          f" {'(bit-equal)' if err == 0 else 'MISMATCH'}")
    ok &= err == 0
    print(f"\n{dev} float64 torch engine vs CPU reference, (7, 5, 3) network, 4 examples + "
          "6 test images")
    print(f"{'case':<18}{'max |diff|':>12}  identical flags/predictions")
    for name, diff, same in check_equivalence(dev):
        good = diff < 1e-9 and same
        ok &= good
        print(f"{name:<18}{diff:>12.1e}  {same}{'' if good else '   <-- FAIL'}")

    def cfg(mode, device, dtype):
        return config_from_dict({"model": {"mode": mode},
                                 "training": {"device": device, "dtype": dtype,
                                              "threads": args.threads}})

    rows = []
    q = args.quick
    if cuda:
        for dtype in ("float32", "float64"):
            for members, n_train, n_test in ((1, 60 if q else 200, 500 if q else 2000),
                                             (8, 20 if q else 60, 100 if q else 400),
                                             (32, 10 if q else 30, 50 if q else 200)):
                r = measure(cfg("spiking", "cuda", dtype), n_train, n_test, members)
                rows.append(("spiking", "cuda", dtype, members, r))
            r = measure(cfg("rate", "cuda", dtype), 300 if q else 1000, 5000, 1)
            rows.append(("rate", "cuda", dtype, 1, r))
            r = measure(cfg("rate", "cuda", dtype), 100 if q else 300, 2000, 32)
            rows.append(("rate", "cuda", dtype, 32, r))
        peak = torch.cuda.max_memory_allocated() / 2**20
    r = measure(cfg("spiking", "cpu", "float64"), 10 if q else 30, 16 if q else 48, 1,
                repeats=2)
    rows.append(("spiking", "cpu", "float64", 1, r))
    r = measure(cfg("rate", "cpu", "float64"), 200 if q else 1000, 2000, 1, repeats=2)
    rows.append(("rate", "cpu", "float64", 1, r))
    print(f"\n(500, 10) network; ms per example / per test image, per member "
          f"(CPU: {args.threads} thread(s))")
    print(f"{'mode':<8}{'device':<7}{'dtype':<9}{'members':>8}{'train ms':>10}{'test ms':>10}"
          f"{'all ex/s':>10}")
    for mode, dev, dtype, members, r in rows:
        print(f"{mode:<8}{dev:<7}{dtype:<9}{members:>8}{r['train_ms']:>10.3f}"
              f"{r['test_ms']:>10.3f}{1e3 / r['train_ms']:>10.0f}")
    if cuda:
        print(f"peak CUDA memory: {peak:.0f} MiB")
    print("\nALL CHECKS PASSED" if ok else "\nEQUIVALENCE FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
