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


def multi_seed_results():
    """The same figures with two or three seeds per condition (slightly different values)."""
    gen = np.random.default_rng(1)
    res = synthetic_results()
    res["depth"] = _base({"shallow": _condition([9.0, 9.5, 8.8], 8.3),
                          "h1": _condition([4.5, 4.2, 4.4], 4.1),
                          "h2": _condition([3.4, 3.3, 3.6], 3.2)})
    res["comparison"] = _base({"regular": _condition([4.2, 4.4], 4.1),
                               "sparse": _condition([3.9, 3.8], 3.7),
                               "noisy_symmetric": _condition([4.5, 4.6])})
    res["loss_corr"]["loss_corr"]["curves"] = [
        {"epochs": [1, 2, 3], "r": gen.uniform(0, 1, (3, 10)).tolist()} for _ in range(3)]
    res["loss_corr"]["conditions"]["h1"] = _condition([5.0, 5.1, 4.9], 0.61, [0.5, 0.6, 0.55])
    res["jacobian"]["jacobian"]["curves"] = [
        {"examples": [100, 200, 300], "eigenvalue": [3.0 + k, 1.2, 0.8 - 0.1 * k],
         "source": "snapshots"} for k in range(2)]
    # Angles right on the published levels: their labels must not be drawn over the curves.
    ba = res["bp_angle"]["bp_angle"]["curves"]
    for cond, level in (("spiking_feedback", 70.0), ("rate_feedback", 40.0)):
        ba[cond] = [{"examples": list(range(1, 301)),
                     "smoothed": list(level + 3 * gen.normal(size=300)),
                     "epoch_sizes": [150, 150], "min_smoothed": level - 5}
                    for _ in range(2)]
    rf = res["receptive_fields"]["receptive_fields"]
    rf["mean_max_r"], rf["mean_max_r_shuffled"] = [0.6, 0.62], [0.1, 0.12]
    return res


FIGURES = {
    "depth": figs.depth_figure, "comparison": figs.comparison_figure,
    "loss_corr": figs.loss_corr_figure, "jacobian": figs.jacobian_figure,
    "bp_angle": figs.bp_angle_figure, "receptive_fields": figs.receptive_fields_figure,
    "tsne": figs.tsne_figure, "traces": figs.traces_figure,
}


def _texts(fig):
    """Every text of the figure, wrapped lines joined with spaces."""
    return [t.get_text().replace("\n", " ") for t in fig.findobj(Text)]


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


# ---------------------------------------------------------------------------------------------
# Figures a reader can put beside the paper's: page width, nothing over the data, seeds thin
# and their mean bold, published values marked.

SINGLE_PANEL = {"jacobian", "bp_angle"}


