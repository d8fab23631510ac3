"""The paper's experiments as named, declarative objects (EXPERIMENTS.md ids).

>>> from segdend.experiments import get_experiment, list_experiments, reproduce
>>> exp = get_experiment("depth")
>>> exp.conditions, exp.epochs, exp.published
({'shallow': [], 'h1': [], 'h2': []}, 60, {'shallow': 8.3, 'h1': 4.1, 'h2': 3.2})
>>> reproduce(exp, epochs=1, train_examples=300, mode="rate")   # shortened, labelled so

Declarations: :mod:`~segdend.experiments.performance` (depth, plateau_times, sparse,
sparse_amp, symmetric, segregation, baselines), :mod:`~segdend.experiments.learning`
(loss_corr, jacobian, bp_angle), :mod:`~segdend.experiments.representation` (tsne,
receptive_fields), :mod:`~segdend.experiments.traces` (traces); the list of them all:
:mod:`~segdend.experiments.registry`.
"""

from segdend.experiments.base import Experiment
from segdend.experiments.registry import get_experiment, list_experiments
from segdend.experiments.runner import reanalyse, reproduce

__all__ = ["Experiment", "get_experiment", "list_experiments", "reanalyse", "reproduce"]
