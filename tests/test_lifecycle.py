"""One run lifecycle (issue 12): `segdend train` (Python API and CLI), `segdend reproduce` and
`segdend sweep` decide what to do with a run directory by the same rules
(:func:`segdend.lifecycle.run_state`). Every scenario below is set up once, copied to where each
entry point expects its run, and run through all of them; they must agree with one table."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
from _helpers import tiny_dataset
from typer.testing import CliRunner

from segdend import train as train_mod
from segdend.checkpoint import atomic_write_text, config_fingerprint
from segdend.cli import _register
from segdend.cli.app import app
from segdend.config import apply_overrides, config_from_dict
from segdend.errors import SegdendError
from segdend.experiments.registry import get_experiment
from segdend.experiments.runner import plan_runs, reproduce
from segdend.lifecycle import Outcome, run_state
from segdend.presets import build_config
from segdend.rundir import write_run_info
from segdend.train import run_config

SETS = ["model.n_inputs=16", "model.layers=[8, 3]", "phases.min_length=25", "phases.window=10",
        "phases.test_length=50", "phases.test_window=20", "training.checkpoint_every=7"]
SHORTCUTS = {"model.mode": "rate", "training.epochs": 2, "training.engine": "reference"}
N_TRAIN, N_TEST, STOP = 40, 10, 53  # STOP: in epoch 2, after a checkpoint
EXP = dataclasses.replace(get_experiment("sparse"), id="lifecycle", conditions={"regular": []},
                          published={"regular": 4.1})
N, REP, RES, X, F, D, E = (Outcome.NEW, Outcome.REPLACE, Outcome.RESUME, Outcome.REFUSED,
                           Outcome.FINISHED, Outcome.DIVERGED, Outcome.EXTEND)

# scenario: (continue = reproduce and sweep, start = train, resume = train --resume)
TABLE = {
    "fresh":                (N, N, X),
    "empty":                (N, N, X),
    "start_debris":         (REP, REP, X),
    "killed_at_start":      (REP, REP, RES),
    "foreign":              (X, X, X),
    "never_trained":        (REP, REP, RES),
    "other_never_trained":  (REP, REP, X),
    "unfinished":           (RES, X, RES),
    "failed":               (RES, X, RES),
    "finished":             (F, X, F),
    "finished_shorter":     (E, X, E),
    "finished_longer":      (X, X, X),
    "finished_retested":    (X, X, F),
    "other_config":         (X, X, X),
    "diverged":             (D, X, X),
}
SCENARIOS = list(TABLE)
ACTION = {N: "start", REP: "start", RES: "resume", E: "resume", F: "skip", D: "skip",
          X: "refuse"}


def config_for(run_dir: Path, *sets: str, **shortcuts):
    """The run's config as `segdend reproduce lifecycle --mode rate --epochs 2` plans it."""
    return EXP.build_config("regular", 0, overrides=[*SETS, *sets],
                            **{**SHORTCUTS, **shortcuts, "output.out": str(run_dir)})


def data():
    return tiny_dataset(N_TRAIN, N_TEST)


def setup_scenario(name: str, d: Path) -> None:
    cfg = config_for(d)
    other = config_for(d, "training.eta=[0.1, 0.1]")
    if name == "fresh":
        return
    d.mkdir(parents=True)
    if name == "empty":
        pass
    elif name == "start_debris":
        (d / ".run.json.k2j4.part").write_text("{")
    elif name == "killed_at_start":
        atomic_write_text(d / "config.json", cfg.to_json() + "\n")
    elif name == "foreign":
        (d / "notes.txt").write_text("keep me")
    elif name == "never_trained":
        write_run_info(d, cfg, "reference", "running")  # killed before its first checkpoint
    elif name == "other_never_trained":
        write_run_info(d, other, "reference", "failed", {"error": "no MNIST"})
    elif name in ("unfinished", "failed", "diverged"):
        run_config(cfg, data=data(), stop_after=STOP)
        if name != "unfinished":  # as the trainer marks them (a real divergence: other eta)
            write_run_info(d, cfg, "reference", name, {"error": "disk full"})
    elif name == "finished":
        run_config(cfg, data=data())
    elif name == "finished_shorter":
        run_config(config_for(d, **{"training.epochs": 1}), data=data())
    elif name == "finished_longer":
        run_config(config_for(d, **{"training.epochs": 3}), data=data())
    elif name == "finished_retested":
        run_config(config_for(d, **{"training.test_examples": 5}), data=data())
    elif name == "other_config":
        run_config(other, data=data(), stop_after=STOP)
    else:
        raise AssertionError(name)


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle")
    for name in [*SCENARIOS, "reference"]:
        if name == "reference":
            run_config(config_for(root / name), data=data())
        else:
            setup_scenario(name, root / name)
    return root