def _draw(name, results, tmp_path, monkeypatch):
    """Draw and save one figure; return it laid out (as saved) with a renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    drawn = []
    real_save = figs.save_figure
    monkeypatch.setattr(figs, "save_figure", lambda fig, path: drawn.append(fig)
                        or real_save(fig, path))
    files = FIGURES[name](results, tmp_path / name)
    fig = drawn[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return fig, canvas.get_renderer(), files


def _data_points(ax):
    """Display coordinates of everything drawn in data coordinates: line vertices (and
    points along their segments), scatter points, bar corners."""
    pts = []
    for line in ax.get_lines():
        if line.get_transform() is not ax.transData or line.get_gid() == "published":
            continue
        xy = np.column_stack([np.asarray(line.get_xdata(), float),
                              np.asarray(line.get_ydata(), float)])
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) > 1:  # points along each segment, not just its ends
            t = np.linspace(0, 1, 12)[:, None, None]
            xy = (xy[:-1] * (1 - t) + xy[1:] * t).reshape(-1, 2)
        if len(xy):
            pts.append(ax.transData.transform(xy))
    for coll in ax.collections:
        offsets = np.asarray(coll.get_offsets(), float)
        if offsets.size and coll.get_offset_transform() is ax.transData:
            offsets = offsets[np.isfinite(offsets).all(axis=1)]
            pts.append(ax.transData.transform(offsets))
    for patch in ax.patches:
        if patch.get_transform().contains_branch(ax.transData) and patch.get_height() > 0:
            ext = patch.get_window_extent()
            pts.append(np.array([[ext.x0, ext.y1], [ext.x1, ext.y1],
                                 [(ext.x0 + ext.x1) / 2, ext.y1]]))
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _covers(box, pts, pad=-1.0):
    """Whether any point lies inside ``box`` (shrunk by ``-pad`` pixels)."""
    return bool(((pts[:, 0] > box.x0 - pad) & (pts[:, 0] < box.x1 + pad)
                 & (pts[:, 1] > box.y0 - pad) & (pts[:, 1] < box.y1 + pad)).any())


def _labels_and_legends(fig):
    out = []
    for ax in fig.axes:
        out += [(t, t.get_text()) for t in ax.texts if t.get_text() and t.get_visible()]
        if ax.get_legend() is not None:
            out.append((ax.get_legend(), "legend"))
    for f in [fig, *fig.subfigs]:
        out += [(leg, "figure legend") for leg in f.legends]
    return out


def _cases():
    return [(name, kind) for name in sorted(FIGURES) for kind in ("one seed", "seeds")]


def _results(name, kind):
    return (synthetic_results() if kind == "one seed" else multi_seed_results())[name]


@pytest.mark.parametrize("name,kind", _cases())
def test_figures_fit_the_page(name, kind, tmp_path, monkeypatch):
    fig, _, files = _draw(name, _results(name, kind), tmp_path, monkeypatch)
    width = fig.get_size_inches()[0]
    assert width <= (common.COLUMN_WIDTH if name in SINGLE_PANEL else common.PAGE_WIDTH)
    img = matplotlib.image.imread(files[0])  # 200 dpi, tight: nothing sticks out sideways
    assert img.shape[1] <= (width + 0.15) * 200
    for t in fig.findobj(Text):
        if t.get_text() and t.get_visible():
            assert t.get_fontsize() >= 6, f"{t.get_text()!r} is too small to read"


@pytest.mark.parametrize("name,kind", _cases())
def test_tick_labels_do_not_overlap(name, kind, tmp_path, monkeypatch):
    fig, renderer, _ = _draw(name, _results(name, kind), tmp_path, monkeypatch)
    for ax in fig.axes:
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            boxes = [t.get_window_extent(renderer) for t in labels
                     if t.get_text() and t.get_visible()]
            for a, b in zip(boxes[:-1], boxes[1:], strict=True):
                assert not a.overlaps(b), f"{name}: tick labels {a} and {b} overlap"


@pytest.mark.parametrize("name,kind", _cases())
def test_no_label_or_legend_is_drawn_over_data(name, kind, tmp_path, monkeypatch):
    fig, renderer, _ = _draw(name, _results(name, kind), tmp_path, monkeypatch)
    points = {ax: _data_points(ax) for ax in fig.axes}
    for artist, text in _labels_and_legends(fig):
        box = artist.get_window_extent(renderer)
        for pts in points.values():
            assert not (len(pts) and _covers(box, pts)), f"{name}: {text!r} covers data"
        if text == "figure legend":  # below the panels, outside every axes
            assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)


@pytest.mark.parametrize("name", ["bp_angle", "jacobian", "depth", "comparison"])
def test_published_levels_are_labelled_outside_the_axes(name, tmp_path, monkeypatch):
    fig, renderer, _ = _draw(name, multi_seed_results()[name], tmp_path, monkeypatch)
    ax = fig.axes[-1] if name in ("depth", "comparison") else fig.axes[0]
    labels = [t for t in ax.texts if t.get_gid() == "published"]
    dashed = [line for line in ax.get_lines() if line.get_gid() == "published"]
    assert labels and len(labels) == len(dashed)
    right = ax.get_window_extent(renderer).x1
    assert all(t.get_window_extent(renderer).x0 >= right for t in labels)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    if name == "bp_angle":
        assert sorted(t.get_text() for t in labels) == ["~40°", "~70°"]


def _lines(ax, gid):
    return [line for line in ax.get_lines() if line.get_gid() == gid]


@pytest.mark.parametrize("name,panel,n_conditions,n_seeds", [
    ("depth", 1, 3, 3), ("comparison", 1, 3, 2), ("bp_angle", 0, 2, 2), ("jacobian", 0, 1, 2)])
def test_several_seeds_are_thin_lines_with_a_bold_mean(name, panel, n_conditions, n_seeds,
                                                       tmp_path, monkeypatch):
    fig, _, _ = _draw(name, multi_seed_results()[name], tmp_path, monkeypatch)
    ax = fig.axes[panel]
    seeds, means = _lines(ax, "seed"), _lines(ax, "mean")
    assert len(means) == n_conditions and len(seeds) == n_conditions * n_seeds
    assert not _lines(ax, "single")
    thin = max(line.get_linewidth() for line in seeds)
    assert min(line.get_linewidth() for line in means) >= 2 * thin
    assert all((line.get_alpha() or 1.0) <= 0.5 for line in seeds)
    assert all((line.get_alpha() or 1.0) == 1.0 for line in means)
    # The bold line is the mean of its condition's seeds.
    for mean in means:
        mine = [s for s in seeds if s.get_color() == mean.get_color()]
        assert len(mine) == n_seeds
        np.testing.assert_allclose(mean.get_ydata(),
                                   np.mean([s.get_ydata() for s in mine], axis=0))
    assert any(f"mean of {n_seeds} seeds" in t for t in _texts(fig))


def test_one_seed_is_one_ordinary_line(tmp_path, monkeypatch):
    res = _base({"shallow": _condition([9.0], 8.3), "h1": _condition([4.5], 4.1)})
    fig, _, _ = _draw("depth", res, tmp_path, monkeypatch)
    ax = fig.axes[1]
    assert len(_lines(ax, "single")) == 2 and not _lines(ax, "seed") + _lines(ax, "mean")
    texts = _texts(fig)
    assert not any("mean of" in t or "±" in t or "each seed" in t for t in texts)


@pytest.mark.parametrize("name", ["depth", "comparison"])
def test_final_values_show_mean_and_sd_over_seeds(name, tmp_path, monkeypatch):
    res = multi_seed_results()[name]
    fig, _, _ = _draw(name, res, tmp_path, monkeypatch)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    for tick, c in zip(ticks, res["conditions"].values(), strict=True):
        e = np.array(c["test_error"])
        assert f"{e.mean():.2f} ± {e.std(ddof=1):.2f}" in tick
    # One error bar per condition, as long as the sd over seeds.
    bars = [coll for coll in ax.collections if type(coll).__name__ == "LineCollection"]
    assert len(bars) == len(res["conditions"])
    for coll, c in zip(bars, res["conditions"].values(), strict=True):
        (seg,) = coll.get_segments()
        np.testing.assert_allclose(abs(seg[1, 1] - seg[0, 1]) / 2,
                                   np.std(c["test_error"], ddof=1))
    assert "mean ± sd of" in ax.get_title()


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_shortened_label_survives_several_seeds(name, tmp_path, monkeypatch):
    fig, _, _ = _draw(name, multi_seed_results()[name], tmp_path, monkeypatch)
    assert NOTE in _texts(fig)


def test_seed_mean_uses_the_epochs_all_seeds_reached():
    x, y = common.seed_mean([([1, 2, 3], [10.0, 20.0, 30.0]), ([1, 2], [12.0, 22.0])])
    assert list(x) == [1, 2] and list(y) == [11.0, 21.0]
    x, y = common.seed_mean([([0, 2, 4], [0.0, 2.0, 4.0]), ([1, 3, 5], [2.0, 4.0, 6.0])])
    assert list(x) == [2, 4] and list(y) == [2.5, 4.5]  # no shared x: interpolated
