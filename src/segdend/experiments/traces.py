"""Voltage traces of the compartments and plateau potentials (Fig. 3C, 9A): an illustration.

After one epoch of training, one test image is presented for a forward phase and then a
target phase (with the teaching current for its label) from a cleared state, with the
reference engine's per-step traces kept; its spike streams are recorded on the way for a
raster. Spiking mode always (rate mode has no time course), whatever the run's mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segdend import plots
from segdend.config import apply_overrides, config_from_dict
from segdend.experiments.base import Experiment, RunDirs
from segdend.experiments.common import base_results, first_run
from segdend.experiments.runs import dataset_for
from segdend.runfiles import config_of, final_params

RASTER_HIDDEN = 40  # hidden neurons in the raster
EXTRA_STEPS = 20  # phases of min_length + this many steps
TRACE_PURPOSE = 5  # purpose path of the spike streams


def record_example(config, params, pixels: np.ndarray, label: int, key: np.uint64,
                   length: int) -> dict[str, Any]:
    """Forward then target phase of one image from a cleared state, spiking, with traces.

    Returns the two :class:`~segdend.engines.base.PhaseSummary` (``fwd``, ``tgt``, each with
    per-step ``traces``) and ``spikes``: (phase, layer) -> (steps, n) spike counts.
    """
    from segdend.engines.reference import ReferenceEngine, poisson_source

    engine = ReferenceEngine(config)
    state = engine.new_state()
    source = poisson_source(key)
    spikes: dict[tuple[int, int], list[np.ndarray]] = {}

    def draw(phase: int, step: int, layer: int, rates: np.ndarray) -> np.ndarray:
        counts = source(phase, step, layer, rates)
        spikes.setdefault((phase, layer), []).append(counts)
        return counts

    fwd = engine.run_phase(params, state, pixels, length, 0, draw, keep_traces=True)
    tgt = engine.run_phase(params, state, pixels, length, 1, draw, label=label,
                           keep_traces=True)
    return {"fwd": fwd, "tgt": tgt,
            "spikes": {k: np.array(v) for k, v in spikes.items()}}


def _raster(counts: np.ndarray, t0: int) -> dict[str, list[int]]:
    t, unit = np.nonzero(counts)
    return {"t": (t + t0).tolist(), "unit": unit.tolist()}


def analyse_traces(exp: Experiment, run_dirs: RunDirs) -> dict[str, Any]:
    from segdend import rng
    from segdend.dynamics import integration_window
    from segdend.train import as_pixels

    res = base_results(exp, run_dirs)
    run_dir = first_run(res, run_dirs, next(iter(exp.conditions)))
    cfg = config_of(run_dir)
    spiking = config_from_dict(apply_overrides(cfg.model_dump(mode="json"),
                                               ['model.mode="spiking"',
                                                'training.engine="reference"']))
    if spiking.model.n_hidden_layers == 0:
        from segdend.errors import SegdendError
        raise SegdendError("the traces experiment needs a network with a hidden layer")
    data = dataset_for(cfg)
    params = final_params(run_dir)
    pixels, label = as_pixels(data.test_images[:1])[0], int(data.test_labels[0])
    length = spiking.phases.min_length + EXTRA_STEPS
    rec = record_example(spiking, params, pixels, label,
                         rng.derive_key(cfg.training.seed, rng.TEST_SPIKES, TRACE_PURPOSE),
                         length)
    fwd, tgt = rec["fwd"], rec["tgt"]

    def both(name: str) -> np.ndarray:
        return np.concatenate([fwd.traces[name], tgt.traces[name]])

    # the plateau that rises most from forward to target phase, the one that falls most, and
    # a typical one: the teaching signal moves plateaus both ways
    change = tgt.alpha[0] - fwd.alpha[0]
    neurons = [int(np.argmax(change)), int(np.argmin(change)),
               int(np.argsort(np.abs(change))[change.size // 2])]
    basal, apical, soma = both("v_basal0"), both("v_apical0"), both("v0")
    hidden = [{"neuron": int(i), "basal": basal[:, i].tolist(), "apical": apical[:, i].tolist(),
               "soma": soma[:, i].tolist(), "alpha_f": float(fwd.alpha[0][i]),
               "alpha_t": float(tgt.alpha[0][i])} for i in neurons]
    top = len(spiking.model.layers) - 1
    out_v = both(f"v{top}")
    others = [j for j in np.argsort(-fwd.vbar[-1]) if j != label]
    units = [label, int(others[0])] if others else [label]
    output = [{"unit": int(j), "soma": out_v[:, j].tolist(), "is_label": int(j) == label}
              for j in units]
    hid_spikes = np.concatenate([rec["spikes"][(0, 1)], rec["spikes"][(1, 1)]])
    out_spikes = np.concatenate([rec["spikes"][(0, top + 1)], rec["spikes"][(1, top + 1)]])
    first, n = integration_window(spiking.phases, length)
    res["conditions"][next(iter(exp.conditions))]["value"] = [None]
    res["traces"] = {
        "label": label, "length": length, "window": [first, n],
        "predicted": int(np.argmax(fwd.vbar[-1])), "hidden": hidden, "output": output,
        "raster_hidden": _raster(hid_spikes[:, :RASTER_HIDDEN], 0),
        "raster_output": _raster(out_spikes, 0),
        "n_raster_hidden": int(min(RASTER_HIDDEN, hid_spikes.shape[1])),
        "n_output": int(out_spikes.shape[1]),
    }
    return res


TRACES = Experiment(
    id="traces",
    title="Voltage traces of the compartments and plateau potentials",
    figure="Fig. 3C, 9A",
    preset="paper-h1",
    conditions={"h1": []},
    epochs=1,
    # one full epoch (about 13% test error): the traces of a network that has learned, as in
    # the paper's figure, at the cost of a minute
    overrides=("training.test_examples=1000",),
    paper_train_examples=None,
    published={"h1": None},
    claim="illustration: apical plateaus at the end of each phase carry the target signal",
    measure="illustration",
    measure_label="(illustration)",
    spiking_only="the traces are always simulated in spiking mode; only training is in rate mode",
    analyse_fn=analyse_traces,
    plot_fn=plots.traces_figure,
)
