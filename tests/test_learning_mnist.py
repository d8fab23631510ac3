"""Learning on the real MNIST files.

The published code reaches 6.2% test error after its first rate-mode epoch of paper-h1. Our
rate mode reproduces its per-example arithmetic exactly (tests/engines/test_reference.py), but
the error at the end of one online epoch is a noisy quantity: over seeds 0-7 it ranges from
5.6% to 8.4% (sd ~1.1 points; the quick tests inside one run swing as much). So the test
checks the median of eight seeds against the published figure, and every seed against a
generous bound, rather than one draw.
"""

import csv
from pathlib import Path

import numpy as np
import pytest

from segdend.presets import build_config
from segdend.train import Trainer, load_dataset, run_config

SEEDS = range(8)
RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_rate_mode_paper_h1_one_epoch_reaches_published_error(mnist_dir):
    base = ['model.mode="rate"', "training.epochs=1", f'data.data_dir="{mnist_dir}"']
    data = load_dataset(build_config("paper-h1", overrides=base))
    errors = []
    for seed in SEEDS:
        cfg = build_config("paper-h1", overrides=[*base, f"training.seed={seed}"])
        result = Trainer(cfg, data).run()
        errors.append(result.metrics[-1]["test_error"])
        assert result.metrics[-1]["train_error"] < 15.0
    assert np.median(errors) <= 6.5, f"rate paper-h1 after one epoch, seeds 0-7: {errors}"
    assert max(errors) <= 9.0, errors


@pytest.mark.slow
def test_spiking_paper_h1_one_epoch_learns_and_repeats_the_committed_run(tmp_path, mnist_dir):
    """One spiking epoch of the main job learns (chance is 90%; seed 0 gives 13.0% test error
    after its first epoch, the committed 60-epoch run reaches 7.0% after five and 3.3% at the
    end) and repeats the first epoch of the committed ``results/depth/runs/h1/seed0`` bit for
    bit: same seed, same model, any CPU and any revision since, the same numbers."""
    cfg = build_config("paper-h1", overrides=[
        "training.epochs=1", f'data.data_dir="{mnist_dir}"', f'output.out="{tmp_path / "run"}"'])
    result = run_config(cfg)
    row = result.metrics[-1]
    assert row["test_error"] < 15.0
    committed = RESULTS / "depth" / "runs" / "h1" / "seed0"
    with open(committed / "metrics.csv", newline="") as f:
        first = next(csv.DictReader(f))
    for key in ("train_error", "loss_out", "loss_hidden0"):
        assert row[key] == float(first[key]), (key, row[key], first[key])
