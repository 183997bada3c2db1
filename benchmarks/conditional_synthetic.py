"""Unseen doses and unseen perturbations for the conditional W1 model, on SYNTHETIC data (issue 14).

- ``doses``: :func:`cellw1.datasets.synthetic_doses` (2 perturbations x doses 1, 3, 10, 30,
  100; Hill curves, state-dependent responses). Dose 10 of every perturbation is left out of
  training; a third of the control cells is held out as the input. The prediction at dose 10
  is compared with the held-out dose-10 cells, against (a) the control cells shifted by the
  linear interpolation (in log dose) of the mean shifts of doses 3 and 30, (b) the model at
  the nearest training dose (30 in log dose), (c) the real cells of that dose, (d) the model's
  network at the code of dose 10 (what an unseen dose got before the dose-response curves),
  (e) the controls shifted by the model's dose-response curve applied to the training doses'
  mean shifts (the same curve, no map: :mod:`cellw1.ot.conditional.dose_response`).
- ``embedding``: :func:`cellw1.datasets.synthetic_embedded_perturbations` (12 perturbations
  whose responses are a smooth function of a 4-number vector each, ``uns["vectors"]``). 3
  perturbations are held out whole; the model (``embedding_key="vectors"``) predicts them from
  their vectors, against identity and the nearest-neighbour perturbation (nearest vector
  among the trained ones): the model's map for it, and its real cells.

Scores: MMD and energy distance on all genes, log-normalised by the model's preprocessing,
seeds 0-2 unless told. Results to ``benchmarks/results/conditional/synthetic.json``.

    python -m benchmarks conditional_synthetic [--parts doses,embedding] [--seeds 0,1,2]
"""

# %%
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from scipy.stats import wilcoxon

import cellw1
from cellw1.eval.metrics import energy_distance, mmd

from ._common import RESULTS, load, one_thread, parse, parser, read_json, write_json

OUT = RESULTS / "conditional"
#: the methods of each part's table, the model first
TABLE_METHODS = {
    "doses": [
        "model",
        "linear_interpolation",
        "model_at_nearest_dose",
        "cells_of_nearest_dose",
        "identity",
        "model_at_code",
        "curve_mean_shift",
    ],
    "embedding": ["model", "neighbour_map", "neighbour_cells", "identity"],
}


def score(pred: np.ndarray, obs: np.ndarray) -> dict[str, float]:
    """MMD and energy distance of predicted cells ``pred`` against observed cells ``obs``."""
    return {"mmd": float(mmd(pred, obs)), "energy": float(energy_distance(pred, obs))}


