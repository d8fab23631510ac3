"""An experiment of the paper as data: base preset, named conditions, paper values, analysis.

Each :class:`Experiment` is declared once (in the modules beside this one), listed in
:data:`segdend.experiments.registry.EXPERIMENTS` and looked up by its id from ``EXPERIMENTS.md``
with :func:`~segdend.experiments.registry.get_experiment`. It says *what* to run (a preset and,
per condition, ``section.key=value`` overrides on top of it), *how long* the paper ran it, *what
the paper found* (a number per condition where there is one, and the claim in words), which
per-example recordings the analysis needs, and two functions: ``analyse(run_dirs) -> dict``
(over the saved runs) and ``plot(results, path)`` (the figure).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segdend.config import RunConfig, toml_literal
from segdend.errors import SegdendError

RunDirs = dict[str, list[Path]]
"""Condition name -> the run directories of its seeds."""

PAPER_TRAIN_EXAMPLES = 60000
PAPER_TEST_EXAMPLES = 10000
# Seed offset of the backprop-trained comparison network (receptive_fields, baselines): it is
# initialised independently of the local network of the same seed index, and both experiments
# use the same offset so that they share those runs.
BACKPROP_SEED_OFFSET = 1000


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper (or an extra one, e.g. baselines).

    Attributes
    ----------
    id, title, figure : str
        The id of EXPERIMENTS.md, a one-line title and the paper's figure.
    preset : str
        Base preset of every condition (``presets`` overrides it per condition).
    conditions : dict
        Condition name -> list of ``section.key=value`` overrides on top of the preset.
    epochs : int
        Epochs the paper trained for.
    published : dict
        Condition name -> the published value of ``measure`` (None where the paper gives
        none); ``claim`` states the published result in words.
    record : tuple of str
        Per-example recordings the analysis needs (``output.record``).
    measure, measure_label : str
        What ``published`` and the analysis's per-condition ``value`` measure.
    overrides : tuple of str
        Overrides applied to every condition before its own.
    spiking_only : str
        Why the experiment's point is lost in rate mode ("" when rate mode keeps it).
    rate_mode_invalid : bool
        Rate mode cannot run the conditions at all (e.g. g_A > 0).
    snapshots : int
        Train in about this many steps per epoch, calling ``snapshot_fn(run_dir,
        examples_seen, config)`` after each (0: train in one go).
    seed_offsets : dict
        Condition name -> number added to the seed (e.g. an independently initialised
        reference network).
    paper_train_examples : int or None
        Training examples per epoch in the paper (None: the data sizes are not a point of
        the experiment, and fewer examples or test images are not labelled "shortened").
    extra : bool
        Not one of the paper's figures (e.g. baselines).
    """

    id: str
    title: str
    figure: str
    preset: str
    conditions: dict[str, list[str]]
    epochs: int
    published: dict[str, float | None]
    claim: str
    analyse_fn: Callable[[Experiment, RunDirs], dict[str, Any]]
    plot_fn: Callable[[dict[str, Any], Path], list[Path]]
    record: tuple[str, ...] = ()
    presets: dict[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    measure: str = "test_error"
    measure_label: str = "test error (%)"
    spiking_only: str = ""
    rate_mode_invalid: bool = False
    snapshots: int = 0
    snapshot_fn: Callable[[Path, int, RunConfig], None] | None = None
    seed_offsets: dict[str, int] = field(default_factory=dict)
    paper_train_examples: int | None = PAPER_TRAIN_EXAMPLES
    extra: bool = False

    def preset_for(self, condition: str) -> str:
        self._check_condition(condition)
        return self.presets.get(condition, self.preset)

    def seed_for(self, condition: str, index: int) -> int:
        """The run seed of the ``index``-th seed of ``condition``."""
        return index + self.seed_offsets.get(condition, 0)

    def condition_overrides(self, condition: str) -> list[str]:
        """Every override of a condition: the experiment's, the condition's, the recordings."""
        self._check_condition(condition)
        out = [*self.overrides, *self.conditions[condition]]
        if self.record:
            out.append("output.record=[" + ", ".join(f'"{r}"' for r in self.record) + "]")
        return out

    def build_config(self, condition: str, seed_index: int = 0, *,
                     overrides: list[str] | tuple[str, ...] = (), **shortcuts: Any) -> RunConfig:
        """The validated config of one run: the preset, the condition's overrides, then the
        command line's ``section.key`` shortcuts (None values ignored) and ``overrides``, in
        that order (later ones win)."""
        from segdend.presets import build_config

        shortcuts = {**shortcuts, "training.seed": self.seed_for(condition, seed_index)}
        short = [f"{k}={toml_literal(v)}" for k, v in shortcuts.items() if v is not None]
        return build_config(self.preset_for(condition),
                            overrides=[*self.condition_overrides(condition), *short,
                                       *overrides])

    def analyse(self, run_dirs: RunDirs) -> dict[str, Any]:
        """Analyse saved runs: condition name -> run directories (one per seed)."""
        missing = [c for c in self.conditions if c not in run_dirs]
        if missing:
            raise SegdendError(f"experiment {self.id} needs runs of condition(s) "
                               f"{', '.join(missing)}")
        return self.analyse_fn(self, run_dirs)

    def plot(self, results: dict[str, Any], path: Path) -> list[Path]:
        """Draw the figure of ``results`` into ``path``.png and ``path``.pdf."""
        return self.plot_fn(results, Path(path))

    def _check_condition(self, condition: str) -> None:
        if condition not in self.conditions:
            raise SegdendError(f"experiment {self.id} has no condition {condition!r}; its "
                               f"conditions are {', '.join(self.conditions)}")