def place(templates: Path, name: str, run_dir: Path) -> Path:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    if (templates / name).exists():
        shutil.copytree(templates / name, run_dir)
    return run_dir


def snapshot(d: Path) -> dict[str, bytes]:
    if not d.exists():
        return {}
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def metrics(d: Path) -> list[dict[str, str]]:
    rows = csv.DictReader(open(d / "metrics.csv"))
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def status(d: Path) -> str:
    return json.loads((d / "run.json").read_text())["status"]


def oracle(d: Path, intent: str, cfg=None, **kw):
    return run_state(d, cfg or config_for(d), intent=intent, **kw)


def check_trained(d: Path, templates: Path) -> None:
    """Trained to the end, bit for bit as one uninterrupted run."""
    assert status(d) == "finished"
    assert metrics(d) == metrics(templates / "reference")


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    import segdend.sweep.worker

    monkeypatch.setattr(segdend.sweep.worker, "limit_threads", lambda n: None)


# -- the table ---------------------------------------------------------------------------------


def test_the_entry_points_build_the_same_config(tmp_path):
    d = tmp_path / "r"
    planned = plan_runs(EXP, tmp_path, epochs=2, mode="rate", engine="reference",
                        overrides=SETS)[0].config
    cli = build_config("paper-h1", overrides=SETS, **{**SHORTCUTS, "training.seed": 0,
                                                       "output.out": str(d)})
    assert config_fingerprint(planned.to_json()) == config_fingerprint(cli.to_json())
    assert config_fingerprint(config_for(d).to_json()) == config_fingerprint(cli.to_json())


@pytest.mark.parametrize("name", SCENARIOS)
def test_run_state_follows_the_table(templates, tmp_path, name):
    d = place(templates, name, tmp_path / "run")
    before = snapshot(d)
    got = tuple(oracle(d, intent).outcome for intent in ("continue", "start", "resume"))
    assert got == TABLE[name]
    over = oracle(d, "start", overwrite=True).outcome
    assert over == {"fresh": N, "empty": N, "foreign": X}.get(name, REP)
    for intent in ("continue", "start", "resume"):
        state = oracle(d, intent)
        if state.outcome is X:  # one line that says how to fix it
            assert "\n" not in state.reason and re.search(
                r"--out|--overwrite|--resume|--epochs|segdend evaluate", state.reason), state
            with pytest.raises(SegdendError, match=re.escape(state.reason)):
                state.check()
    assert snapshot(d) == before, "deciding changes nothing"


# -- train: the Python API and the CLI ------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("intent", ["start", "resume"])
def test_train_api_follows_the_table(templates, tmp_path, name, intent):
    d = place(templates, name, tmp_path / "run")
    state, before = oracle(d, intent), snapshot(d)
    assert state.outcome is TABLE[name][1 if intent == "start" else 2]
    if state.outcome is X:
        with pytest.raises(SegdendError, match=re.escape(state.reason)):
            run_config(config_for(d), data=data(), resume=intent == "resume")
        assert snapshot(d) == before
        return
    run_config(config_for(d), data=data(), resume=intent == "resume")
    if name == "finished_retested":  # resumed as it stands: nothing left to train
        assert snapshot(d)["metrics.csv"] == before["metrics.csv"]
        return
    check_trained(d, templates)
    if state.outcome is REP:
        assert not list(d.glob(".*.part")) and "resumed" not in (d / "log.txt").read_text()


@pytest.fixture(scope="module")
def cli():
    _register()
    return CliRunner()


def cli_error(result) -> str:
    """The one `error:` line of a refused command (exit code 2, no traceback)."""
    text = result.output
    assert result.exit_code == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in text, text
    return errors[0][len("error: "):]


