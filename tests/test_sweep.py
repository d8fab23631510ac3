"""Sweeps on Dask: planning, grids, summaries, skipping, resuming, and a worker killed mid-run."""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import signal
import statistics
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from _helpers import tiny_dataset
from safetensors.numpy import load_file

from segdend.errors import SegdendError
from segdend.sweep import (
    condition_label,
    parse_grid,
    plan_sweep,
    resolve_target,
    run_state,
    run_sweep,
    split_top_level,
)
from segdend.train import run_config

SETS = ["model.n_inputs=16", "model.layers=[8, 3]", "phases.min_length=25", "phases.window=10",
        "phases.test_length=50", "phases.test_window=20", "training.checkpoint_every=7"]
GRID = "training.eta=[0.1,0.1],[0.4,0.4]"
CONDITIONS = ("eta=0.1_0.1", "eta=0.4_0.4")
N_TRAIN, N_TEST, EPOCHS = 40, 30, 2
GATED_RUN = "eta=0.1_0.1/seed1"
GATED_CALL = 8  # the 8th chunk is epoch 2, examples 2-8, just after the checkpoint at 40+2


def tiny_plan(out, **kw):
    return plan_sweep("paper-h1", seeds=2, sets=SETS, grids=[GRID], out=out, epochs=EPOCHS,
                      engine="reference", **kw)


def tiny_factory(config):
    """The sweep's data loader on the workers (picklable: a module-level function)."""
    return tiny_dataset(n_train=N_TRAIN, n_test=N_TEST)


