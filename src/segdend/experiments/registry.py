"""The list of experiments: every declared :class:`~segdend.experiments.base.Experiment`, once.

The paper's experiments come in ``EXPERIMENTS.md`` order, the extras after them. To add an
experiment, declare it beside the others and add it to :data:`EXPERIMENTS`; nothing registers
itself on import.
"""

from __future__ import annotations

from segdend.errors import SegdendError
from segdend.experiments import learning, performance, representation, traces
from segdend.experiments.base import Experiment

EXPERIMENTS: tuple[Experiment, ...] = (
    performance.DEPTH,
    representation.TSNE,
    performance.PLATEAU_TIMES,
    learning.LOSS_CORR,
    learning.JACOBIAN,
    learning.BP_ANGLE,
    representation.RECEPTIVE_FIELDS,
    performance.SPARSE,
    performance.SPARSE_AMP,
    performance.SYMMETRIC,
    performance.SEGREGATION,
    traces.TRACES,
    # extras, not figures of the paper
    performance.BASELINES,
    performance.BURST,
)


def list_experiments() -> dict[str, Experiment]:
    """Every experiment by id, the paper's in EXPERIMENTS.md order, extras last."""
    by_id: dict[str, Experiment] = {}
    for exp in EXPERIMENTS:
        if exp.id in by_id:
            raise ValueError(f"experiment {exp.id!r} is listed twice")
        by_id[exp.id] = exp
    return by_id


def get_experiment(name: str) -> Experiment:
    """The experiment with id ``name`` (raises SegdendError listing the ids otherwise)."""
    experiments = list_experiments()
    if name not in experiments:
        raise SegdendError(f"unknown experiment {name!r}; choose one of "
                           f"{', '.join(experiments)} (see `segdend experiments`)")
    return experiments[name]
