"""Figures are functions of analysis results: every figure draws from synthetic results,
writes a PNG and a PDF, labels shortened runs and marks published values."""

import csv

import matplotlib.image
import numpy as np
import pytest
from matplotlib.text import Text

from segdend import plots
from segdend.plots import common
from segdend.plots import experiments as figs
from segdend.plots import tensorboard as tb

NOTE = "shortened: 1 of 60 epochs, 300 of 60000 training examples"


def _condition(errors, published=None, value=None):
    return {"seeds": list(range(len(errors))), "test_error": errors,
            "test_error_repeat_sd": [0.1] * len(errors), "epochs_done": [2] * len(errors),
            "status": ["finished"] * len(errors),
            "curves": [{"epoch": [1, 2], "test_error": [e + 5, e]} for e in errors
                       if e is not None],
            "value": value if value is not None else errors, "published": published}


def _base(conditions, **extra):
    return {"experiment": "x", "title": "A test figure", "figure": "Fig. 0",
            "paper_epochs": 60, "conditions": conditions, "meta": {"note": NOTE}, **extra}


def synthetic_results():
    gen = np.random.default_rng(0)
    side = 28
    curve = {"examples": list(range(1, 301)), "smoothed": list(70 + gen.normal(size=300)),
             "epoch_sizes": [150, 150], "min_smoothed": 65.0}
    return {
        "depth": _base({"shallow": _condition([9.0, 9.5], 8.3), "h1": _condition([4.5], 4.1),
                        "h2": _condition([float("nan")], 3.2)}),
        "comparison": _base({"regular": _condition([4.2, 4.4], 4.1),
                             "sparse": _condition([3.9, None], 3.7)}),
        "loss_corr": _base({"h1": _condition([5.0], 0.61, [0.5])}, loss_corr={
            "curves": [{"epochs": [1, 2, 3], "r": gen.uniform(0, 1, (3, 10)).tolist()}],
            "scatter": {"epoch": 2, "class": 2, "loss_hidden": list(gen.random(50)),
                        "loss_out": list(gen.random(50)), "r": 0.55},
            "epoch": 2, "class": 2, "published_epoch": 2, "published_band": [0.2, 0.6]}),
        "jacobian": _base({"h1": _condition([5.0], None, [0.8])}, jacobian={
            "curves": [{"examples": [100, 200, 300], "eigenvalue": [3.0, 1.2, 0.8],
                        "source": "snapshots"}], "first_below_1": [300], "threshold": 1.0}),
        "bp_angle": _base({"spiking_feedback": _condition([5.0], 70.0, [71.0]),
                           "rate_feedback": _condition([5.0], 40.0, [41.0])},
                          bp_angle={"curves": {"spiking_feedback": [curve],
                                               "rate_feedback": [curve]},
                                    "window": 100}),
        "receptive_fields": _base(
            {"local": _condition([5.0], None, [0.5]), "backprop": _condition([4.0])},
            receptive_fields={"shown": {"side": side,
                                        "local": gen.normal(size=(4, side * side)).tolist(),
                                        "backprop": gen.normal(size=(4, side * side)).tolist(),
                                        "r": [0.9, 0.8, 0.7, 0.6],
                                        "max_r": list(gen.uniform(0.3, 0.9, 100)),
                                        "max_r_shuffled": list(gen.uniform(0, 0.2, 100))}}),
        "tsne": _base({"h2": _condition([3.0], None, [0.4])}, tsne={
            "labels": list(np.arange(40) % 10),
            "panels": [{"layer": name, "x": list(gen.normal(size=40)),
                        "y": list(gen.normal(size=40)), "silhouette": s}
                       for name, s in (("input", 0.1), ("hidden 1", None))]}),
        "traces": _base({"h1": _condition([5.0])}, traces={
            "label": 7, "predicted": 7, "length": 70, "window": [50, 20],
            "hidden": [{"neuron": i, "basal": list(gen.normal(size=140)),
                        "apical": list(gen.normal(size=140)),
                        "soma": list(gen.normal(size=140)), "alpha_f": 0.5, "alpha_t": 0.6}
                       for i in range(2)],
            "output": [{"unit": 7, "soma": list(gen.normal(size=140)), "is_label": True},
                       {"unit": 1, "soma": list(gen.normal(size=140)), "is_label": False}],
            "raster_hidden": {"t": [1, 5, 9], "unit": [0, 3, 39]},
            "raster_output": {"t": [2, 100], "unit": [7, 1]},
            "n_raster_hidden": 40, "n_output": 10}),
    }


FIGURES = {
    "depth": figs.depth_figure, "comparison": figs.comparison_figure,
    "loss_corr": figs.loss_corr_figure, "jacobian": figs.jacobian_figure,
    "bp_angle": figs.bp_angle_figure, "receptive_fields": figs.receptive_fields_figure,
    "tsne": figs.tsne_figure, "traces": figs.traces_figure,
}


