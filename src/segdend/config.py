"""The validated run configuration: the single source of truth for a run.

A run is described by one frozen :class:`RunConfig` tree (model, phases, training, data,
output). Derived constants (``k_B``, ``k_D``, the ``P`` factors, kernel taps, ...) are computed
from it when a network is built (:mod:`segdend.dynamics`), never at import. Configs come from
TOML presets, optional TOML files and ``section.key=value`` overrides; every problem is raised
as :class:`~segdend.errors.SegdendError` with a message that names the field, the constraint
and the value received.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segdend import rng
from segdend.errors import SegdendError


def _registry_name(v: str, what: str) -> str:
    """A name of a registry above the config's floor (checked against it when an engine is
    built); here only that it is one."""
    if not v.isidentifier():
        raise ValueError(f"must be the name of {what}; got {v!r}")
    return v


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def _finite(name: str, value: float, *, positive: bool = False, nonneg: bool = False) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value}")
    if nonneg and value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return value


class ModelConfig(_Section):
    """The network and its neurons (MODEL.md sections 1-3, 6-8)."""

    mode: Literal["spiking", "rate"] = "spiking"
    n_inputs: int = Field(784, gt=0)
    layers: tuple[int, ...] = (500, 10)
    """Sizes of the hidden layers then the output layer, bottom-up."""
    phi_max: float = 0.2
    dt: float = 1.0
    tau_s: float = 3.0
    tau_L: float = 10.0
    g_L: float = 0.1
    g_B: float = 0.6
    g_A: float = 0.0
    g_D: float = 0.6
    E_E: float = 8.0
    E_I: float = -8.0
    kernel: Literal["truncated", "exact"] = "truncated"
    kernel_taps: int = Field(10, gt=0)
    feedback_wiring: Literal["broadcast", "layerwise"] = "broadcast"
    feedback: str = "random"
    """A name of ``feedback.FEEDBACK_VARIANTS`` (random, symmetric, noisy_symmetric); checked
    against that registry when an engine is built (``feedback.feedback_variant``): feedback
    sits floors above the config, which may not import it."""
    feedback_noise_sd: float = 0.05
    feedback_sparsity: float = 0.0
    """Fraction of each Y's entries zeroed by a fixed random mask (0.8 in the paper)."""
    feedback_sparse_gain: float | None = None
    """Gain on the surviving entries; None means 1/(1 - sparsity) (x5 at 80%); 1 disables."""
    feedback_signal: Literal["spikes", "rates"] = "spikes"
    plateau_times: Literal["synchronous", "random"] = "synchronous"
    plateau_time_sd: float = 3.0
    plateau_time_max: int = Field(5, ge=0)
    init: Literal["optimised", "optimised_half", "uniform"] = "optimised"
    """optimised: the published U(-1,1)*3.465 form; optimised_half: U(0,1)-0.5; uniform: no
    optimisation (W = 0.1 U(-1,1), b = U(-1,1), Y = U(-1,1))."""
    init_v_avg: float = 3.0
    init_v_sd: float = 3.0
    init_b_avg: float = 0.8
    init_b_sd: float = 0.001

    @field_validator("layers")
    @classmethod
    def _layers_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(v) == 0:
            raise ValueError("must list at least the output layer, e.g. [500, 10]")
        for i, n in enumerate(v):
            if n <= 0:
                raise ValueError(f"every layer size must be > 0; got {n} at position {i}")
        return v

    @field_validator("feedback")
    @classmethod
    def _feedback_named(cls, v: str) -> str:
        return _registry_name(v, "a feedback variant (feedback.FEEDBACK_VARIANTS)")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        for name in ("phi_max", "dt", "tau_s", "tau_L", "g_L", "g_B", "g_D"):
            _finite(name, getattr(self, name), positive=True)
        for name in ("g_A", "feedback_noise_sd", "plateau_time_sd"):
            _finite(name, getattr(self, name), nonneg=True)
        for name in ("E_E", "E_I", "init_v_avg", "init_v_sd", "init_b_avg", "init_b_sd"):
            _finite(name, getattr(self, name))
        if self.phi_max > 1:
            raise ValueError(f"phi_max is a rate per step and must be <= 1; got {self.phi_max}")
        if self.tau_s == self.tau_L:
            raise ValueError("tau_s and tau_L must differ (the PSP kernel divides by their gap)")
        if not 0.0 <= self.feedback_sparsity < 1.0:
            raise ValueError(f"feedback_sparsity must be in [0, 1); got {self.feedback_sparsity}")
        if self.feedback_sparse_gain is not None:
            _finite("feedback_sparse_gain", self.feedback_sparse_gain, positive=True)
        problem = rng.counter_problem(len(self.layers), max(self.n_inputs, *self.layers), 0)
        if problem is not None:
            raise ValueError(f"layers must fit the random streams: {problem}")
        if self.mode == "rate" and self.g_A != 0:
            raise ValueError(
                "rate mode has no apical->soma coupling (somata at steady state); "
                "set model.g_A = 0 or use model.mode = 'spiking'"
            )
        return self

    @property
    def n_hidden_layers(self) -> int:
        return len(self.layers) - 1


