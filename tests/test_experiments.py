"""The paper's experiments: declarations, the reproduce runner, and every experiment end to end
in a shortened form on real MNIST (rate mode where the experiment's point survives it, tiny
spiking runs where it does not)."""

import csv
import json

import numpy as np
import pytest
from _helpers import tiny_dataset
from typer.testing import CliRunner

import segdend.cli.experiments_cmd  # noqa: F401  (registers the commands)
import segdend.cli.train_cmd  # noqa: F401
from segdend.cli.app import app
from segdend.errors import SegdendError
from segdend.experiments import get_experiment, list_experiments, reproduce
from segdend.experiments.runner import engine_records, plan_runs, shortened_note

PAPER_IDS = ["depth", "tsne", "plateau_times", "loss_corr", "jacobian", "bp_angle",
             "receptive_fields", "sparse", "sparse_amp", "symmetric", "segregation", "traces"]

RATE = ["--mode", "rate", "--train-examples", "300", "--test-examples", "100"]
SPIKING = ["--mode", "spiking", "--train-examples", "50", "--test-examples", "20",
           "--set", "phases.test_length=60", "--set", "phases.test_window=40"]
# Spiking where rate mode loses the experiment's point (plateau timing, spiking vs rate
# feedback, apical coupling g_A > 0, the traces' run), rate mode (fast) everywhere else.
SETTINGS = {"depth": RATE, "tsne": RATE, "plateau_times": SPIKING, "loss_corr": RATE,
            "jacobian": RATE, "bp_angle": SPIKING, "receptive_fields": RATE, "sparse": RATE,
            "sparse_amp": RATE, "symmetric": RATE, "segregation": SPIKING, "traces": SPIKING,
            "baselines": RATE, "burst": RATE}

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


# -- declarations --------------------------------------------------------------------------------


def test_every_experiment_of_the_paper_is_declared():
    exps = list_experiments()
    assert list(exps)[:12] == PAPER_IDS
    assert set(exps) == set(PAPER_IDS) | {"baselines", "burst"}
    assert set(SETTINGS) == set(exps)
    with pytest.raises(SegdendError, match="unknown experiment 'nope'.*depth"):
        get_experiment("nope")



def test_every_declared_experiment_is_listed_once():
    import segdend.experiments.registry as registry
    from segdend.experiments import Experiment, learning, performance, representation, traces

    declared = {id(v) for m in (learning, performance, representation, traces)
                for v in vars(m).values() if isinstance(v, Experiment)}
    assert declared == {id(e) for e in registry.EXPERIMENTS}
    assert len(registry.EXPERIMENTS) == len(list_experiments())

def test_depth_is_declared_as_in_the_paper():
    exp = get_experiment("depth")
    assert list(exp.conditions) == ["shallow", "h1", "h2"]
    assert exp.epochs == 60
    assert exp.published == {"shallow": 8.3, "h1": 4.1, "h2": 3.2}
    layers = [exp.build_config(c).model.layers for c in exp.conditions]
    assert layers == [(10,), (500, 10), (500, 100, 10)]


@pytest.mark.parametrize("exp_id", sorted(SETTINGS))
def test_every_condition_builds_a_valid_config(exp_id):
    exp = get_experiment(exp_id)
    assert set(exp.published) == set(exp.conditions)
    modes = ["spiking"] if exp.rate_mode_invalid else ["spiking", "rate"]
    for cond in exp.conditions:
        for mode in modes:
            cfg = exp.build_config(cond, 0, **{"model.mode": mode})
            assert cfg.training.seed == exp.seed_for(cond, 0)
            assert set(exp.record) <= set(cfg.output.record)


def test_condition_options_reach_the_config():
    def cfg(exp_id, cond):
        return get_experiment(exp_id).build_config(cond)

    assert cfg("sparse", "sparse").model.feedback_sparsity == 0.8
    assert cfg("sparse", "sparse").model.feedback_sparse_gain is None  # x5 by default
    assert cfg("sparse_amp", "sparse_x1").model.feedback_sparse_gain == 1.0
    assert cfg("symmetric", "noisy_symmetric").model.feedback == "noisy_symmetric"
    assert cfg("segregation", "gA_0.6").model.g_A == 0.6
    assert cfg("segregation", "gA_0.6").model.layers == (500, 100, 10)
    assert cfg("plateau_times", "random").model.plateau_times == "random"
    assert cfg("bp_angle", "rate_feedback").model.feedback_signal == "rates"
    assert cfg("bp_angle", "rate_feedback").output.record == ("bp_angle",)
    assert cfg("receptive_fields", "backprop").training.learning_rule == "backprop"
    assert cfg("receptive_fields", "backprop").training.seed == 1000  # independent init
    assert cfg("baselines", "feedback_alignment").training.learning_rule == "feedback_alignment"
    assert cfg("jacobian", "h1").output.record == ("ubar_f",)


