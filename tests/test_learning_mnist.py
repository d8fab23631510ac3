"""Learning on the real MNIST files: the published code reaches 6.2% after its first rate epoch."""

import pytest

from segdend.presets import build_config
from segdend.train import run_config


def test_rate_mode_paper_h1_one_epoch_reaches_published_error(tmp_path, mnist_dir):
    cfg = build_config("paper-h1", overrides=[
        'model.mode="rate"', "training.epochs=1", f'data.data_dir="{mnist_dir}"',
        f'output.out="{tmp_path / "run"}"', "training.checkpoint_every=0"])
    result = run_config(cfg)
    err = result.metrics[-1]["test_error"]
    assert err <= 6.5, f"rate paper-h1 after one epoch: {err:.2f}% test error"
    assert result.metrics[-1]["train_error"] < 15.0


@pytest.mark.slow
def test_spiking_paper_h1_one_epoch_learns(tmp_path, mnist_dir):
    cfg = build_config("paper-h1", overrides=[
        "training.epochs=1", f'data.data_dir="{mnist_dir}"', f'output.out="{tmp_path / "run"}"'])
    result = run_config(cfg)
    assert result.metrics[-1]["test_error"] < 10.0