class PhaseConfig(_Section):
    """Phase lengths, integration windows and plateau timing (MODEL.md sections 4 and 9)."""

    lengths: Literal["random", "fixed"] = "random"
    min_length: int = Field(50, gt=0)
    wald_mean: float = 2.0
    wald_scale: float = 1.0
    integration: Literal["last", "settle"] = "last"
    """last: average the last `window` steps (code, default); settle: every step after
    `settle` steps (paper text)."""
    window: int = Field(20, gt=0)
    settle: int = Field(30, ge=0)
    test_length: int = Field(250, gt=0)
    test_window: int = Field(220, gt=0)

    @model_validator(mode="after")
    def _check(self) -> PhaseConfig:
        _finite("wald_mean", self.wald_mean, positive=True)
        _finite("wald_scale", self.wald_scale, positive=True)
        if self.integration == "last" and self.window > self.min_length:
            raise ValueError(
                f"the integration window ({self.window} steps) is longer than the shortest "
                f"phase ({self.min_length} steps); lower phases.window or raise phases.min_length"
            )
        if self.integration == "settle" and self.settle >= self.min_length:
            raise ValueError(
                f"the settle time ({self.settle} steps) leaves nothing of a {self.min_length}-step "
                "phase to average; lower phases.settle or raise phases.min_length"
            )
        if self.test_window > self.test_length:
            raise ValueError(
                f"phases.test_window ({self.test_window}) must be <= phases.test_length "
                f"({self.test_length})"
            )
        return self


MAX_EPOCHS = 10_000
"""The most epochs a run may ask for (``--epochs 10**12`` would fill any disk)."""

RECORD_NAMES = ("bp_angle", "ubar_f")
"""What ``output.record`` may name: the per-example recordings of the engines (which engine
records which: ``records`` of its contract in ``engines.registry.ENGINES``)."""


