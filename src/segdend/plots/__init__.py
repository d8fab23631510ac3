"""Figures: one function per figure, each a function of analysis results (PNG and PDF).

:mod:`segdend.plots.experiments` draws the paper's experiments, :mod:`segdend.plots.run` one
run's learning curves and recordings, :mod:`segdend.plots.tensorboard` exports a run to
TensorBoard (optional).
"""

from segdend.plots.common import save_figure
from segdend.plots.experiments import (
    bp_angle_figure,
    comparison_figure,
    depth_figure,
    jacobian_figure,
    loss_corr_figure,
    receptive_fields_figure,
    traces_figure,
    tsne_figure,
)
from segdend.plots.run import learning_curves_figure, recordings_figure

__all__ = [
    "bp_angle_figure",
    "comparison_figure",
    "depth_figure",
    "jacobian_figure",
    "learning_curves_figure",
    "loss_corr_figure",
    "receptive_fields_figure",
    "recordings_figure",
    "save_figure",
    "traces_figure",
    "tsne_figure",
]
