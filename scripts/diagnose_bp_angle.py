"""Probe the angle-to-backprop gap (Fig. 7A): three readings of the paper's measure.

From an epoch checkpoint of a `bp_angle` run, train N further examples with the reference
engine (a fresh neuron state; the weights carry on exactly as in the run) and report:

- the per-example angle between the local hidden update and backprop's, with backprop's
  computed from the output weights *after* their own update (what every engine records; the
  published code updates top-down in place) and *before* it;
- the mean and median of those per-example angles (the paper's "time-averaged" curve could be
  either a mean of angles or something else);
- the angle between the *summed* updates of consecutive 100-example blocks (the other
  reading of "time-averaged using a sliding window of 100 image presentations").

    python scripts/diagnose_bp_angle.py RUN_DIR epoch_005.safetensors --examples 500
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from segdend import plasticity
from segdend.analysis import angle_deg
from segdend.checkpoint import checkpoint_params
from segdend.engines.reference import ReferenceEngine
from segdend.rundir import load_run_config
from segdend.train import epoch_plan, load_dataset, make_batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("checkpoint", help="file name under RUN_DIR/checkpoints")
    ap.add_argument("--examples", type=int, default=500)
    ap.add_argument("--block", type=int, default=100)
    args = ap.parse_args()

    cfg = load_run_config(args.run_dir)
    params, meta = checkpoint_params(args.run_dir / "checkpoints" / args.checkpoint)
    engine = ReferenceEngine(cfg)
    state = engine.new_state()  # engines keep state in their own layout; start cleared
    epoch = int(meta["epoch"])
    data = load_dataset(cfg)
    order, lengths = epoch_plan(cfg, epoch, len(data.train_labels))
    pos = np.arange(args.examples)
    batch = make_batch(cfg, data.train_images, data.train_labels, epoch, pos, order[pos],
                       lengths[pos])

    after, before, blocks = [], [], []
    sum_local, sum_bp = np.zeros_like(params.W[0]), np.zeros_like(params.W[0])
    for i in range(args.examples):
        w_out = params.W[1].copy()
        fwd, _tgt, errors, errors_bp = engine.learn(
            params, state, batch.pixels[i], int(batch.labels[i]), tuple(batch.lengths[i]),
            batch.keys[i], batch.plateau_keys[i], batch.noise_keys[i])
        e_bp_before = plasticity.hidden_error_propagated(w_out.T, errors[1], fwd.vbar[0],
                                                         engine.c.phi_max, engine.c.k_B)
        after.append(angle_deg(errors[0], errors_bp[0]))
        before.append(angle_deg(errors[0], e_bp_before))
        sum_local += np.outer(errors[0], fwd.sbar[0])
        sum_bp += np.outer(errors_bp[0], fwd.sbar[0])
        if (i + 1) % args.block == 0:
            blocks.append(angle_deg(sum_local.ravel(), sum_bp.ravel()))
            sum_local[:] = 0
            sum_bp[:] = 0
    after, before = np.array(after), np.array(before)
    print(f"{args.run_dir} {args.checkpoint}, {args.examples} examples")
    print(f"  per-example angle, W_out after its update : mean {np.nanmean(after):.2f}, "
          f"median {np.nanmedian(after):.2f}")
    print(f"  per-example angle, W_out before its update: mean {np.nanmean(before):.2f}, "
          f"median {np.nanmedian(before):.2f}")
    print(f"  angle of {args.block}-example summed updates : mean {np.mean(blocks):.2f} "
          f"(blocks: {', '.join(f'{b:.1f}' for b in blocks)})")


if __name__ == "__main__":
    main()