class TrainingConfig(_Section):
    """Online learning (MODEL.md section 5, 7)."""

    epochs: int = Field(60, gt=0)
    eta: tuple[float, ...] = (0.21, 0.21)
    """Learning rate per layer, bottom-up (hidden layers then output)."""
    learning_rule: str = "local"
    """A name of ``plasticity.HIDDEN_RULES`` (local, backprop, feedback_alignment, burst);
    checked against that registry when an engine is built (``plasticity.hidden_rule``):
    plasticity sits floors above the config, which may not import it."""
    burst_scale: float = 1.0
    """The ``burst`` rule's scale s > 0: burst counts ``Poisson(s alpha) / s`` (mean alpha;
    less noise as s grows)."""
    feedback_learning: bool = False
    eta_feedback: tuple[float, ...] | None = None
    seed: int = Field(0, ge=0)
    train_examples: int | None = Field(None, gt=0)
    """Use only the first N training images (after the validation split); None = all."""
    validation: int = Field(0, ge=0)
    test_examples: int | None = Field(None, gt=0)
    test_every: int = Field(1, gt=0)
    """Full test every N epochs (and always after the last)."""
    test_repeats: int = Field(1, gt=0)
    quick_test_every: int = Field(0, ge=0)
    """Every N examples a quick test on `quick_test_examples` test images (0 = off)."""
    quick_test_examples: int = Field(500, gt=0)
    checkpoint_every: int = Field(10000, ge=0)
    """Examples between mid-epoch checkpoints (0 = only at epoch ends)."""
    engine: Literal["auto", "reference", "numba", "torch"] = "auto"
    device: str = "cpu"
    dtype: Literal["float64", "float32"] = "float64"
    threads: int = Field(1, gt=0)
    """Compute threads of training (and of the torch engine's calls)."""
    test_threads: int = Field(0, ge=0)
    """Threads of the full test (numba engine); 0 = all available cores (one fewer while
    the test overlaps training)."""
    overlap_test: bool = True
    """Run epoch k's full test in a background thread while epoch k+1 trains (numba and
    reference engines); the metrics are identical to testing in order."""

    @field_validator("epochs")
    @classmethod
    def _epochs_bounded(cls, v: int) -> int:
        if v > MAX_EPOCHS:
            raise ValueError(
                f"must be <= {MAX_EPOCHS} (each epoch writes its losses, a test and weights; "
                f"the paper trains 60); got {v}"
            )
        return v

    @field_validator("eta", "eta_feedback")
    @classmethod
    def _eta_ok(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is None:
            return v
        for i, e in enumerate(v):
            if not math.isfinite(e) or e < 0:
                raise ValueError(f"[{i}] must be a finite number >= 0; got {e}")
        return v

    @field_validator("learning_rule")
    @classmethod
    def _rule_named(cls, v: str) -> str:
        return _registry_name(v, "a learning rule (plasticity.HIDDEN_RULES)")

    @field_validator("burst_scale")
    @classmethod
    def _burst_scale_ok(cls, v: float) -> float:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"must be a finite number > 0; got {v}")
        return v

    @field_validator("device")
    @classmethod
    def _device_ok(cls, v: str) -> str:
        if v not in ("cpu", "cuda", "auto") and not v.startswith("cuda:"):
            raise ValueError(f"must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {v!r}")
        return v


class DataConfig(_Section):
    data_dir: str | None = None
    cache_dir: str | None = None
    download: bool = True


class OutputConfig(_Section):
    out: str | None = None
    """Run directory; None = runs/<preset>-<mode>-seed<seed>."""
    overwrite: bool = False
    tensorboard: bool = False
    record: tuple[str, ...] = ()
    """Per-example recordings for analyses: any of RECORD_NAMES."""
    keep_checkpoints: int = Field(100, ge=0)
    """Per-epoch weight files kept: every epoch when training.epochs <= N, else every
    ceil(epochs / N)-th epoch and the last; 0 keeps none (latest.safetensors always)."""

    @field_validator("record")
    @classmethod
    def _record_known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, name in enumerate(v):
            if name not in RECORD_NAMES:
                raise ValueError(f"[{i}] must be one of {', '.join(RECORD_NAMES)}; got {name!r}")
        return v


