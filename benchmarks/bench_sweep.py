"""Wall time of a sweep on a local Dask cluster against the same runs one after another.

    python benchmarks/bench_sweep.py --data-dir ../shared/data/mnist

runs ``--seeds`` seeds of ``--preset`` (default: 4 seeds of paper-h1, rate mode, one epoch)
twice, in fresh directories under ``--out`` (default: a temporary directory):

1. one after another in this process, each with :func:`segdend.train.run_config` exactly as
   ``segdend train`` runs it (MNIST loaded for every run, like separate ``segdend train``
   commands, but without their interpreter start-up), after an untimed warm-up run that
   compiles the Numba engine (its on-disk cache then serves the workers too);
2. as ``segdend sweep`` runs them: :func:`segdend.sweep.run_sweep` on a LocalCluster of
   ``--workers`` single-threaded worker processes, timed from cluster start to summary written.

It prints both wall times, the speed-up, and checks that both produced the same final test
errors (the runs are deterministic). ``--rounds R`` alternates the two measurements R times and
also reports the best of each, which is less sensitive to other load on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper-h1")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mode", default="rate")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-examples", type=int, default=None)
    ap.add_argument("--test-examples", type=int, default=None)
    ap.add_argument("--engine", default=None, help="default: the config's (auto)")
    ap.add_argument("--data-dir", default=os.environ.get("SEGDEND_TEST_MNIST",
                                                   "../shared/data/mnist"))
    ap.add_argument("--out", default=None, help="default: a temporary directory, removed after")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the two measurements this many times (best of is reported)")
    args = ap.parse_args(argv)

    from segdend.engines.registry import resolve_engine_name
    from segdend.sweep import plan_sweep, run_sweep
    from segdend.train import run_config

    load0 = _load()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    options = dict(seeds=args.seeds, mode=args.mode, epochs=args.epochs,
                   train_examples=args.train_examples, test_examples=args.test_examples,
                   data_dir=args.data_dir, engine=args.engine)
    try:
        cfg = plan_sweep(args.preset, out=root / "plan", **options).runs[0].config
        print(f"{args.seeds} runs of {args.preset}, {cfg.model.mode} mode, "
              f"{cfg.training.epochs} epoch(s), train examples "
              f"{cfg.training.train_examples or 'all'}, test examples "
              f"{cfg.training.test_examples or 'all'}, engine {resolve_engine_name(cfg)} "
              f"(training.engine={cfg.training.engine}); {os.cpu_count()} cores, "
              f"{platform.python_implementation()} {platform.python_version()}", flush=True)

        # Warm-up (untimed): compiles the Numba engine once and fills its on-disk cache, which
        # the workers then load, so neither side pays for the compilation.
        t = time.perf_counter()
        warm = plan_sweep(args.preset, out=root / "warm-up",
                          **{**options, "seeds": 1, "epochs": 1, "train_examples": 20,
                             "test_examples": 20})
        run_config(warm.runs[0].config, progress=False)
        print(f"warm-up run (JIT compilation, caches; not counted): "
              f"{time.perf_counter() - t:.1f} s", flush=True)

        t_seqs, t_pars, ok = [], [], True
        for r in range(args.rounds):
            tag = f"round {r + 1}/{args.rounds}: " if args.rounds > 1 else ""
            seq = plan_sweep(args.preset, out=root / f"sequential{r}", **options)
            par = plan_sweep(args.preset, out=root / f"sweep{r}", **options)
            t0 = time.perf_counter()
            seq_errors = []
            for spec in seq.runs:
                t = time.perf_counter()
                result = run_config(spec.config, progress=False)
                seq_errors.append(result.metrics[-1]["test_error"])
                print(f"  sequential {spec.label}: {time.perf_counter() - t:.1f} s, test error "
                      f"{seq_errors[-1]:.2f}%", flush=True)
            t_seqs.append(time.perf_counter() - t0)
            print(f"{tag}sequential: {t_seqs[-1]:.1f} s", flush=True)

            t0 = time.perf_counter()
            result = run_sweep(par, workers=args.workers,
                               log=lambda line: print(f"  sweep {line}", flush=True),
                               status_every=0)
            t_pars.append(time.perf_counter() - t0)
            print(f"{tag}sweep ({args.workers} workers, incl. cluster start and summary): "
                  f"{t_pars[-1]:.1f} s", flush=True)
            same = [x["test_error"] for x in result.runs] == seq_errors
            ok = ok and same and not result.failed
            print(f"{tag}speed-up {t_seqs[-1] / t_pars[-1]:.2f}x; same final test errors: "
                  f"{same}; load average {_load()}", flush=True)
        if args.rounds > 1:
            print(f"best of {args.rounds}: sequential {min(t_seqs):.1f} s, sweep "
                  f"{min(t_pars):.1f} s, speed-up {min(t_seqs) / min(t_pars):.2f}x")
        print(f"load average (1, 5, 15 min) at the start {load0}, at the end {_load()} (other "
              "processes on the machine slow both measurements down)")
        return 0 if ok else 1
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
