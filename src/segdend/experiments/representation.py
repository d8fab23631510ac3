"""Experiments about what the network learns: t-SNE of test activity (Fig. 6C) and receptive
fields compared with a backprop-trained network (Fig. 7B/C)."""

from __future__ import annotations

from typing import Any

import numpy as np

from segdend import analysis, plots
from segdend.experiments.base import BACKPROP_SEED_OFFSET, Experiment, RunDirs
from segdend.experiments.common import base_results, first_run, usable_runs
from segdend.experiments.runs import dataset_for, n_test_of
from segdend.runfiles import config_of, final_params

TSNE_IMAGES = 1000  # test images embedded (the first N of the run's test set)
TSNE_PURPOSE = 4  # purpose path of the test spike streams used for the activity
RF_SHOWN = 8  # receptive fields drawn, with their best match in the backprop network


# ---------------------------------------------------------------------------------------------
# t-SNE (Fig. 6C)


def test_activity(run_dir, n_images: int) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Activity of the first ``n_images`` test images (each from a cleared state, MODEL.md 9)
    with the run's final weights: the input pixels and each hidden layer's average rates."""
    from segdend.engines.registry import get_engine
    from segdend.train import as_pixels, test_keys

    cfg = config_of(run_dir)
    data = dataset_for(cfg)
    n = min(n_images, n_test_of(cfg, data))
    params = final_params(run_dir)
    pixels = as_pixels(data.test_images[:n])
    keys = test_keys(cfg, (TSNE_PURPOSE, 0), n)
    result = get_engine(cfg).test(params, pixels, keys, hidden=True)
    layers = [pixels, *result.hidden_rates]
    names = ["input"] + [f"hidden {m + 1} ({cfg.model.layers[m]})"
                         for m in range(cfg.model.n_hidden_layers)]
    return layers, np.asarray(data.test_labels[:n]), names


def analyse_tsne(exp: Experiment, run_dirs: RunDirs) -> dict[str, Any]:
    """t-SNE of the first seed's activity (the panels), and the silhouette of every layer's
    embedding for every usable seed (the numbers behind "cleaner layer by layer")."""
    res = base_results(exp, run_dirs)
    cond = next(iter(exp.conditions))
    first = first_run(res, run_dirs, cond)
    panels, by_seed, seeds = [], {}, []
    for run_dir in usable_runs(res, run_dirs.get(cond) or []):
        layers, labels, names = test_activity(run_dir, TSNE_IMAGES)
        seeds.append(config_of(run_dir).training.seed)
        for name, X in zip(names, layers, strict=True):
            emb = analysis.tsne_embedding(X, seed=0)
            quality = analysis.cluster_quality(emb, labels)
            by_seed.setdefault(name, []).append(quality)
            if run_dir == first:
                panels.append({"layer": name, "x": emb[:, 0].tolist(),
                               "y": emb[:, 1].tolist(), "silhouette": quality})
                first_labels = labels
    # The condition's value: silhouette of the top hidden layer's embedding, one per seed.
    res["conditions"][cond]["value"] = list(by_seed[names[-1]])
    res["tsne"] = {"panels": panels, "labels": first_labels.tolist(), "run_dir": str(first),
                   "seeds": seeds, "silhouette_by_seed": by_seed,
                   "cleaner_each_layer": [all(by_seed[a][k] < by_seed[b][k]
                                              for a, b in zip(names, names[1:], strict=False))
                                          for k in range(len(seeds))]}
    return res


TSNE = Experiment(
    id="tsne",
    title="t-SNE of test-set activity: input and hidden layers",
    figure="Fig. 6C",
    preset="paper-h2",
    conditions={"h2": []},
    epochs=60,
    published={"h2": None},
    claim="class clusters become cleaner layer by layer (qualitative)",
    measure="tsne_silhouette",
    measure_label="silhouette of the top hidden layer's t-SNE",
    analyse_fn=analyse_tsne,
    plot_fn=plots.tsne_figure,
)


# ---------------------------------------------------------------------------------------------
# Receptive fields (Fig. 7B/C)


def analyse_receptive_fields(exp: Experiment, run_dirs: RunDirs) -> dict[str, Any]:
    """For each seed pair (local seed k, backprop seed k + offset): the maximum Pearson r of
    every receptive field (row of W[0]) of the local network against all those of the
    backprop network, and the same with each local field's pixels shuffled (control)."""
    res = base_results(exp, run_dirs)
    local, bp = run_dirs["local"], run_dirs["backprop"]
    values, controls, shown = [], [], None
    pairs = [(a, b) for a, b in zip(local, bp, strict=False)
             if usable_runs(res, [a, b]) == [a, b]]
    for i, (run_local, run_bp) in enumerate(pairs):
        A, B = final_params(run_local).W[0], final_params(run_bp).W[0]
        best = analysis.max_correlations(A, B)
        gen = np.random.default_rng(i)
        control = analysis.max_correlations(analysis.shuffle_pixels(A, gen), B)
        values.append(float(best.mean()))
        controls.append(float(control.mean()))
        if i == 0:
            side = int(round(np.sqrt(A.shape[1])))
            corr = analysis.correlation_matrix(A, B)
            order = np.argsort(-best)[:RF_SHOWN]
            shown = {"side": side, "local": A[order].tolist(),
                     "backprop": B[corr[order].argmax(axis=1)].tolist(),
                     "r": best[order].tolist(), "max_r": best.tolist(),
                     "max_r_shuffled": control.tolist()}
    res["conditions"]["local"]["value"] = values
    res["conditions"]["backprop"]["value"] = [None] * len(bp)
    res["receptive_fields"] = {"shown": shown, "mean_max_r": values,
                               "mean_max_r_shuffled": controls}
    return res


RECEPTIVE_FIELDS = Experiment(
    id="receptive_fields",
    title="Receptive fields vs a backprop-trained network",
    figure="Fig. 7B/C",
    preset="paper-h1",
    conditions={"local": [], "backprop": ['training.learning_rule="backprop"']},
    seed_offsets={"backprop": BACKPROP_SEED_OFFSET},
    epochs=60,
    published={"local": None, "backprop": None},
    claim="qualitatively similar receptive fields; maximum correlations far above the "
          "shuffled control",
    measure="rf_mean_max_r",
    measure_label="mean max Pearson r with the backprop network's fields",
    analyse_fn=analyse_receptive_fields,
    plot_fn=plots.receptive_fields_figure,
)
