"""The config: presets, overrides, validation messages, and fuzzing of the loader."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segdend.config import RunConfig, config_from_dict, config_from_toml_text
from segdend.errors import SegdendError
from segdend.presets import build_config, list_presets


def test_paper_presets_have_the_papers_networks_and_rates():
    assert set(list_presets()) >= {"paper-shallow", "paper-h1", "paper-h2"}
    h2 = build_config("paper-h2")
    assert h2.model.layers == (500, 100, 10) and h2.training.eta == (0.23, 0.23, 0.12)
    assert build_config("paper-shallow").training.eta == (0.19,)
    h1 = build_config("paper-h1")
    assert h1.model.mode == "spiking" and h1.training.epochs == 60
    assert h1.model.kernel_taps == 10 and h1.phases.window == 20
    assert h1.phases.test_length == 250 and h1.phases.test_window == 220


def test_mode_switch_and_overrides_are_typed():
    cfg = build_config("paper-h1", overrides=["training.eta=[0.1, 0.2]"],
                       **{"model.mode": "rate", "training.epochs": 3})
    assert cfg.model.mode == "rate" and cfg.training.eta == (0.1, 0.2)
    assert cfg.training.epochs == 3
    assert build_config("paper-h1", overrides=["model.g_A=0.05"]).model.g_A == 0.05
    with pytest.raises(SegdendError, match="rate mode has no apical"):
        build_config("paper-h1", overrides=["model.g_A=0.05", 'model.mode="rate"'])


def test_config_is_frozen_and_round_trips_through_json():
    cfg = build_config("paper-h2")
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        cfg.training.epochs = 3  # type: ignore[misc]
    import json
    again = config_from_dict(json.loads(cfg.to_json()))
    assert again == cfg


@pytest.mark.parametrize("text, message", [
    ("[model]\nlayers = [500, -1]", "model.layers"),
    ("[training]\neta = [0.2, inf]", "training.eta[1]"),
    ("[model]\ng_L = 0", "model.g_L"),
    ("[phases]\nwindow = 60", "integration window"),
    ("[model]\nphi_max = 3", "phi_max"),
    ("[modle]\nlayers = [10]", "unknown config key"),
    ("[training]\neta = [0.1]", "one rate per layer"),
    ("not toml [", "not valid TOML"),
])
def test_invalid_configs_name_the_field(text, message):
    with pytest.raises(SegdendError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_toml_text(text)


values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                   st.booleans(), st.lists(st.integers(-5, 600), max_size=4),
                   st.lists(st.floats(allow_nan=True), max_size=4))
sections = {name: list(f.annotation.model_fields) for name, f in RunConfig.model_fields.items()
            if hasattr(f.annotation, "model_fields")}
section_dicts = st.fixed_dictionaries({}, optional={
    name: st.dictionaries(st.sampled_from(fields + ["bogus"]), values, max_size=4)
    for name, fields in sections.items()})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section_dicts)
def test_any_config_dict_loads_or_raises_the_project_error(data):
    try:
        cfg = config_from_dict(data)
    except SegdendError as err:
        assert "\n" not in str(err)
        return
    assert all(n > 0 for n in cfg.model.layers)
    assert all(math.isfinite(e) and e >= 0 for e in cfg.training.eta)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_toml_text_loads_or_raises_the_project_error(text):
    try:
        config_from_toml_text(text)
    except SegdendError as err:
        assert str(err)


def test_engine_selection():
    from segdend.engines.registry import resolve_engine_name

    assert resolve_engine_name(build_config("paper-h1")) == "numba"
    assert resolve_engine_name(build_config("paper-h1", overrides=['training.dtype="float32"'])
                               ) == "torch"
    assert resolve_engine_name(build_config("paper-h1", overrides=['training.engine="reference"'])
                               ) == "reference"
    with pytest.raises(SegdendError, match="float64 only"):
        resolve_engine_name(build_config("paper-h1", overrides=[
            'training.dtype="float32"', 'training.engine="numba"']))
