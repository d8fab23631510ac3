"""The paths a new user takes (issue 13): bad output locations, failed starts, signals, locks,
silently accepted inputs, evaluate reports, run names, CLI conventions and the README."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import HAVE_MNIST, MNIST_DIR, tiny_config, tiny_dataset
from typer.testing import CliRunner

from segdend import train as train_mod
from segdend.cli import _register
from segdend.cli.app import app
from segdend.errors import SegdendError
from segdend.rundir import claim, default_run_dir, keep_epoch_checkpoint, write_evaluation
from segdend.train import RecentRate, TrainingInterrupted, run_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cli():
    _register()
    return CliRunner()


def check_clean_error(result, pattern: str = "") -> str:
    """Exit code 2, exactly one `error:` line (the last), no traceback; returns the line."""
    text = result.output
    assert result.exit_code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in text, text
    assert text.strip().splitlines()[-1] == errors[0]
    assert pattern.lower() in errors[0].lower(), errors[0]
    return errors[0]


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def rate_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--mode", "rate", "--data-dir", str(data), "--out", str(out),
            "--epochs", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished(small_mnist, tmp_path_factory, cli) -> Path:
    out = tmp_path_factory.mktemp("done") / "run"
    result = cli.invoke(app, rate_args(small_mnist, out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


# -- 1. --overwrite destroys nothing before everything is checked ------------------------------

def test_overwrite_with_bad_data_keeps_the_old_run(cli, run_copy, tmp_path):
    before = snapshot(run_copy)
    result = cli.invoke(app, rate_args(tmp_path / "TYPO", run_copy, "--overwrite"))
    check_clean_error(result, "TYPO")
    assert snapshot(run_copy) == before


def test_overwrite_replaces_the_old_run_once_the_new_one_starts(cli, run_copy, small_mnist):
    (run_copy / "records").mkdir()
    result = cli.invoke(app, rate_args(small_mnist, run_copy, "--overwrite", "--seed", "3"))
    assert result.exit_code == 0, result.output
    assert json.loads((run_copy / "config.json").read_text())["training"]["seed"] == 3
    assert not (run_copy / "records").exists()


# -- 2. unwritable output locations and impossible sizes ------------------------------------

def _file(tmp_path: Path) -> Path:
    f = tmp_path / "afile"
    f.write_text("x")
    return f


@pytest.mark.parametrize("where", ["/dev/null", "/dev/null/run", "file", "file/run",
                                   "/proc/segdend-run"])
def test_unwritable_out_is_one_error_line(cli, small_mnist, tmp_path, where):
    out = {"file": _file(tmp_path), "file/run": _file(tmp_path) / "run"}.get(where, Path(where))
    check_clean_error(cli.invoke(app, rate_args(small_mnist, out)), str(out))
    assert not Path("/proc/segdend-run").exists()


@pytest.fixture
def read_only(monkeypatch):
    """Every probe write fails as on a read-only mount (chmod does not stop root)."""
    import errno

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_by_permissions(cli, small_mnist, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    check_clean_error(cli.invoke(app, rate_args(small_mnist, ro / "run")), "cannot create")


def test_read_only_mount_for_train_resume_evaluate_and_plot(cli, run_copy, small_mnist,
                                                             tmp_path, read_only):
    before = snapshot(run_copy)
    check_clean_error(cli.invoke(app, rate_args(small_mnist, tmp_path / "new")), "cannot write")
    check_clean_error(cli.invoke(app, ["train", "--resume", str(run_copy), "--epochs", "2",
                                       "--data-dir", str(small_mnist), "--no-progress"]),
                      "read-only")
    check_clean_error(cli.invoke(app, ["evaluate", str(run_copy), "--data-dir",
                                       str(small_mnist), "--save"]), "read-only")
    check_clean_error(cli.invoke(app, ["plot", str(run_copy), "--out", str(tmp_path / "p")]),
                      "read-only")
    assert snapshot(run_copy) == before
    assert not (tmp_path / "new").exists()


def test_default_runs_dir_blocked_in_working_directory(cli, small_mnist, tmp_path,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("runs").write_text("not a directory")
    result = cli.invoke(app, ["train", "--mode", "rate", "--data-dir", str(small_mnist),
                              "--epochs", "1", "--no-progress"])
    check_clean_error(result, "runs is a file")


def test_plot_into_dev_null_is_one_error_line(cli, run_copy):
    check_clean_error(cli.invoke(app, ["plot", str(run_copy), "--out", "/dev/null/plots"]),
                      "/dev/null")


def test_sizes_that_cannot_fit_in_memory_are_refused_up_front(cli, small_mnist, tmp_path):
    result = cli.invoke(app, rate_args(small_mnist, tmp_path / "r", "--set",
                                       "model.layers=[5000000, 10]"))
    check_clean_error(result, "5000000")
    assert "GB" in result.output and not (tmp_path / "r").exists()


# -- 3. evaluate --test-examples follows train's rule --------------------------------------

@pytest.mark.parametrize("n", ["-5", "0"])
def test_evaluate_test_examples_must_be_positive(cli, finished, small_mnist, n):
    result = cli.invoke(app, ["evaluate", str(finished), "--data-dir", str(small_mnist),
                              "--test-examples", n])
    check_clean_error(result, "training.test_examples")
    train = cli.invoke(app, rate_args(small_mnist, finished.parent / "x", "--test-examples", n))
    assert check_clean_error(train) == check_clean_error(result)


def test_evaluate_says_when_a_count_is_clamped(cli, finished, small_mnist):
    result = cli.invoke(app, ["evaluate", str(finished), "--data-dir", str(small_mnist),
                              "--test-examples", "10000000", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "10000000 is more than the 30 test images; using all 30" in result.output
    assert json.loads(result.output.strip().splitlines()[-1])["test_images"] == 30


# -- 4. a failed start never blocks the corrected command ----------------------------------

def test_failed_start_does_not_block_the_fixed_command(cli, small_mnist, tmp_path):
    out = tmp_path / "run"
    check_clean_error(cli.invoke(app, rate_args(tmp_path / "nope", out)), "nope")
    assert not out.exists()
    result = cli.invoke(app, rate_args(small_mnist, out))
    assert result.exit_code == 0, result.output


def test_a_run_that_never_trained_is_replaced_silently(cli, small_mnist, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what an older version left after a failed start
    (out / "run.json").write_text(json.dumps({"status": "starting"}))
    result = cli.invoke(app, rate_args(small_mnist, out))
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


# -- 5. SIGTERM is Ctrl-C; a failure marks the run ------------------------------------------

def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "segdend", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigterm_writes_a_checkpoint_and_marks_the_run(small_mnist, tmp_path):
    out = tmp_path / "run"
    proc = _spawn("train", "--data-dir", str(small_mnist), "--out", str(out), "--epochs", "3",
                  "--engine", "reference", "--no-progress", "--set", "model.layers=[20, 10]",
                  "--set", "training.checkpoint_every=10", "--test-examples", "10",
                  "--set", "phases.test_length=60", "--set", "phases.test_window=40")
    latest = out / "checkpoints" / "latest.safetensors"
    deadline = time.time() + 120
    while not latest.is_file() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 128 + signal.SIGTERM, log
    assert "--resume" in log and "Traceback" not in log
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert latest.is_file()


def test_a_full_disk_marks_the_run_failed(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise SegdendError("no space left on the device while writing latest.safetensors")

    monkeypatch.setattr(train_mod, "save_checkpoint", full)
    cfg = tiny_config(training={"epochs": 1, "engine": "reference", "checkpoint_every": 7},
                      output={"out": str(tmp_path / "run")}, phases={"min_length": 25,
                                                                     "window": 10})
    with pytest.raises(SegdendError, match="no space"):
        run_config(cfg, data=tiny_dataset())
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and "no space" in info["error"]


# -- 6. the first interrupt stops promptly ------------------------------------------------

def test_ctrl_c_during_a_slow_first_chunk_stops_at_once(tmp_path, monkeypatch):
    """The first chunk compiles (about 50 s on a fresh machine): nothing to save yet."""
    cfg = tiny_config(training={"epochs": 1, "engine": "reference"},
                      output={"out": str(tmp_path / "run")}, phases={"min_length": 25,
                                                                     "window": 10})
    real = train_mod.Trainer._train_chunk
    t0 = []

    def compiling(self, *args):
        if not t0:  # Ctrl-C half a second into the first chunk
            t0.append(time.perf_counter())
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        for _ in range(200):  # 20 s of "compilation" in Python, as Numba's compiler is
            time.sleep(0.1)
        return real(self, *args)

    monkeypatch.setattr(train_mod.Trainer, "_train_chunk", compiling)
    with pytest.raises(TrainingInterrupted) as stop:
        run_config(cfg, data=tiny_dataset())
    assert time.perf_counter() - t0[0] < 5
    assert not stop.value.saved and stop.value.exit_code == 130
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"


def test_ctrl_c_during_data_loading_says_so(small_mnist, tmp_path):
    marker, out = tmp_path / "loading", tmp_path / "run"
    code = ("import sys, time, pathlib, segdend.train as t\n"
            "def slow(*a, **k):\n"
            f"    pathlib.Path({str(marker)!r}).write_text('x'); time.sleep(60)\n"
            "t.load_dataset = slow\n"
            "from segdend.cli import main\n"
            f"sys.argv = ['segdend', 'train', '--out', {str(out)!r}, '--no-progress']\n"
            "main()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not marker.is_file() and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=30)
    assert time.time() - t0 < 10
    assert proc.returncode == 130, log
    assert log.strip().splitlines()[-1] == "stopped during start-up; nothing was trained"
    assert not out.exists()


# -- 7. a lock on the run directory --------------------------------------------------------

def test_a_run_in_use_is_refused_naming_its_process(cli, run_copy, small_mnist):
    before = snapshot(run_copy)
    with claim(run_copy):
        result = cli.invoke(app, ["train", "--resume", str(run_copy), "--epochs", "2",
                                  "--data-dir", str(small_mnist), "--no-progress"])
        line = check_clean_error(result, "in use")
        if Path("/proc/locks").is_file():
            assert f"process {os.getpid()}" in line
        check_clean_error(cli.invoke(app, rate_args(small_mnist, run_copy, "--overwrite")),
                          "in use")
    assert snapshot(run_copy) == before
    result = cli.invoke(app, ["train", "--resume", str(run_copy), "--epochs", "2",
                              "--data-dir", str(small_mnist), "--no-progress"])
    assert result.exit_code == 0, result.output


# -- 8. one console: logs above the bar, the bar shows the epoch and the test ---------------

def test_progress_and_logs_share_one_console(tmp_path):
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    cfg = tiny_config(training={"epochs": 2, "engine": "reference", "overlap_test": False},
                      output={"out": str(tmp_path / "run")}, phases={"min_length": 25,
                                                                     "window": 10})
    run_config(cfg, data=tiny_dataset(), progress=True, console=console,
               log=lambda s: console.print(s, markup=False, highlight=False))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    assert "epoch 2/2" in text
    assert any(line.startswith("epoch 1: test error") for line in text.splitlines()), text


def test_evaluate_reports_progress(finished, small_mnist):
    from segdend.evaluate import evaluate_run

    seen: list[int] = []
    total: list[int] = []
    res = evaluate_run(finished, data_dir=str(small_mnist), on_start=total.append,
                       on_chunk=seen.append)
    assert total == [30] and sum(seen) == 30 and res["test_images"] == 30


def test_progress_rate_is_recent_not_since_start():
    now = [0.0]
    rate = RecentRate(window=30.0, clock=lambda: now[0])
    rate.update(0)
    now[0] = 60.0
    rate.update(10)  # the first chunk: compilation, 10 examples in 60 s
    for k in range(1, 31):
        now[0] = 60.0 + k
        r = rate.update(10 + 1000 * k)  # then 1000 examples/s
    assert r == pytest.approx(1000.0, rel=0.05)  # the average since start would be ~333


# -- 9. no machine-specific paths --------------------------------------------------------

def test_no_absolute_machine_paths_in_tests_benchmarks_and_docs():
    pattern = re.compile(r"/(work|home/\w+|Users/\w+)/")
    files = [*ROOT.glob("src/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py"),
             *ROOT.glob("scripts/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md",
             # committed run records: fixtures and results/ travel to users' machines too
             *ROOT.glob("tests/fixtures/**/*.json"), *ROOT.glob("tests/fixtures/**/*.txt"),
             *ROOT.glob("results/**/*.json"), *ROOT.glob("results/**/*.csv")]
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in files
           for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not bad, bad


def test_one_helper_finds_the_test_mnist(monkeypatch, tmp_path):
    import _helpers

    monkeypatch.setenv("SEGDEND_TEST_MNIST", str(tmp_path))
    assert _helpers.mnist_test_dir() == tmp_path
    monkeypatch.delenv("SEGDEND_TEST_MNIST")
    assert _helpers.mnist_test_dir().resolve() == (ROOT.parent / "shared" / "data"
                                                   / "mnist").resolve()


# -- 10. silently accepted input ----------------------------------------------------------

@pytest.mark.parametrize("layers", ["[500, 5]", "[500, 11]"])
def test_output_layer_must_match_the_classes(cli, small_mnist, tmp_path, layers):
    result = cli.invoke(app, rate_args(small_mnist, tmp_path / "r", "--set",
                                       f"model.layers={layers}"))
    check_clean_error(result, "10 classes")


def test_unknown_record_names_are_refused(cli, tmp_path):
    result = cli.invoke(app, ["train", "--out", str(tmp_path / "r"), "--set",
                              'output.record=["bp_angel"]'])
    check_clean_error(result, "output.record[0]")


def test_evaluate_refuses_a_checkpoint_of_another_run(cli, finished, small_mnist, tmp_path):
    other = tmp_path / "seed1"
    assert cli.invoke(app, rate_args(small_mnist, other, "--seed", "1")).exit_code == 0
    result = cli.invoke(app, ["evaluate", str(finished), "--data-dir", str(small_mnist),
                              "--checkpoint", str(other / "checkpoints" / "epoch_001.safetensors")])
    check_clean_error(result, "another run")


def test_non_canonical_mnist_gives_one_warning(small_mnist):
    from segdend.data import load_mnist

    lines: list[str] = []
    load_mnist(small_mnist, log=lines.append)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "not the canonical MNIST" in warnings[0]
    if HAVE_MNIST:
        lines.clear()
        load_mnist(MNIST_DIR, log=lines.append)
        assert not [line for line in lines if line.startswith("warning:")]


@pytest.mark.parametrize("extra", [["--out", "elsewhere"], ["--overwrite"]])
def test_resume_refuses_out_and_overwrite(cli, run_copy, extra):
    before = snapshot(run_copy)
    check_clean_error(cli.invoke(app, ["train", "--resume", str(run_copy), *extra]),
                      "--resume")
    assert snapshot(run_copy) == before


def test_resume_with_fewer_epochs_than_done_changes_nothing(cli, run_copy, small_mnist):
    assert cli.invoke(app, ["train", "--resume", str(run_copy), "--epochs", "2", "--data-dir",
                            str(small_mnist), "--no-progress"]).exit_code == 0
    before = snapshot(run_copy)
    result = cli.invoke(app, ["train", "--resume", str(run_copy), "--epochs", "1",
                              "--data-dir", str(small_mnist), "--no-progress"])
    check_clean_error(result, "already trained 2 epochs")
    assert snapshot(run_copy) == before


# -- 11. bounded disk use -----------------------------------------------------------------

def test_keep_checkpoints_policy():
    assert all(keep_epoch_checkpoint(e, 60, 100) for e in range(1, 61))
    kept = [e for e in range(1, 1001) if keep_epoch_checkpoint(e, 1000, 100)]
    assert len(kept) == 100 and kept[-1] == 1000
    assert [e for e in range(1, 8) if keep_epoch_checkpoint(e, 7, 3)] == [3, 6, 7]
    assert not keep_epoch_checkpoint(5, 5, 0)


def test_per_epoch_weights_follow_the_policy(tmp_path):
    cfg = tiny_config(training={"epochs": 3, "engine": "reference"},
                      output={"out": str(tmp_path / "run"), "keep_checkpoints": 2},
                      phases={"min_length": 25, "window": 10})
    run_config(cfg, data=tiny_dataset())
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch_002.safetensors", "epoch_003.safetensors", "latest.safetensors"]


def test_absurd_epoch_counts_are_refused(cli, tmp_path):
    result = cli.invoke(app, ["train", "--out", str(tmp_path / "r"), "--epochs",
                              str(10**12)])
    check_clean_error(result, "training.epochs")


# -- 12. evaluate reports -----------------------------------------------------------------

def test_evaluate_in_rate_mode_reports_the_tests_it_ran(cli, finished, small_mnist):
    result = cli.invoke(app, ["evaluate", str(finished), "--data-dir", str(small_mnist),
                              "--repeats", "5", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "over 1 test of 30 images" in result.output and "test(s)" not in result.output
    assert "rate mode is deterministic" in result.output


def test_mid_epoch_evaluations_are_named_by_their_epoch(tmp_path):
    res = {"epoch": 2, "position": 1234, "repeats": 1, "test_images": 10, "engine": "numba"}
    path = write_evaluation(tmp_path, res)
    assert path.name.startswith("mid_epoch_003_example_001234")
    from segdend.rundir import final_evaluation
    assert final_evaluation(tmp_path, 2) is None and final_evaluation(tmp_path, 3) is None


def test_evaluate_data_dir_with_quotes_and_backslashes(cli, finished, tmp_path):
    odd = tmp_path / 'a"b\\c'
    result = cli.invoke(app, ["evaluate", str(finished), "--data-dir", str(odd)])
    check_clean_error(result, "does not exist")


def test_run_json_keeps_its_data_source_after_an_interrupt(tmp_path, monkeypatch):
    real = train_mod.Trainer._train_chunk

    def then_stop(self, *args):
        out = real(self, *args)
        self._stop = True
        return out

    monkeypatch.setattr(train_mod.Trainer, "_train_chunk", then_stop)
    cfg = tiny_config(training={"epochs": 1, "engine": "reference"},
                      output={"out": str(tmp_path / "run")}, phases={"min_length": 25,
                                                                     "window": 10})
    with pytest.raises(TrainingInterrupted):
        run_config(cfg, data=tiny_dataset())
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert info["data_source"] == "tiny synthetic" and info["train_examples"] == 40


# -- 13. default run names differ when configs differ --------------------------------------

def test_default_run_names():
    from segdend.presets import build_config

    main = build_config("paper-h1")
    assert default_run_dir(main) == Path("runs/paper-h1-spiking-seed0")
    assert default_run_dir(build_config("paper-h1", **{"model.mode": "rate"})) == Path(
        "runs/paper-h1-rate-seed0")
    assert default_run_dir(build_config("paper-h1", **{"data.data_dir": "x",
                                                       "training.engine": "reference"})) \
        == Path("runs/paper-h1-spiking-seed0")
    names = {default_run_dir(build_config("paper-h1", overrides=o, **s)) for o, s in [
        ([], {}), ([], {"training.epochs": 1}), (["training.eta=[0.1,0.1]"], {}),
        (["model.g_A=0.05"], {}), ([], {"training.train_examples": 1000})]}
    assert len(names) == 5


# -- 14. CLI conventions ------------------------------------------------------------------

def test_version_short_help_and_bare_command(cli):
    from segdend import __version__

    assert cli.invoke(app, ["--version"]).output.strip() == f"segdend {__version__}"
    short = cli.invoke(app, ["train", "-h"])
    assert short.exit_code == 0 and "Usage: segdend train" in short.output
    bare = cli.invoke(app, [])
    assert bare.exit_code == 0 and "Usage:" in bare.output and "train" in bare.output
    assert "Missing command" not in bare.output
    assert "--install-completion" in cli.invoke(app, ["--help"]).output


def test_help_metavars_look_like_git_and_pip(cli):
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    for name in names:
        text = cli.invoke(app, [name, "--help"]).output
        assert not re.search(r"(--[\w-]+|^\s+[A-Z_]+) <[\w\[\]]+>|\{\w+\}", text, re.M), \
            (name, text)
    reproduce = cli.invoke(app, ["reproduce", "--help"]).output
    assert "Usage: segdend reproduce [OPTIONS] EXPERIMENT" in reproduce


def test_experiments_list_is_complete_and_cites_real_files(cli):
    from segdend.experiments import list_experiments

    text = cli.invoke(app, ["experiments"]).output
    for exp_id, exp in list_experiments().items():
        assert exp_id in text and exp.title in text
    help_text = cli.invoke(app, ["experiments", "--help"]).output
    for cited in re.findall(r"[\w/]+\.md", help_text):
        assert (ROOT / cited).is_file(), cited


def test_bad_option_value_is_one_error_line(cli):
    result = cli.invoke(app, ["train", "--epochs", "abc"])
    assert "╭" not in result.output
    check_clean_error(result, "--epochs")


def test_one_epoch_is_singular(cli, small_mnist, tmp_path):
    result = cli.invoke(app, rate_args(small_mnist, tmp_path / "r"))
    assert result.exit_code == 0 and "(1 epoch," in result.output, result.output


# -- 15. the README tells the install truth ---------------------------------------------

def test_readme_install_says_how_to_get_the_cpu_build():
    text = (ROOT / "README.md").read_text()
    install = text[text.index("## Install"):text.index("## Run the main job")]
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    assert "macOS" in install
    assert "the pin installs the CPU build" not in install


# -- issue 10: test threads and the overlapped test ----------------------------------------

def test_default_test_threads_are_all_cores(monkeypatch):
    from segdend.train import Trainer, available_cores, resolve_test_threads

    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    cfg = tiny_config(training={"engine": "numba"})
    assert resolve_test_threads(cfg) == available_cores()
    numba = pytest.importorskip("numba")
    trainer = Trainer(cfg, tiny_dataset())
    assert trainer.test_engine.threads == min(available_cores(),
                                              numba.config.NUMBA_NUM_THREADS)
    assert trainer.engine.threads == 1


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _log_lines(run: Path) -> list[str]:
    return [re.sub(r"[\d.]+ s$", "", line[9:]) for line in
            (run / "log.txt").read_text().splitlines()]


def test_overlapped_and_sequential_tests_give_identical_metrics(tmp_path):
    data = tiny_dataset()
    results = {}
    for overlap in (False, True):
        cfg = tiny_config(training={"epochs": 3, "engine": "reference", "overlap_test": overlap,
                                    "checkpoint_every": 7, "quick_test_every": 30,
                                    "quick_test_examples": 5},
                          output={"out": str(tmp_path / str(overlap))},
                          phases={"min_length": 25, "window": 10})
        results[overlap] = run_config(cfg, data=data)
    a, b = tmp_path / "False", tmp_path / "True"
    assert _strip(results[False].metrics) == _strip(results[True].metrics)
    cut = lambda p: [line.rsplit(",", 1)[0] for line in p.read_text().splitlines()]  # noqa
    assert cut(a / "metrics.csv") == cut(b / "metrics.csv")
    assert (a / "quick_tests.csv").read_bytes() == (b / "quick_tests.csv").read_bytes()
    assert [x.replace(str(a), "") for x in _log_lines(a)] == \
        [x.replace(str(b), "") for x in _log_lines(b)]
    for k, v in results[False].params.arrays().items():
        assert np.array_equal(v, results[True].params.arrays()[k])


def test_interrupt_while_a_test_is_pending_resumes_bit_exact(tmp_path, monkeypatch):
    """Epoch 1's test still runs in the background when epoch 2 is interrupted: the
    checkpoint keeps it pending, and the resumed run tests it again."""
    from segdend.checkpoint import load_checkpoint

    data = tiny_dataset()

    def cfg(name):
        return tiny_config(training={"epochs": 2, "engine": "reference", "checkpoint_every": 7},
                           output={"out": str(tmp_path / name)},
                           phases={"min_length": 25, "window": 10})

    full = run_config(cfg("full").model_copy(update={"training": cfg("full").training.model_copy(
        update={"overlap_test": False})}), data=data)
    release = threading.Event()
    real_test, real_chunk = train_mod.test_error, train_mod.Trainer._train_chunk

    def held(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            release.wait(30)
        return real_test(*args, **kwargs)

    def stop_in_epoch_two(self, order, lengths, positions):
        out = real_chunk(self, order, lengths, positions)
        if self.epoch == 1 and positions[0] >= 7:
            self._stop = True
        return out

    monkeypatch.setattr(train_mod, "test_error", held)
    monkeypatch.setattr(train_mod.Trainer, "_train_chunk", stop_in_epoch_two)
    with pytest.raises(TrainingInterrupted):
        run_config(cfg("part"), data=data)
    release.set()
    _, meta = load_checkpoint(tmp_path / "part" / "checkpoints" / "latest.safetensors")
    assert meta["pending_test"]["epoch"] == 1 and meta["metrics"] == []
    assert not (tmp_path / "part" / "checkpoints" / "epoch_001.safetensors").exists()
    monkeypatch.undo()
    resumed = run_config(cfg("part"), data=data, resume=True)
    assert _strip(resumed.metrics) == _strip(full.metrics)
    for k, v in full.params.arrays().items():
        assert np.array_equal(v, resumed.params.arrays()[k]), k
    cut = lambda p: [line.rsplit(",", 1)[0] for line in p.read_text().splitlines()]  # noqa
    assert cut(tmp_path / "part" / "metrics.csv") == cut(tmp_path / "full" / "metrics.csv")