class GatedImages(np.ndarray):
    """Training images that block the run once, at a chosen chunk, until its worker is killed.

    The trainer indexes the training images once per chunk; the gate counts those calls.
    """

    def __getitem__(self, index):
        gate = getattr(self, "gate", None)
        if gate is not None and isinstance(index, np.ndarray):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == GATED_CALL:
                try:  # only the first attempt blocks; the rerun after the kill goes through
                    fd = os.open(gate, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    deadline = time.time() + 120
                    while time.time() < deadline:  # until the test kills this process
                        time.sleep(0.05)
        return super().__getitem__(index)


def gated_factory(gate, config):
    data = tiny_factory(config)
    if config.output.out.endswith(GATED_RUN):
        images = data.train_images.view(GatedImages)
        images.gate = str(gate)
        data.train_images = images
    return data


def final_state(run_dir):
    arrays = load_file(str(Path(run_dir) / "checkpoints" / "latest.safetensors"))
    rows = list(csv.DictReader(open(Path(run_dir) / "metrics.csv")))
    return arrays, [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def assert_same_runs(plan_a, plan_b):
    for a, b in zip(plan_a.runs, plan_b.runs, strict=True):
        assert a.label == b.label
        arrays_a, metrics_a = final_state(a.run_dir)
        arrays_b, metrics_b = final_state(b.run_dir)
        assert arrays_a.keys() == arrays_b.keys()
        for k in arrays_a:
            assert np.array_equal(arrays_a[k], arrays_b[k]), (a.label, k)
        assert metrics_a == metrics_b, a.label


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An undisturbed tiny sweep on a LocalCluster of 2 workers started by run_sweep."""
    out = tmp_path_factory.mktemp("sweep") / "ref"
    plan = tiny_plan(out)
    lines = []
    result = run_sweep(plan, workers=2, data_factory=tiny_factory, log=lines.append,
                       command=["segdend", "sweep", "test"])
    return plan, result, lines


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    c = Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


# -- a sweep and its summary ----------------------------------------------------------------


def test_sweep_summary_matches_the_runs(reference):
    plan, result, lines = reference
    out = plan.out
    assert [r.label for r in plan.runs] == [f"{c}/seed{s}" for c in CONDITIONS for s in (0, 1)]
    finals = {}
    for spec in plan.runs:
        d = Path(spec.run_dir)
        assert d == out / spec.condition / f"seed{spec.seed}"
        assert json.loads((d / "run.json").read_text())["status"] == "finished"
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["training"]["seed"] == spec.seed and cfg["model"]["layers"] == [8, 3]
        rows = list(csv.DictReader(open(d / "metrics.csv")))
        assert [int(r["epoch"]) for r in rows] == [1, 2]
        finals[spec.label] = float(rows[-1]["test_error"])
    eta = {c: json.loads((out / c / "seed0" / "config.json").read_text())["training"]["eta"]
           for c in CONDITIONS}
    assert eta == {"eta=0.1_0.1": [0.1, 0.1], "eta=0.4_0.4": [0.4, 0.4]}

    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert list(rows[0].keys()) == ["condition", "overrides", "seeds", "seed_list", "failed",
                                    "epochs", "test_error_mean", "test_error_sd",
                                    "test_error_min", "test_error_max"]
    assert [r["condition"] for r in rows] == list(CONDITIONS)
    for r in rows:
        errs = [finals[f"{r['condition']}/seed{s}"] for s in (0, 1)]
        assert r["overrides"] == "training.eta=" + r["condition"].split("=")[1].replace(
            "_", ",").join("[]")
        assert (r["seeds"], r["seed_list"], r["failed"], r["epochs"]) == ("2", "0 1", "0", "2")
        assert float(r["test_error_mean"]) == pytest.approx(statistics.fmean(errs))
        assert float(r["test_error_sd"]) == pytest.approx(statistics.stdev(errs))
        assert float(r["test_error_min"]) == min(errs)
        assert float(r["test_error_max"]) == max(errs)
    assert (out / "summary.png").stat().st_size > 1000
    assert (out / "summary.pdf").is_file()
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert {r["status"] for r in runs} == {"finished"} and len(runs) == 4
    assert {r["action"] for r in runs} == {"started"}
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["command"] == ["segdend", "sweep", "test"]
    assert sweep["options"]["grid"] == [GRID] and sweep["seeds"] == [0, 1]
    assert sweep["state"] == "done" and len(sweep["history"]) == 1
    assert not result.failed
    assert sum(line.startswith("finished ") for line in lines) == 4


def test_rerun_recomputes_nothing(reference):
    plan, _, _ = reference
    watched = [Path(s.run_dir) / name for s in plan.runs
               for name in ("metrics.csv", "log.txt", "run.json", "checkpoints/latest.safetensors")]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in watched}
    lines = []
    # No client and no cluster: with nothing to run, none is started.
    result = run_sweep(tiny_plan(plan.out), data_factory=tiny_factory, log=lines.append)
    assert "4 finished (skipped), 0 to resume, 0 to start" in lines[0]
    assert not any(line.startswith(("started", "resumed", "finished")) for line in lines)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in watched} == before
    assert {r["action"] for r in result.runs} == {"skipped"}
    assert [r["test_error_mean"] for r in result.summary] == [
        float(r["test_error_mean"]) for r in csv.DictReader(open(plan.out / "summary.csv"))]
    assert len(json.loads((plan.out / "sweep.json").read_text())["history"]) == 2


def test_unfinished_runs_resume_and_new_ones_start(reference, client, tmp_path):
    ref_plan = reference[0]
    plan = tiny_plan(tmp_path / "sweep")
    data = tiny_factory(None)
    stopped = plan.runs[1]
    run_config(stopped.config, data=data, stop_after=53)  # epoch 2, example 13
    assert run_state(stopped.config)[0] == "resume"
    lines = []
    run_sweep(plan, client=client, data_factory=tiny_factory, log=lines.append)
    assert "0 finished (skipped), 1 to resume, 3 to start" in lines[0]
    assert any(line.startswith(f"resumed {stopped.label} ") and "epoch 2, example 13" in line
               for line in lines)
    assert_same_runs(ref_plan, plan)


def test_killed_worker_run_is_retried_and_resumes_bit_exactly(reference, client, tmp_path):
    ref_plan = reference[0]
    plan = tiny_plan(tmp_path / "sweep")
    gate = tmp_path / "gate"
    killed = {}

    def killer():
        deadline = time.time() + 90
        while time.time() < deadline and not killed:
            if gate.is_file() and gate.read_text():
                pid = int(gate.read_text())
                killed["pid"] = pid
                killed["workers"] = client.run(os.getpid)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    lines = []
    result = run_sweep(plan, client=client, data_factory=functools.partial(gated_factory, gate),
                       log=lines.append)
    thread.join(5)
    assert killed and killed["pid"] in killed["workers"].values(), "no worker was killed"
    assert not result.failed
    gated = Path(plan.out) / GATED_RUN
    log = (gated / "log.txt").read_text()
    assert "resumed from" in log and "at epoch 2, example 2" in log
    assert any(line.startswith(f"resumed {GATED_RUN} ") for line in lines)
    assert_same_runs(ref_plan, plan)


def test_a_finished_run_is_extended_to_more_epochs(reference, tmp_path, monkeypatch):
    import segdend.sweep as sweep
    import segdend.sweep.worker

    monkeypatch.setattr(segdend.sweep.worker, "limit_threads", lambda n: None)
    short = plan_sweep("paper-h1", seeds=1, sets=SETS, grids=["training.eta=[0.1,0.1]"],
                       out=tmp_path / "sweep", epochs=1, engine="reference").runs[0]
    assert sweep.execute_run(short.config_json, tiny_factory)["status"] == "finished"
    full = tiny_plan(tmp_path / "sweep").runs[0]
    assert full.run_dir == short.run_dir
    assert run_state(full.config) == ("resume", "extending from 1 to 2 epochs")
    assert sweep.execute_run(full.config_json, tiny_factory)["action"] == "resumed"
    ref_arrays, ref_metrics = final_state(reference[0].runs[0].run_dir)
    arrays, metrics = final_state(full.run_dir)
    assert metrics == ref_metrics
    assert all(np.array_equal(arrays[k], ref_arrays[k]) for k in ref_arrays)
    with pytest.raises(SegdendError, match="finished after 2 epochs but the sweep asks for 1"):
        run_state(short.config)


def test_conflicting_run_directory_is_refused_before_running(tmp_path):
    plan = tiny_plan(tmp_path / "sweep")
    other = plan_sweep("paper-h1", seeds=1, sets=SETS, grids=["training.eta=[0.1,0.1]"],
                       out=tmp_path / "sweep", epochs=EPOCHS, engine="reference",
                       mode="rate")
    run_config(other.runs[0].config, data=tiny_factory(None), stop_after=3)
    with pytest.raises(SegdendError, match="holds a run with a different config"):
        run_sweep(plan, data_factory=tiny_factory)


def test_a_run_is_worked_on_by_one_process_at_a_time(tmp_path, monkeypatch):
    import segdend.sweep as sweep
    import segdend.sweep.worker

    monkeypatch.setattr(segdend.sweep.worker, "limit_threads", lambda n: None)  # keep this process as it is
    spec = tiny_plan(tmp_path / "sweep").runs[0]
    run_dir = Path(spec.run_dir)
    results = []
    with sweep.run_lock(run_dir):
        thread = threading.Thread(
            target=lambda: results.append(sweep.execute_run(spec.config_json, tiny_factory)))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive() and not (run_dir / "run.json").exists()
    thread.join(60)
    assert results[0]["status"] == "finished" and results[0]["action"] == "started"
    again = sweep.execute_run(spec.config_json, tiny_factory)
    assert again["action"] == "skipped" and again["test_error"] == results[0]["test_error"]


# -- planning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, parts", [
    ("0.1,0.2", ["0.1", "0.2"]),
    ("[0.1,0.1],[0.2,0.2]", ["[0.1,0.1]", "[0.2,0.2]"]),
    ("[0.1, 0.1], [0.2, 0.2]", ["[0.1, 0.1]", "[0.2, 0.2]"]),
    ("[[1,2],[3]],[4]", ["[[1,2],[3]]", "[4]"]),
    ('"a,b",c', ['"a,b"', "c"]),
    ("'x,[y',z", ["'x,[y'", "z"]),
    ('"q\\",r",s', ['"q\\",r"', "s"]),
    ("{a = 1, b = 2},3", ["{a = 1, b = 2}", "3"]),
    ("rate", ["rate"]),
])
def test_split_top_level(text, parts):
    assert split_top_level(text) == parts


@pytest.mark.parametrize("text", ["[0.1,0.1", "0.1]", '"open', "[1,'a]"])
def test_split_top_level_refuses_unbalanced(text):
    with pytest.raises(SegdendError):
        split_top_level(text)


def test_parse_grid():
    assert parse_grid("training.eta=[0.1,0.1],[0.2,0.2]") == (
        "training.eta", ["[0.1,0.1]", "[0.2,0.2]"])
    assert parse_grid("model.mode = spiking,rate") == ("model.mode", ["spiking", "rate"])
    assert parse_grid("model.g_A=0,0.05,0.6") == ("model.g_A", ["0", "0.05", "0.6"])
    for bad, msg in [("training.eta", "section.key=value1"), ("training.nope=1,2", "unknown"),
                     ("training.eta=[0.1],,[0.2]", "empty"), ("model.g_A=1,1", "twice"),
                     ("training.seed=0,1", "--seeds"), ("output.out=a,b", "--out"),
                     ("model.layers=[1,2", "unclosed"), ("training.eta=[0.1,'a", "quote")]:
        with pytest.raises(SegdendError, match=msg) as err:
            parse_grid(bad)
        assert "\n" not in str(err.value)


def test_condition_names_are_file_system_safe():
    assert condition_label([("training.eta", "[0.1,0.1]")]) == "eta=0.1_0.1"
    assert condition_label([("training.eta", "[0.1, 0.2]"), ("model.g_A", "0.05")]) == \
        "eta=0.1_0.2,g_A=0.05"
    assert condition_label([("model.mode", "rate")], full_keys=True) == "model.mode=rate"
    assert condition_label([("model.feedback", '"noisy_symmetric"')]) == "feedback=noisy_symmetric"
    assert condition_label([("training.learning_rule", "true")]) == "learning_rule=true"
    odd = condition_label([("data.data_dir", '"/a b/../c"')])
    assert "/" not in odd and " " not in odd and ".." in odd
    long = condition_label([("training.eta", "[" + ",".join(["0.123456"] * 30) + "]")])
    assert len(long) <= 80


def test_plan_orders_overrides_like_train(tmp_path):
    from segdend.presets import build_config

    plan = plan_sweep("paper-h1", seeds=3, seed_start=5, sets=["training.eta=[0.3,0.3]"],
                      grids=["model.g_D=0.5,0.6", "phases.window=10,20"], out=tmp_path,
                      mode="rate", epochs=1, train_examples=100, test_examples=50,
                      data_dir=tmp_path, engine="reference")
    assert [c.name for c in plan.conditions] == [
        "g_D=0.5,window=10", "g_D=0.5,window=20", "g_D=0.6,window=10", "g_D=0.6,window=20"]
    assert plan.seeds == [5, 6, 7] and len(plan.runs) == 12
    spec = plan.runs[4]
    assert spec.label == "g_D=0.5,window=20/seed6"
    same = build_config("paper-h1", overrides=["training.eta=[0.3,0.3]", "model.g_D=0.5",
                                               "phases.window=20"],
                        **{"model.mode": "rate", "training.epochs": 1,
                           "training.train_examples": 100, "training.test_examples": 50,
                           "training.seed": 6, "data.data_dir": str(tmp_path),
                           "output.out": str(tmp_path / spec.condition / "seed6"),
                           "training.engine": "reference"})
    assert spec.config == same
    single = plan_sweep("paper-h1", out=tmp_path / "x")
    assert [r.label for r in single.runs] == ["paper-h1/seed0"]


def test_plan_refuses_conflicts():
    with pytest.raises(SegdendError, match="conflicts with --grid"):
        plan_sweep("paper-h1", sets=["model.g_D=0.5"], grids=["model.g_D=0.5,0.6"])
    with pytest.raises(SegdendError, match="given twice"):
        plan_sweep("paper-h1", grids=["model.g_D=0.5", "model.g_D=0.6"])
    with pytest.raises(SegdendError, match="--seeds"):
        plan_sweep("paper-h1", seeds=0)
    with pytest.raises(SegdendError, match="training.seed cannot be set"):
        plan_sweep("paper-h1", sets=["training.seed=3"])
    with pytest.raises(SegdendError, match="condition eta=0.1: .*one rate per layer"):
        plan_sweep("paper-h1", grids=["training.eta=[0.1]"])


def test_experiments_are_expanded_when_the_registry_exists(monkeypatch, tmp_path):
    exp = types.SimpleNamespace(preset="paper-h1", conditions={
        "regular": [], "sparse x5": ["model.feedback_sparsity=0.8"],
        "sparse": {"model.feedback_sparsity": 0.8, "model.feedback_sparse_gain": 1.0}})

    def get_experiment(name):
        if name != "sparse_amp":
            raise SegdendError(f"unknown experiment {name!r}")
        return exp

    module = types.ModuleType("segdend.experiments")
    module.get_experiment = get_experiment
    module.list_experiments = lambda: {"sparse_amp": "..."}
    monkeypatch.setitem(sys.modules, "segdend.experiments", module)
    # `import segdend.experiments as x` reads the package attribute once the real one exists
    import segdend

    monkeypatch.setattr(segdend, "experiments", module, raising=False)
    target = resolve_target("sparse_amp")
    assert target.kind == "experiment" and target.preset == "paper-h1"
    plan = plan_sweep("sparse_amp", seeds=2, grids=["model.g_D=0.5,0.6"], out=tmp_path,
                      epochs=3)
    assert [c.name for c in plan.conditions][:3] == [
        "regular,g_D=0.5", "regular,g_D=0.6", "sparse_x5,g_D=0.5"]
    sparse = [r for r in plan.runs if r.condition == "sparse,g_D=0.6"][0].config
    assert sparse.model.feedback_sparsity == 0.8 and sparse.model.feedback_sparse_gain == 1.0
    assert sparse.model.g_D == 0.6 and sparse.training.epochs == 3
    with pytest.raises(SegdendError, match="experiments: sparse_amp"):
        resolve_target("nope")
    assert resolve_target("preset:paper-h2").preset == "paper-h2"


def test_experiment_runs_equal_the_registry_configs(tmp_path):
    experiments = pytest.importorskip("segdend.experiments")
    for name in ("depth", "receptive_fields"):
        try:
            exp = experiments.get_experiment(name)
        except SegdendError:
            pytest.skip(f"no experiment {name} in the registry")
        plan = plan_sweep(name, seeds=2, out=tmp_path / name, mode="rate", train_examples=100)
        assert [c.name for c in plan.conditions] == list(exp.conditions)
        for spec in plan.runs:
            same = exp.build_config(spec.condition, spec.seed, **{
                "training.epochs": exp.epochs, "model.mode": "rate",
                "training.train_examples": 100, "output.out": spec.run_dir})
            assert spec.config == same, spec.label


def test_unknown_names_without_experiments(monkeypatch):
    monkeypatch.setitem(sys.modules, "segdend.experiments", None)  # import fails
    with pytest.raises(SegdendError, match=r"unknown preset or experiment 'nope'; presets: "
                                           r"paper-h1, paper-h2, paper-shallow$"):
        resolve_target("nope")


# -- the command line ---------------------------------------------------------------------------


def _cli(args):
    from typer.testing import CliRunner

    import segdend.cli
    from segdend.cli.app import app

    segdend.cli._register()
    return CliRunner().invoke(app, args)


def test_cli_unknown_preset_exits_2_with_one_line():
    result = _cli(["sweep", "no-such-preset", "--seeds", "2"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown preset")
    assert "paper-h1" in lines[0]


def test_cli_bad_grid_exits_2():
    result = _cli(["sweep", "paper-h1", "--grid", "training.eta=[0.1,0.1"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --grid training.eta=[0.1,0.1: unclosed bracket in "
                                     "'[0.1,0.1'")


def test_cli_dry_run_lists_the_runs(tmp_path):
    result = _cli(["sweep", "paper-h1", "--seeds", "2", "--grid",
                   "training.eta=[0.1,0.1],[0.2,0.2]", "--mode", "rate", "--epochs", "1",
                   "--out", str(tmp_path / "s"), "--dry-run"])
    assert result.exit_code == 0, result.output
    for label in ("eta=0.1_0.1/seed0", "eta=0.1_0.1/seed1", "eta=0.2_0.2/seed1"):
        assert f"{label}: new" in result.stdout
    assert not (tmp_path / "s").exists()