def _texts(fig):
    return [t.get_text() for t in fig.findobj(Text)]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_every_figure_writes_png_and_pdf_with_the_shortened_label(name, tmp_path, monkeypatch):
    drawn = []
    real_save = figs.save_figure

    def capture(fig, path):
        drawn.append(fig)
        return real_save(fig, path)

    monkeypatch.setattr(figs, "save_figure", capture)
    files = FIGURES[name](synthetic_results()[name], tmp_path / name)
    assert [f.suffix for f in files] == [".png", ".pdf"]
    assert all(f.is_file() and f.stat().st_size > 1000 for f in files)
    img = matplotlib.image.imread(files[0])
    assert img.shape[1] >= 600 and img.std() > 0.01  # a picture, not a blank page
    assert files[1].read_bytes().startswith(b"%PDF")
    texts = _texts(drawn[0])
    assert NOTE in texts, "a shortened run must say so on the figure"


@pytest.mark.parametrize("name", ["depth", "comparison", "loss_corr", "receptive_fields"])
def test_published_values_are_marked(name, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figs, "save_figure", lambda fig, path: drawn.append(fig) or [])
    FIGURES[name](synthetic_results()[name], tmp_path / name)
    labels = [t.lower() for t in _texts(drawn[0])]
    assert any("published" in t for t in labels)


@pytest.mark.parametrize("name", ["jacobian", "bp_angle"])
def test_published_levels_are_dashed_lines(name, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figs, "save_figure", lambda fig, path: drawn.append(fig) or [])
    FIGURES[name](synthetic_results()[name], tmp_path / name)
    ax = drawn[0].axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed and any("published" in t for t in _texts(drawn[0]))


def test_full_reproduction_has_no_shortened_label(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figs, "save_figure", lambda fig, path: drawn.append(fig) or [])
    res = synthetic_results()["depth"]
    res["meta"] = {"note": ""}
    figs.depth_figure(res, tmp_path / "d")
    assert not any(t.startswith("shortened") for t in _texts(drawn[0]))


def test_save_figure_drops_a_given_suffix(tmp_path):
    from matplotlib.figure import Figure

    files = common.save_figure(Figure(), tmp_path / "sub" / "f.png")
    assert [f.name for f in files] == ["f.png", "f.pdf"]


def test_run_figures(tmp_path):
    data = {"title": "run", "metrics": [{"epoch": 1, "examples_seen": 100, "test_error": 50.0,
                                         "train_error": 60.0},
                                        {"epoch": 2, "examples_seen": 200, "test_error": 40.0,
                                         "train_error": 45.0}],
            "quick": [{"examples_seen": 50, "test_error": 70.0}],
            "losses": {"examples": [1, 2, 3], "loss_out": [0.1, 0.09, 0.08],
                       "loss_hidden": [[1.0, 0.9, 0.8]], "window": 100},
            "angle": {"examples": [1, 2], "smoothed": [80.0, 75.0]},
            "jacobian": {"examples": [100, 200], "eigenvalue": [2.0, 0.9], "source": "x"}}
    files = plots.learning_curves_figure(data, tmp_path / "lc")
    files += plots.recordings_figure(data, tmp_path / "rec")
    assert all(f.is_file() for f in files)
    # An empty run draws panels that say so instead of failing.
    assert plots.learning_curves_figure({"title": "empty"}, tmp_path / "empty")[0].is_file()


def _tiny_run_dir(path):
    from safetensors.numpy import save

    path.mkdir()
    (path / "config.json").write_text("{}")
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "examples_seen", "test_error", "test_error_sd", "train_error",
                    "loss_out", "loss_hidden0", "seconds"])
        w.writerow([1, 300, 50.0, 0.0, 60.0, 0.1, 1.0, 1.5])
    (path / "losses").mkdir()
    (path / "losses" / "epoch_001.safetensors").write_bytes(save({
        "loss_out": np.linspace(1, 0, 300), "loss_hidden": np.ones((300, 1)),
        "correct": np.zeros(300, dtype=np.uint8), "order": np.arange(300)}))
    return path


def test_tensorboard_export_skips_without_tensorboard(tmp_path, monkeypatch):
    monkeypatch.setattr(tb, "tensorboard_available", lambda: False)
    assert tb.write_tensorboard(_tiny_run_dir(tmp_path / "run")) is None
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.skipif(not tb.tensorboard_available(), reason="tensorboard is not installed "
                    "(optional extra `monitor`)")
def test_tensorboard_export_writes_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tb.write_tensorboard(_tiny_run_dir(tmp_path / "run"))
    events = list(logdir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "error/test_error" in tags and "loss/out" in tags and "loss/hidden0" in tags
    assert len(acc.Scalars("loss/out")) == 3  # 300 examples, one point per 100
    # Writing again replaces the events instead of adding a second file.
    tb.write_tensorboard(tmp_path / "run")
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 1