def split_controls(adata, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of the control rows: two thirds for training, one third as test input."""
    rows = np.flatnonzero(adata.obs["condition"].astype(str).to_numpy() == "control")
    rows = np.random.default_rng(seed).permutation(rows)
    return np.sort(rows[len(rows) // 3 :]), np.sort(rows[: len(rows) // 3])


def run_doses(seed: int, config: cellw1.ConditionalConfig | None = None) -> dict:
    """An unseen dose (10, between the trained 3 and 30) of each perturbation, against the baselines.

    Per perturbation: the scores of the model (with its dose curve, and at the dose code alone), of the
    curve's weighted mean shift, of the log-dose interpolation of the trained shifts, of the nearest
    dose's map and cells, and of the identity.
    """
    adata = load("synthetic_doses", n_control=1500, n_per_dose=400, seed=seed)
    labels, doses = adata.obs["condition"].astype(str).to_numpy(), adata.obs["dose"].to_numpy()
    train_ctrl, test_ctrl = split_controls(adata, seed)
    held = (labels != "control") & (doses == 10.0)
    train = adata[np.sort(np.concatenate([train_ctrl, np.flatnonzero((labels != "control") & ~held)]))].copy()
    model = cellw1.fit_conditional(
        train, "condition", "control", dose_key="dose", seed=seed, config=config, progress=False
    )
    pre = model.preprocessor.transform
    ctrl_in = adata[test_ctrl].copy()
    ctrl_values = pre(ctrl_in.X)
    train_ctrl_mean = pre(adata[train_ctrl].X).mean(0)
    found: dict = {}
    for pert in ("pertA", "pertB"):
        truth = pre(adata[(labels == pert) & held].X)

        def shift(d: float, pert: str = pert) -> np.ndarray:
            return pre(adata[(labels == pert) & (doses == d)].X).mean(0) - train_ctrl_mean

        w = (np.log(10.0) - np.log(3.0)) / (np.log(30.0) - np.log(3.0))
        interpolated = np.maximum(ctrl_values + (1 - w) * shift(3.0) + w * shift(30.0), 0.0)
        nearest = 30.0  # nearer to 10 than 3 in log dose
        curve = model.dose_curves.get(pert)
        curves, model.dose_curves = model.dose_curves, {}
        at_code = model.predict(ctrl_in, perturbation=pert, dose=10.0).X
        model.dose_curves = curves
        found[pert] = {
            "model": score(model.predict(ctrl_in, perturbation=pert, dose=10.0).X, truth),
            "curve": None if curve is None else curve.to_dict(),
            "model_at_code": score(at_code, truth),
            "curve_mean_shift": None
            if curve is None
            else score(
                np.maximum(
                    ctrl_values + sum(a * shift(d) for a, d in zip(curve.weights(10.0), curve.doses, strict=True)), 0.0
                ),
                truth,
            ),
            "linear_interpolation": score(interpolated, truth),
            "model_at_nearest_dose": score(model.predict(ctrl_in, perturbation=pert, dose=nearest).X, truth),
            "cells_of_nearest_dose": score(pre(adata[(labels == pert) & (doses == nearest)].X), truth),
            "identity": score(ctrl_values, truth),
        }
    return found


def run_embedding(seed: int, config: cellw1.ConditionalConfig | None = None) -> dict:
    """Three perturbations never trained, reached through their vectors: the model against its nearest neighbour.

    Per held-out perturbation: the scores of the model, of the nearest trained perturbation's map and
    cells (by vector distance), and of the identity.
    """
    adata = load("synthetic_embedded_perturbations", n_control=1500, n_perturbed=300, seed=seed)
    labels = adata.obs["condition"].astype(str).to_numpy()
    names = sorted(adata.uns["vectors"])
    held_out = sorted(np.random.default_rng(seed).choice(names, size=3, replace=False).tolist())
    trained = [n for n in names if n not in held_out]
    train_ctrl, test_ctrl = split_controls(adata, seed)
    train = adata[np.sort(np.concatenate([train_ctrl, np.flatnonzero(np.isin(labels, trained))]))].copy()
    model = cellw1.fit_conditional(
        train, "condition", "control", embedding_key="vectors", seed=seed, config=config, progress=False
    )
    pre = model.preprocessor.transform
    ctrl_in = adata[test_ctrl].copy()
    vectors = {n: np.asarray(adata.uns["vectors"][n]) for n in names}
    found: dict = {}
    for pert in held_out:
        truth = pre(adata[labels == pert].X)
        neighbour = min(trained, key=lambda n: np.linalg.norm(vectors[n] - vectors[pert]))
        found[pert] = {
            "neighbour": neighbour,
            "model": score(model.predict(ctrl_in, perturbation=pert).X, truth),
            "neighbour_map": score(model.predict(ctrl_in, perturbation=neighbour).X, truth),
            "neighbour_cells": score(pre(adata[labels == neighbour].X), truth),
            "identity": score(pre(ctrl_in.X), truth),
        }
    return found


def table(found: dict, methods: list[str]) -> str:
    """Median MMD and energy per method over seeds and perturbations; how often the model's MMD is lower."""
    cases = [case for per_seed in found.values() for case in per_seed.values()]
    methods = [m for m in methods if all(c[m] is not None for c in cases)]
    lines = [
        "| method | median MMD | median energy | model's MMD lower in | energy lower in | Wilcoxon p (MMD) |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        if m == "model":
            lines.append(
                f"| model | {np.median([c[m]['mmd'] for c in cases]):.4g} | "
                f"{np.median([c[m]['energy'] for c in cases]):.4g} | | | |"
            )
            continue
        wins = {k: sum(c["model"][k] < c[m][k] for c in cases) for k in ("mmd", "energy")}
        # one-sided paired test: is the model's MMD lower than this method's?
        p = wilcoxon([c["model"]["mmd"] - c[m]["mmd"] for c in cases], alternative="less").pvalue
        lines.append(
            f"| {m} | {np.median([c[m]['mmd'] for c in cases]):.4g} | {np.median([c[m]['energy'] for c in cases]):.4g} "
            f"| {wins['mmd']}/{len(cases)} | {wins['energy']}/{len(cases)} | {p:.2g} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run each part over the seeds, write the results and print a table per part."""
    quick = {"seeds": [0], "config": json.dumps({"potential_iters": 50, "regression_iters": 20, "energy_iters": 20})}
    p = parser(__doc__, name="conditional_synthetic", seeds="0,1,2", out=OUT, quick=quick)
    p.add_argument("--parts", default="doses,embedding")
    p.add_argument(
        "--config", default="{}", help="ConditionalConfig fields as JSON, e.g. '{\"regression_iters\": 1000}'"
    )
    args = parse(p, argv)
    config = cellw1.ConditionalConfig(**json.loads(args.config))
    one_thread()
    path = args.out / "synthetic.json"
    results = read_json(path)
    for part in args.parts.split(","):
        run = {"doses": run_doses, "embedding": run_embedding}[part]
        results[part] = {str(seed): run(seed, config) for seed in args.seeds}
        write_json(path, results, args)
        print(part, "\n" + table(results[part], TABLE_METHODS[part]), flush=True)
