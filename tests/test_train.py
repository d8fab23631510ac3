"""The online trainer: run directories, metrics, resume, divergence guard, the Python API."""

import csv
import json

import numpy as np
import pytest
from _helpers import tiny_config, tiny_dataset

from segdend import Network
from segdend.checkpoint import load_checkpoint
from segdend.errors import DivergenceError, SegdendError
from segdend.train import Trainer, run_config


def cfg_for(tmp_path, name="run", **training):
    t = {"epochs": 2, "engine": "reference", "checkpoint_every": 7, **training}
    return tiny_config(training=t, output={"out": str(tmp_path / name)},
                       phases={"min_length": 25, "window": 10})


def test_run_directory_records_everything(tmp_path):
    cfg = cfg_for(tmp_path)
    result = run_config(cfg, data=tiny_dataset())
    d = tmp_path / "run"
    assert result.status == "finished"
    saved = json.loads((d / "config.json").read_text())
    assert saved["model"]["layers"] == [8, 3] and saved["training"]["seed"] == 0
    info = json.loads((d / "run.json").read_text())
    for key in ("seed", "segdend_version", "git_revision", "engine", "status"):
        assert key in info
    assert info["status"] == "finished"
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["examples_seen"]) for r in rows] == [40, 80]
    for r in rows:
        assert 0 <= float(r["test_error"]) <= 100 and float(r["seconds"]) > 0
        assert "train_error" in r and "loss_hidden0" in r
    assert (d / "checkpoints" / "epoch_002.safetensors").is_file()
    assert (d / "losses" / "epoch_001.safetensors").is_file()


def test_finished_run_is_never_overwritten_without_flag(tmp_path):
    cfg = cfg_for(tmp_path, epochs=1)
    run_config(cfg, data=tiny_dataset())
    before = (tmp_path / "run" / "metrics.csv").read_bytes()
    with pytest.raises(SegdendError, match="already holds a finished run"):
        run_config(cfg, data=tiny_dataset())
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == before
    over = cfg.model_copy(update={"output": cfg.output.model_copy(update={"overwrite": True})})
    run_config(over, data=tiny_dataset())


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    with pytest.raises(SegdendError, match="not a segdend run directory"):
        run_config(cfg_for(tmp_path), data=tiny_dataset())


def test_identical_reruns_are_bit_identical(tmp_path):
    finals = []
    for name in ("a", "b"):
        r = run_config(cfg_for(tmp_path, name), data=tiny_dataset())
        finals.append(r)
    for a, b in zip(finals[0].params.arrays().values(), finals[1].params.arrays().values(),
                    strict=True):
        assert np.array_equal(a, b)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in finals[0].metrics]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in finals[1].metrics]


@pytest.mark.parametrize("stop_at", [5, 40, 53])
def test_resume_after_stop_is_bit_identical(tmp_path, stop_at):
    data = tiny_dataset()
    full = run_config(cfg_for(tmp_path, "full"), data=data)
    cfg = cfg_for(tmp_path, "part")
    run_config(cfg, data=data, stop_after=stop_at)
    resumed = run_config(cfg, data=data, resume=True)
    for k, a in full.params.arrays().items():
        assert np.array_equal(a, resumed.params.arrays()[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa
    assert strip(full.metrics) == strip(resumed.metrics)


def test_learning_reduces_error_on_a_separable_task(tmp_path):
    data = tiny_dataset(n_train=300, n_test=100)
    cfg = tiny_config(model={"mode": "rate"}, training={"epochs": 3, "engine": "reference"},
                      output={"out": str(tmp_path / "r")})
    r = run_config(cfg, data=data)
    errors = [row["test_error"] for row in r.metrics]
    assert errors[-1] < 45.0 and errors[-1] < errors[0] - 20, errors  # chance is 66.7%


def test_divergence_stops_with_layer_and_example_and_keeps_checkpoint(tmp_path):
    cfg = cfg_for(tmp_path, eta=[1e12, 1e12])
    with pytest.raises(DivergenceError, match=r"layer \d+ at training example \d+"):
        run_config(cfg, data=tiny_dataset())
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "diverged"


def test_divergence_keeps_last_good_checkpoint(tmp_path):
    data = tiny_dataset()
    cfg = cfg_for(tmp_path, eta=[0.21, 0.21])
    run_config(cfg, data=data, stop_after=14)
    latest = tmp_path / "run" / "checkpoints" / "latest.safetensors"
    good, meta = load_checkpoint(latest)
    trainer = Trainer(cfg, data, tmp_path / "run")
    trainer.restore(latest)
    trainer.params.W[1][:] = np.nan  # as if the next chunk blew up
    with pytest.raises(DivergenceError):
        trainer.run()
    again, meta2 = load_checkpoint(latest)
    assert meta2["examples_seen"] == meta["examples_seen"]
    assert all(np.all(np.isfinite(v)) for v in again.values())


def test_api_trains_in_the_given_order_and_chunks_do_not_matter():
    cfg = tiny_config(training={"engine": "reference"})
    data = tiny_dataset(n_train=6)
    one = Network(cfg)
    W0 = one.weights()["W0"]
    one.train_online(data.train_images, data.train_labels)
    two = Network(cfg, W=[W0, cfg and one.params.W[1] * 0 + Network(cfg).weights()["W1"]])
    two.train_online(data.train_images[:3], data.train_labels[:3])
    two.train_online(data.train_images[3:], data.train_labels[3:])
    for k, v in one.weights().items():
        np.testing.assert_array_equal(v, two.weights()[k])
    assert not np.array_equal(one.weights()["W0"], W0)


def test_api_refuses_wrong_shapes():
    with pytest.raises(SegdendError, match=r"W\[0\] has shape"):
        Network(tiny_config(), W=[np.zeros((3, 3)), np.zeros((3, 8))])
