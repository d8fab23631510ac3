"""Every engine's declared contract (``engines.registry.ENGINES``) against what it does.

An engine declares, as data, the recordings it makes, the modes it runs and whether it trains
populations; choosing an engine and asking what it records read that table without building
or importing an engine. Here a short real training run of every engine, in both modes, must
return exactly the declared recordings when asked for them, and leave out a recording it
does not declare (the planner then refuses the engine for an experiment that needs it).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest
from _helpers import tiny_config
from variants import N_IN, make_batch

from segdend.config import RECORD_NAMES, TrainingConfig
from segdend.engines import registry
from segdend.engines.registry import ENGINES, engine_info, get_engine, unsupported_reason
from segdend.errors import SegdendError
from segdend.experiments.registry import list_experiments
from segdend.experiments.runner import engine_records, plan_runs
from segdend.network import initialise

MODES = ("spiking", "rate")
N = 3


def make_config(name: str, mode: str = "spiking", layers=(7, 5, 3)):
    return tiny_config(layers, n_inputs=N_IN, model={"mode": mode},
                       training={"engine": name, "device": "cpu"})


def train_asking(name: str, mode: str, record: tuple[str, ...]):
    config = make_config(name, mode)
    engine = get_engine(config)
    assert engine.name == name
    params = initialise(config.model, config.training.seed)
    return engine.train(params, engine.new_state(), make_batch(config, N), record)


def test_the_table_declares_every_engine_the_config_accepts():
    accepted = set(typing.get_args(TrainingConfig.model_fields["engine"].annotation)) - {"auto"}
    assert set(ENGINES) == accepted
    for name, info in ENGINES.items():
        assert info.name == name
        assert set(info.records) <= set(RECORD_NAMES), name
        assert len(set(info.records)) == len(info.records), name
        assert info.modes and set(info.modes) <= set(MODES), name
        assert engine_info(name) is info
    # every name output.record accepts is recorded by some engine
    assert set().union(*(info.records for info in ENGINES.values())) == set(RECORD_NAMES)
    with pytest.raises(SegdendError, match="unknown engine 'nope'"):
        engine_info("nope")
    assert "unknown engine 'nope'" in unsupported_reason(make_config("reference"), "nope")


@pytest.mark.parametrize("name", list(ENGINES))
def test_populations_are_declared_by_the_engines_that_train_them(name):
    info = ENGINES[name]
    module = sys.modules[info.load().__module__]
    has_population = any(k.endswith("Population") for k in vars(module))
    assert info.populations == has_population


CASES = [(name, mode, record) for name, info in ENGINES.items() for mode in info.modes
         for record in info.records]


@pytest.mark.parametrize(("name", "mode", "record"), CASES)
def test_a_declared_recording_is_returned_when_asked(name, mode, record):
    result = train_asking(name, mode, (record,))
    assert set(result.records) == {record}
    assert result.records[record].shape[0] == N


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(ENGINES))
def test_asking_for_every_name_returns_exactly_the_declared_ones(name, mode):
    if mode not in ENGINES[name].modes:
        pytest.skip(f"{name} does not run {mode} mode")
    result = train_asking(name, mode, RECORD_NAMES)
    assert set(result.records) == set(ENGINES[name].records)
    assert train_asking(name, mode, ()).records == {}


UNDECLARED = [(name, record) for name, info in ENGINES.items()
              for record in RECORD_NAMES if record not in info.records]


@pytest.mark.parametrize(("name", "record"), UNDECLARED)
def test_an_undeclared_recording_is_left_out_and_the_planner_refuses(name, record, tmp_path):
    mode = ENGINES[name].modes[0]
    assert record not in train_asking(name, mode, (record,)).records
    config = make_config(name, mode)
    assert record not in engine_records(config)
    needing = [exp for exp in list_experiments().values() if record in exp.record]
    assert needing, f"no experiment records {record}"
    with pytest.raises(SegdendError, match=f"engine {name} does not record {record}"):
        plan_runs(needing[0], tmp_path, engine=name)


@pytest.mark.parametrize("name", list(ENGINES))
def test_engine_records_is_the_declaration(name):
    config = make_config(name)
    assert engine_records(config) == set(ENGINES[name].records)
    # a config asking for a recording its engine does not make is refused before training
    # (it would otherwise train and silently lack it); auto picks an engine that makes it
    asked = config.model_copy(update={"output": config.output.model_copy(
        update={"record": RECORD_NAMES})})
    if set(RECORD_NAMES) <= set(ENGINES[name].records):
        assert engine_records(asked) == set(ENGINES[name].records)
    else:
        with pytest.raises(SegdendError, match=f"engine {name} does not record .*"
                                               "use training.engine=reference or numba"):
            get_engine(asked)
    auto = asked.model_copy(update={"training": asked.training.model_copy(
        update={"engine": "auto"})})
    assert set(RECORD_NAMES) <= engine_records(auto)


def test_a_mode_an_engine_does_not_declare_is_unsupported(monkeypatch):
    spiking_only = dataclasses.replace(ENGINES["numba"], modes=("spiking",))
    monkeypatch.setitem(registry.ENGINES, "numba", spiking_only)
    assert unsupported_reason(make_config("numba", "spiking"), "numba") is None
    assert "model.mode spiking only" in unsupported_reason(make_config("numba", "rate"), "numba")
    with pytest.raises(SegdendError, match="training.engine=numba cannot run"):
        registry.resolve_engine_name(make_config("numba", "rate"))
    auto = tiny_config((7, 5, 3), n_inputs=N_IN, model={"mode": "rate"},
                       training={"device": "cpu"})
    assert registry.resolve_engine_name(auto) != "numba"


def test_choosing_an_engine_and_its_recordings_import_no_engine():
    code = (
        "import sys\n"
        "from segdend.config import config_from_dict\n"
        "from segdend.engines.registry import ENGINES, resolve_engine_name, unsupported_reason\n"
        "from segdend.experiments.runner import engine_records\n"
        "for name in ENGINES:\n"
        "    cfg = config_from_dict({'model': {'n_inputs': 4, 'layers': [3, 2]},\n"
        "                            'training': {'eta': [0.1, 0.1], 'engine': name,\n"
        "                                         'device': 'cpu'}})\n"
        "    assert resolve_engine_name(cfg) == name\n"
        "    assert all(unsupported_reason(cfg, n) is None for n in ENGINES)\n"
        "    assert engine_records(cfg) == set(ENGINES[name].records)\n"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('torch', 'numba')\n"
        "               or m.startswith('segdend.engines.') and m.endswith('_engine')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