class RunConfig(_Section):
    """Everything that describes one run."""

    name: str = "custom"
    description: str = ""
    model: ModelConfig = ModelConfig()
    phases: PhaseConfig = PhaseConfig()
    training: TrainingConfig = TrainingConfig()
    data: DataConfig = DataConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _cross(self) -> RunConfig:
        m, ph = self.model, self.phases
        if m.plateau_times == "random" and m.mode == "spiking":
            first = ph.min_length - 1 - m.plateau_time_max  # the earliest plateau step
            need = ph.window - 1 if ph.integration == "last" else ph.settle
            if first < need:
                raise ValueError(
                    f"random plateau times up to {m.plateau_time_max} steps before a phase's "
                    f"end leave too little of a {ph.min_length}-step phase for the integration "
                    "window; raise phases.min_length or lower model.plateau_time_max"
                )
        n = len(self.model.layers)
        if len(self.training.eta) != n:
            raise ValueError(
                f"training.eta has {len(self.training.eta)} learning rates but model.layers has "
                f"{n} layers; give one rate per layer, bottom-up"
            )
        if self.training.eta_feedback is not None and len(self.training.eta_feedback) != n - 1:
            raise ValueError(
                f"training.eta_feedback needs one rate per hidden layer ({n - 1}); "
                f"got {len(self.training.eta_feedback)}"
            )
        if self.training.feedback_learning and self.training.eta_feedback is None:
            raise ValueError("training.feedback_learning needs training.eta_feedback")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)


# --------------------------------------------------------------------------------------------
# Building configs from dictionaries, TOML and overrides


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if p not in ("after",))
    msg = first["msg"].removeprefix("Value error, ")
    if msg.startswith("Input should be "):  # pydantic's wording -> the project's
        msg = "must be " + msg.removeprefix("Input should be ")
    got = first.get("input")
    if first["type"] == "extra_forbidden":
        return f"unknown config key `{loc}`; see `segdend presets --show NAME` for the valid keys"
    if isinstance(got, dict):
        # Cross-field checks name their field first: fold it into the location.
        word, _, rest = msg.partition(" ")
        if word.split("[")[0] in got or word.split("[")[0] in _all_fields():
            return f"`{loc + '.' if loc else ''}{word}` {rest}"
        return f"config: {msg}" if not loc else f"`{loc}`: {msg}"
    if msg.startswith("["):
        index, _, msg = msg.partition(" ")
        loc += index
    where = f"`{loc}` " if loc else "config: "
    return f"{where}{msg}; got {got!r}" if "got" not in msg else f"{where}{msg}"


def _all_fields() -> set[str]:
    out: set[str] = set()
    for f in RunConfig.model_fields.values():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out.update(f.annotation.model_fields)
    return out


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a nested dictionary into a :class:`RunConfig` (raises SegdendError)."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise SegdendError(_format_validation_error(err)) from None


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SegdendError(f"config file {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SegdendError(f"cannot read config file {path}: {err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SegdendError(f"config file {path} is not valid TOML: {err}") from None


def config_from_toml_text(text: str) -> RunConfig:
    """Parse and validate TOML text (raises SegdendError on any problem)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SegdendError(f"config is not valid TOML: {err}") from None
    return config_from_dict(data)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _parse_value(text: str) -> Any:
    """Parse an override value as a TOML value; bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text.startswith(("[", "{", '"', "'")):
            raise SegdendError(f"cannot parse override value {text!r} as TOML") from None
        return text


def toml_literal(value: Any) -> str:
    """A Python scalar as the TOML value of a ``section.key=value`` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a config dictionary.

    Unknown sections or keys are refused here (with the list of valid keys) so that a typo
    never silently does nothing; value types are checked by the config validation.
    """
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise SegdendError(f"override {item!r} must look like section.key=value")
        key, _, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if len(parts) != 2:
            raise SegdendError(
                f"override key {key!r} must be section.key (e.g. training.eta=[0.2, 0.2])"
            )
        section, field = parts
        sections = {
            name: f.annotation for name, f in RunConfig.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
        }
        if section not in sections:
            raise SegdendError(
                f"unknown config section {section!r} in --set {item}; "
                f"sections are {', '.join(sorted(sections))}"
            )
        fields = sections[section].model_fields
        if field not in fields:
            close = [f for f in fields if f.lower() == field.lower() or field in f]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SegdendError(f"unknown config key {key!r} in --set {item}{hint}")
        out.setdefault(section, {})[field] = _parse_value(raw.strip())
    return out
