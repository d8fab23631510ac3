"""Reliability: kill -9 and Ctrl-C with exact resume, atomic checkpoints, full disks, and one
clear error (exit code 2, one line, no traceback, no change to results) per kind of bad input."""

from __future__ import annotations

import csv
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segdend import atomic
from segdend import checkpoint as ckpt
from segdend.cli import _register
from segdend.cli.app import app
from segdend.errors import SegdendError

N_TRAIN, N_TEST = 120, 30


def train_args(data: Path, out: Path) -> list[str]:
    """A spiking run small enough for a test but slow enough to be killed mid-way."""
    return ["train", "--preset", "paper-h1", "--data-dir", str(data), "--out", str(out),
            "--epochs", "2", "--test-examples", "20", "--engine", "reference", "--no-progress",
            "--set", "model.layers=[20, 10]", "--set", "training.checkpoint_every=10",
            "--set", "phases.test_length=60", "--set", "phases.test_window=40"]


def segdend(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "segdend", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def final_state(run: Path) -> tuple[dict[str, np.ndarray], list[dict[str, str]]]:
    arrays, _ = ckpt.load_checkpoint(run / "checkpoints" / "latest.safetensors")
    rows = [{k: v for k, v in r.items() if k != "seconds"}
            for r in csv.DictReader(open(run / "metrics.csv"))]
    return arrays, rows


@pytest.fixture(scope="module")
def uninterrupted(small_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    proc = segdend(*train_args(small_mnist, out))
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    return final_state(out)


def assert_same_run(a, b) -> None:
    arrays_a, rows_a = a
    arrays_b, rows_b = b
    assert rows_a == rows_b
    assert arrays_a.keys() == arrays_b.keys()
    for k in arrays_a:
        assert np.array_equal(arrays_a[k], arrays_b[k]), k


def test_sigkill_at_random_points_then_resume_is_bit_identical(small_mnist, tmp_path,
                                                               uninterrupted):
    out = tmp_path / "run"
    chooser = random.Random(1234)
    kills, started = 0, False
    for attempt in range(8):
        args = (["train", "--resume", str(out), "--data-dir", str(small_mnist), "--no-progress"]
                if started else train_args(small_mnist, out))
        proc = segdend(*args)
        if attempt < 3:
            deadline = time.time() + 60
            while not (out / "log.txt").is_file() and time.time() < deadline:
                time.sleep(0.05)  # wait for the run to start, then kill it at a random moment
            time.sleep(chooser.uniform(0.2, 2.5))
            proc.send_signal(signal.SIGKILL)
            kills += proc.wait() == -signal.SIGKILL
            started = started or (out / "config.json").is_file()
            continue
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, log
        break
    assert kills >= 2
    assert_same_run(final_state(out), uninterrupted)


def test_ctrl_c_writes_checkpoint_and_resume_is_bit_identical(small_mnist, tmp_path,
                                                              uninterrupted):
    out = tmp_path / "run"
    proc = segdend(*train_args(small_mnist, out))
    deadline = time.time() + 60
    while not (out / "checkpoints" / "latest.safetensors").is_file() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert proc.returncode == 130, log
    assert "--resume" in log and "Traceback" not in log
    proc = segdend("train", "--resume", str(out), "--data-dir", str(small_mnist), "--no-progress")
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert_same_run(final_state(out), uninterrupted)


def test_crash_between_write_and_rename_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "latest.safetensors"
    ckpt.save_checkpoint(path, {"w": np.arange(4.0)}, {"epoch": 1})

    def crash():
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        ckpt.save_checkpoint(path, {"w": np.zeros(4)}, {"epoch": 2}, _before_rename=crash)
    arrays, meta = ckpt.load_checkpoint(path)
    assert meta["epoch"] == 1 and np.array_equal(arrays["w"], np.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.safetensors"]


def test_undefined_angles_in_a_partial_recording_do_not_make_a_checkpoint_unusable(tmp_path):
    """An interrupted bp_angle run checkpoints its recording so far, where an angle to a zero
    error vector is NaN by definition; resuming must accept that, but never NaN weights."""
    path = tmp_path / "latest.safetensors"
    angles = np.array([[80.0], [np.nan], [75.0]])
    ckpt.save_checkpoint(path, {"W.0": np.ones(3), "partial.record.bp_angle": angles},
                         {"epoch": 1})
    arrays, _ = ckpt.load_checkpoint(path)
    assert np.array_equal(arrays["partial.record.bp_angle"], angles, equal_nan=True)
    ckpt.save_checkpoint(path, {"W.0": np.array([1.0, np.nan])}, {"epoch": 1})
    with pytest.raises(SegdendError, match="non-finite values in W.0"):
        ckpt.load_checkpoint(path)


def test_full_disk_is_a_clear_error_and_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.safetensors"
    ckpt.save_checkpoint(path, {"w": np.arange(4.0)}, {"epoch": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(SegdendError, match="no space left"):
        ckpt.save_checkpoint(path, {"w": np.zeros(4)}, {"epoch": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)[1]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.safetensors"]


def test_incompatible_checkpoint_is_refused_with_reason(tmp_path):
    path = tmp_path / "c.safetensors"
    ckpt.save_checkpoint(path, {"w": np.zeros(2)}, {"config_fingerprint": "abc"})
    with pytest.raises(SegdendError, match="different config"):
        ckpt.load_checkpoint(path, fingerprint="def")


# --------------------------------------------------------------------------------------------
# One clear error per bad input


@pytest.fixture(scope="module")
def cli():
    _register()
    return CliRunner()


def corrupt(src: Path, dst: Path, name: str, how) -> Path:
    shutil.copytree(src, dst)
    how(dst / name)
    return dst


def _patch(offset: int, data: bytes):
    def apply(p: Path):
        raw = bytearray(p.read_bytes())
        raw[offset:offset + len(data)] = data
        p.write_bytes(bytes(raw))
    return apply


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[:-100])


BAD_DATA = {
    "wrong magic": ("train-images-idx3-ubyte", _patch(0, b"\x00\x00\x09\x99"), "magic"),
    "count mismatch": ("train-labels-idx1-ubyte", _patch(4, (N_TRAIN + 5).to_bytes(4, "big")),
                       ""),
    "label out of range": ("t10k-labels-idx1-ubyte", _patch(8, b"\x0c"), "label"),
    "short read": ("t10k-images-idx3-ubyte", _truncate, ""),
    "missing file": ("train-labels-idx1-ubyte", lambda p: p.unlink(), "train-labels"),
}


def check_clean_error(result, pattern: str = "") -> None:
    text = result.output
    assert result.exit_code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in text, text
    assert text.strip().splitlines()[-1] == errors[0]  # the message is one line, and the last
    assert pattern.lower() in errors[0].lower(), errors[0]


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_files(cli, small_mnist, tmp_path, case):
    name, how, pattern = BAD_DATA[case]
    data = corrupt(small_mnist, tmp_path / "data", name, how)
    result = cli.invoke(app, ["train", "--data-dir", str(data), "--out", str(tmp_path / "r"),
                              "--no-progress"])
    check_clean_error(result, pattern)


def test_data_directory_that_does_not_exist(cli, tmp_path):
    result = cli.invoke(app, ["train", "--data-dir", str(tmp_path / "nope"),
                              "--out", str(tmp_path / "r")])
    check_clean_error(result, "nope")


@pytest.mark.parametrize("args, pattern", [
    (["--preset", "paper-h9"], "unknown preset"),
    (["--set", "training.etaa=[0.1, 0.1]"], "unknown config key"),
    (["--set", "model.g_B=fast"], "model.g_B"),
    (["--set", "nosection.x=1"], "unknown config section"),
    (["--set", "model.layers=[500, 0]"], "layer size"),
    (["--set", "training.eta=[-0.2, 0.2]"], "training.eta[0]"),
    (["--set", "training.eta=[nan, 0.2]"], "training.eta[0]"),
    (["--set", "model.g_A=-0.1"], "model.g_A"),
    (["--set", "model.g_B=inf"], "model.g_B"),
    (["--set", "phases.min_length=15"], "integration window"),
    (["--mode", "dreaming"], "model.mode"),
])
def test_bad_config_values(cli, tmp_path, args, pattern):
    out = tmp_path / "r"
    result = cli.invoke(app, ["train", "--out", str(out), *args])
    check_clean_error(result, pattern)
    assert not out.exists()


def test_unknown_experiment(cli):
    _register()
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    if "reproduce" not in names:
        pytest.skip("the reproduce command is not installed")
    check_clean_error(cli.invoke(app, ["reproduce", "no-such-experiment"]), "unknown")


@pytest.fixture(scope="module")
def finished_run(small_mnist, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("done") / "run"
    _register()
    result = CliRunner().invoke(app, ["train", "--preset", "paper-h1", "--mode", "rate",
                                      "--data-dir", str(small_mnist), "--out", str(out),
                                      "--epochs", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    return out


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_corrupted_checkpoint_on_evaluate_and_resume(cli, finished_run, small_mnist, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    latest = run / "checkpoints" / "latest.safetensors"
    raw = bytearray(latest.read_bytes())
    raw[10:60] = b"\xff" * 50
    latest.write_bytes(bytes(raw))
    before = snapshot(run)
    result = cli.invoke(app, ["evaluate", str(run), "--data-dir", str(small_mnist)])
    check_clean_error(result, "corrupted")
    result = cli.invoke(app, ["train", "--resume", str(run), "--data-dir", str(small_mnist),
                              "--epochs", "2", "--no-progress"])
    check_clean_error(result, "corrupted")
    assert snapshot(run) == before


def test_finished_run_is_not_overwritten(cli, finished_run, small_mnist):
    before = snapshot(finished_run)
    result = cli.invoke(app, ["train", "--preset", "paper-h1", "--mode", "rate", "--data-dir",
                              str(small_mnist), "--out", str(finished_run), "--no-progress"])
    check_clean_error(result, "--overwrite")
    assert snapshot(finished_run) == before


def test_evaluate_json(cli, finished_run, small_mnist):
    import json

    result = cli.invoke(app, ["evaluate", str(finished_run), "--data-dir", str(small_mnist),
                              "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= res["test_error_mean"] <= 100 and res["repeats"] == 1
    assert not (finished_run / "evaluations").exists(), "only --save keeps an evaluation"