def test_command_line_options_win_over_experiment_defaults():
    exp = get_experiment("traces")
    assert exp.build_config("h1").training.test_examples == 1000
    assert exp.build_config("h1", **{"training.test_examples": 50}).training.test_examples == 50


def test_shortened_runs_are_labelled():
    exp = get_experiment("depth")
    short = exp.build_config("h1", **{"training.epochs": 1})
    assert shortened_note(exp, short, 60000, 10000) == "shortened: 1 of 60 epochs"
    full = exp.build_config("h1")
    assert shortened_note(exp, full, 60000, 10000) == ""
    note = shortened_note(exp, exp.build_config("h1", **{"model.mode": "rate"}), 300, 100)
    assert note == ("shortened: 300 of 60000 training examples, tested on 100 of 10000 test "
                    "images; rate mode (the paper: spiking)")


def test_plan_refuses_impossible_requests(tmp_path):
    with pytest.raises(SegdendError, match="cannot run in rate mode"):
        plan_runs(get_experiment("segregation"), tmp_path, mode="rate")
    with pytest.raises(SegdendError, match="--seeds"):
        plan_runs(get_experiment("depth"), tmp_path, seeds=0)
    runs = plan_runs(get_experiment("receptive_fields"), tmp_path, seeds=2)
    assert [r.run_dir.relative_to(tmp_path).as_posix() for r in runs] == [
        "runs/local/seed0", "runs/local/seed1", "runs/backprop/seed1000",
        "runs/backprop/seed1001"]


def test_recordings_fall_back_to_an_engine_that_makes_them(tmp_path):
    exp = get_experiment("jacobian")
    ref = exp.build_config("h1", **{"training.engine": "reference"})
    assert {"ubar_f"} <= engine_records(ref)
    (run,) = plan_runs(exp, tmp_path, mode="rate")
    assert "ubar_f" in engine_records(run.config)
    auto = exp.build_config("h1", **{"model.mode": "rate"})
    if "ubar_f" not in engine_records(auto):
        assert run.config.training.engine == "reference" and "reference" in run.note
        with pytest.raises(SegdendError, match="does not record ubar_f"):
            plan_runs(exp, tmp_path, mode="rate",
                      engine=auto.training.engine if auto.training.engine != "auto"
                      else _auto_engine(auto))


def _auto_engine(cfg):
    from segdend.engines.registry import resolve_engine_name

    return resolve_engine_name(cfg)


# -- the runner on synthetic data ------------------------------------------------------------------

TINY = ["model.n_inputs=16"]


def test_reproduce_resumes_unfinished_runs_and_skips_finished_ones(tmp_path):
    from segdend.train import run_config

    exp, data, out = get_experiment("sparse"), tiny_dataset(60, 12), tmp_path / "sparse"
    kwargs = {"out": out, "epochs": 2, "mode": "rate", "overrides": TINY, "data": data}
    first = plan_runs(exp, out, epochs=2, mode="rate", overrides=TINY)[0]
    run_config(first.config, data=data, stop_after=70)  # interrupted in epoch 2
    lines = []
    res = reproduce(exp, log=lines.append, **kwargs)
    assert any("resuming (stopped, 1 epochs done)" in line for line in lines)
    assert res.figures[0].is_file() and res.figures[1].is_file()
    for cond in exp.conditions:
        rows = list(csv.DictReader(open(out / "runs" / cond / "seed0" / "metrics.csv")))
        assert [r["epoch"] for r in rows] == ["1", "2"]
    lines.clear()
    reproduce(exp, log=lines.append, **kwargs)
    assert sum("skipped: already finished" in line for line in lines) == 2
    with pytest.raises(SegdendError, match="different config"):
        reproduce(exp, **{**kwargs, "overrides": [*TINY, "training.eta=[0.1, 0.1]"]})
    summary = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["condition"] for r in summary] == ["regular", "sparse"]
    assert summary[0]["published"] == "4.1" and summary[0]["epochs"] == "2"
    manifest = json.loads((out / "experiment.json").read_text())
    assert manifest["status"] == "done" and manifest["paper_epochs"] == 60
    assert manifest["note"].startswith("shortened: 2 of 60 epochs")


def test_jacobian_from_records_and_nearest_checkpoints(tmp_path):
    """Without snapshots, J comes from the recorded ubar_f and the epoch checkpoints."""
    from segdend.experiments.learning import jacobian_curve
    from segdend.experiments.runs import remember_dataset
    from segdend.train import run_config

    exp = get_experiment("jacobian")
    cfg = exp.build_config("h1", overrides=[*TINY, f'output.out="{tmp_path / "run"}"'],
                           **{"model.mode": "rate", "training.engine": "reference",
                              "training.epochs": 2})
    data = tiny_dataset(300, 10)
    remember_dataset(cfg, data)
    run_config(cfg, data=data)
    curve = jacobian_curve(tmp_path / "run")
    assert "approximation" in curve["source"]
    assert curve["examples"] == [100, 200, 300, 400, 500, 600]
    assert np.all(np.isfinite(curve["eigenvalue"]))