@pytest.mark.parametrize("name", SCENARIOS)
def test_train_cli_follows_the_table(templates, tmp_path, cli, monkeypatch, name):
    monkeypatch.setattr(train_mod, "load_dataset", lambda config, log=None: data())
    start = ["train", "--preset", "paper-h1", "--mode", "rate", "--epochs", "2", "--engine",
             "reference", "--seed", "0", "--no-progress", *[a for s in SETS for a in ("--set", s)]]
    d = place(templates, name, tmp_path / "run")
    state, before = oracle(d, "start"), snapshot(d)
    result = cli.invoke(app, [*start, "--out", str(d)])
    if state.outcome is X:
        assert cli_error(result) == state.reason
        assert snapshot(d) == before
    else:
        assert result.exit_code == 0, result.output
        check_trained(d, templates)
    # --resume continues with the run's own config.json (and the --epochs given)
    d = place(templates, name, tmp_path / "again")
    cfg = config_for(d)
    if (d / "config.json").is_file():
        saved = json.loads((d / "config.json").read_text())
        cfg = config_from_dict(apply_overrides(saved, ["training.epochs=2"]))
    state, before = oracle(d, "resume", cfg), snapshot(d)
    result = cli.invoke(app, ["train", "--resume", str(d), "--epochs", "2", "--no-progress"])
    if state.outcome is X:
        assert cli_error(result) == state.reason
        assert snapshot(d) == before
    else:
        assert result.exit_code == 0, result.output
        assert status(d) == "finished"
        if name not in ("other_config", "other_never_trained", "finished_retested"):
            check_trained(d, templates)


# -- reproduce and sweep ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_reproduce_follows_the_table(templates, tmp_path, name):
    out = tmp_path / "rep"
    d = place(templates, name, out / "runs" / "regular" / "seed0")
    state, before = oracle(d, "continue", asker="the reproduction"), snapshot(d)
    assert state.outcome is TABLE[name][0]
    lines: list[str] = []
    kwargs = {"out": out, "epochs": 2, "mode": "rate", "engine": "reference", "overrides": SETS,
              "data": data(), "log": lines.append}
    if state.outcome is X:
        with pytest.raises(SegdendError, match=re.escape(state.reason)):
            reproduce(EXP, **kwargs)
        assert snapshot(d) == before and not (out / "experiment.json").exists()
        return
    res = reproduce(EXP, **kwargs)
    said = "\n".join(lines)
    expect = {F: "skipped: already finished", D: "skipped: the run diverged earlier",
              RES: "resuming (", E: "extending from 1 to 2 epochs", REP: "replacing"}
    for outcome, phrase in expect.items():
        assert (phrase in said) == (outcome is state.outcome), (phrase, said)
    if state.outcome is D:
        assert status(d) == "diverged" and snapshot(d) == before
        assert res.results["conditions"]["regular"]["status"] == ["diverged"]
    else:
        check_trained(d, templates)
        assert res.summary.is_file()


@pytest.mark.parametrize("name", SCENARIOS)
def test_sweep_follows_the_table(templates, tmp_path, name):
    import segdend.sweep as sweep

    d = place(templates, name, tmp_path / "sweep" / "eta" / "seed0")
    cfg = config_for(d)
    state, before = oracle(d, "continue", asker="the sweep"), snapshot(d)
    assert state.outcome is TABLE[name][0]
    factory = lambda config: data()  # noqa: E731
    if state.outcome is X:
        with pytest.raises(SegdendError, match=re.escape(state.reason)):
            sweep.run_state(cfg)
        with pytest.raises(SegdendError, match=re.escape(state.reason)):
            sweep.execute_run(cfg.to_json(), factory)
        assert snapshot(d) == before
        return
    why = "" if state.outcome is F else state.reason  # the sweep says nothing of a finished run
    assert sweep.run_state(cfg) == (sweep.SWEEP_STATES[state.outcome], why)
    record = sweep.execute_run(cfg.to_json(), factory)
    assert record["action"] == {"start": "started", "resume": "resumed",
                                "skip": "skipped"}[ACTION[state.outcome]]
    if state.outcome is D:
        assert record["status"] == "diverged" and snapshot(d) == before
    else:
        assert record["status"] == "finished"
        check_trained(d, templates)


# -- agreement --------------------------------------------------------------------------------


def test_reproduce_and_sweep_act_alike_and_train_resume_agrees():
    """What each entry point does with each scenario, side by side (from the table above,
    which every test here checks each of them against): reproduce and sweep take the same
    action everywhere; `train --resume` takes it wherever they train or skip a finished run;
    plain `train` never reuses a run that trained."""
    for name, (cont, start, resume) in TABLE.items():
        if ACTION[cont] in ("resume", "skip") and cont is not D:
            assert ACTION[resume] == ACTION[cont], name
        if cont is D:
            assert resume is X, name  # resuming a diverged run would diverge again
        assert ACTION[start] in ("start", "refuse"), name
        if ACTION[start] == "start":
            assert ACTION[cont] == "start", name