# -- every experiment end to end on real MNIST -----------------------------------------------------


@pytest.fixture(scope="module")
def reproduced(mnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    done = {}
    for exp_id, settings in SETTINGS.items():
        result = cli("reproduce", exp_id, "--epochs", 1, "--seeds", 1, "--data-dir", mnist_dir,
                     "--out", root / exp_id, *settings)
        done[exp_id] = (result, root / exp_id)
    return done


@pytest.mark.parametrize("exp_id", sorted(SETTINGS))
def test_experiment_runs_end_to_end_and_draws_its_figure(reproduced, exp_id):
    result, out = reproduced[exp_id]
    assert result.exit_code == 0, result.output
    assert (out / f"{exp_id}.png").stat().st_size > 10_000
    assert (out / f"{exp_id}.pdf").is_file()
    results = json.loads((out / "results.json").read_text())
    exp = get_experiment(exp_id)
    assert list(results["conditions"]) == list(exp.conditions)
    if exp.paper_train_examples:  # the traces' illustration has no paper data size
        assert results["meta"]["note"].startswith("shortened: ")
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["condition"] for r in rows] == list(exp.conditions)
    for r in rows:
        assert r["seeds"] == "1" and r["epochs"] == "1"
        assert 0 <= float(r["test_error_mean"]) <= 100
        published = exp.published[r["condition"]]
        assert r["published"] == ("" if published is None else str(published))


def test_experiment_specific_results(reproduced):
    def res(exp_id):
        return json.loads((reproduced[exp_id][1] / "results.json").read_text())

    angle = res("bp_angle")["conditions"]
    assert all(0 <= v <= 180 for c in angle.values() for v in c["value"])
    jac = res("jacobian")["jacobian"]["curves"][0]
    assert jac["examples"] == [100, 200, 300] and "snapshots" in jac["source"]
    assert all(v >= 0 for v in jac["eigenvalue"])
    rf = res("receptive_fields")["receptive_fields"]
    assert -1 <= rf["mean_max_r"][0] <= 1 and len(rf["shown"]["max_r"]) == 500
    tsne = res("tsne")["tsne"]
    assert [p["layer"].split(" (")[0] for p in tsne["panels"]] == ["input", "hidden 1",
                                                                 "hidden 2"]
    assert len(tsne["labels"]) == 100 and len(tsne["panels"][0]["x"]) == 100
    # one silhouette per layer and seed; the panels are the first seed's
    assert {k: len(v) for k, v in tsne["silhouette_by_seed"].items()} == {
        p["layer"]: len(tsne["seeds"]) for p in tsne["panels"]}
    assert [v[0] for v in tsne["silhouette_by_seed"].values()] == [
        p["silhouette"] for p in tsne["panels"]]
    loss = res("loss_corr")["loss_corr"]
    assert loss["epoch"] == 1 and len(loss["curves"][0]["r"][0]) == 10
    traces = res("traces")["traces"]
    assert len(traces["hidden"]) == 3 and len(traces["hidden"][0]["soma"]) == 2 * 70
    assert traces["raster_hidden"]["t"], "the raster shows spikes"
    cfg = json.loads((reproduced["segregation"][1] / "runs" / "gA_0.6" / "seed0"
                      / "config.json").read_text())
    assert cfg["model"]["g_A"] == 0.6 and cfg["model"]["mode"] == "spiking"


def test_rerunning_an_experiment_skips_finished_runs(reproduced, mnist_dir):
    result, out = reproduced["sparse"]
    again = cli("reproduce", "sparse", "--epochs", 1, "--data-dir", mnist_dir, "--out", out,
                *RATE)
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped: already finished") == 2


def test_plot_draws_a_runs_learning_curves_and_recordings(reproduced, tmp_path):
    run_dir = reproduced["bp_angle"][1] / "runs" / "spiking_feedback" / "seed0"
    result = cli("plot", run_dir, "--out", tmp_path / "p", "--tensorboard")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "learning_curves.png").is_file()
    assert (tmp_path / "p" / "recordings.png").is_file()
    assert "tensorboard" in result.output.lower()
    jac_run = reproduced["jacobian"][1] / "runs" / "h1" / "seed0"
    result = cli("plot", jac_run)
    assert result.exit_code == 0, result.output
    assert (jac_run / "plots" / "recordings.pdf").is_file()


def test_plot_of_an_experiment_directory_redraws_its_figure(reproduced):
    out = reproduced["depth"][1]
    (out / "depth.png").unlink()
    result = cli("plot", out)
    assert result.exit_code == 0, result.output
    assert (out / "depth.png").is_file()


def test_cli_lists_experiments_and_refuses_unknown_ones():
    result = cli("experiments")
    assert result.exit_code == 0 and "receptive_fields" in result.output
    result = cli("reproduce", "nope")
    assert result.exit_code == 2 and "unknown experiment" in result.output
    result = cli("reproduce", "depth", "--mode", "fast")
    assert result.exit_code == 2 and "--mode" in result.output


def test_a_diverged_run_is_reported_and_left_out(tmp_path):
    exp = get_experiment("bp_angle")
    lines = []
    res = reproduce(exp, out=tmp_path / "bp", epochs=1, mode="rate", data=tiny_dataset(40, 10),
                    overrides=[*TINY, "training.eta=[1e12, 1e12]"], log=lines.append)
    assert any("diverged" in line for line in lines)
    for cond in exp.conditions:
        assert res.results["conditions"][cond]["status"] == ["diverged"]
        assert res.results["conditions"][cond]["test_error"] == [None]
    assert len(res.results["problems"]) == 2
    assert res.figures[0].is_file()
    rows = list(csv.DictReader(open(tmp_path / "bp" / "summary.csv")))
    assert [r["status"] for r in rows] == ["diverged", "diverged"]
    assert rows[0]["test_error_mean"] == ""
    again = []
    reproduce(exp, out=tmp_path / "bp", epochs=1, mode="rate", data=tiny_dataset(40, 10),
              overrides=[*TINY, "training.eta=[1e12, 1e12]"], log=again.append)
    assert sum("diverged earlier" in line for line in again) == 2


def test_saved_repeated_tests_stand_for_a_runs_final_error(reproduced, mnist_dir, tmp_path):
    """`segdend evaluate --save` keeps repeated tests of the final weights; the summary then
    reports their mean, their spread and their number, but only for an evaluation of the
    final epoch that covers the run's own test images."""
    import shutil

    from segdend.runfiles import run_outcome

    out = tmp_path / "bp_angle"
    shutil.copytree(reproduced["bp_angle"][1], out)
    run = out / "runs" / "spiking_feedback" / "seed0"
    before = run_outcome(run)
    assert before["test_repeats"] == 1
    subset = cli("evaluate", run, "--repeats", 4, "--test-examples", 10, "--data-dir",
                 mnist_dir, "--save", "--json")
    assert subset.exit_code == 0, subset.output
    assert run_outcome(run)["test_error"] == before["test_error"], "10 of 20 images: unused"
    full = cli("evaluate", run, "--repeats", 3, "--test-examples", 20, "--data-dir",
               mnist_dir, "--save", "--json")
    assert full.exit_code == 0, full.output
    res = json.loads(full.output)
    assert len(list((run / "evaluations").glob("epoch_001_*.json"))) == 2
    after = run_outcome(run)
    assert after["test_repeats"] == 3
    assert after["test_error"] == pytest.approx(res["test_error_mean"])
    assert after["test_error_repeat_sd"] == pytest.approx(np.std(res["test_errors"], ddof=1))
    again = cli("reproduce", "bp_angle", "--epochs", 1, "--data-dir", mnist_dir, "--out", out,
                *SETTINGS["bp_angle"])
    assert again.exit_code == 0, again.output
    rows = {r["condition"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["spiking_feedback"]["test_repeats"] == "3"
    assert float(rows["spiking_feedback"]["test_error_mean"]) == pytest.approx(
        res["test_error_mean"], abs=1e-6)
    assert rows["rate_feedback"]["test_repeats"] == "1"


def test_weights_of_a_trained_run_that_are_not_there_are_not_replaced_by_initial_ones(
        reproduced, tmp_path):
    """A run restored from results/ has its metrics but no checkpoints: analysing its initial
    weights as if they were the trained ones would be silently wrong."""
    import shutil

    from segdend.network import initialise
    from segdend.runfiles import config_of, final_params

    src = next((reproduced["receptive_fields"][1] / "runs" / "local").iterdir())
    run = tmp_path / "restored"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = config_of(src)
    initial = initialise(cfg.model, cfg.training.seed).W[0]
    assert not np.array_equal(final_params(src).W[0], initial)  # the trained weights
    with pytest.raises(SegdendError, match="trained 1 epochs but its weights"):
        final_params(run)


def test_baselines_share_the_backprop_networks_of_receptive_fields():
    rf, base = get_experiment("receptive_fields"), get_experiment("baselines")
    for k in range(3):
        assert rf.seed_for("backprop", k) == base.seed_for("backprop", k) != k
        a, b = rf.build_config("backprop", k), base.build_config("backprop", k)
        assert a.model == b.model and a.training == b.training
