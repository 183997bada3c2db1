"""Semi-synthetic benchmark with per-cell truth: a known response applied to real control cells.

Real perturbation data never tell which perturbed cell a control cell would have become, so
the usual metrics (MMD, energy distance, mean shift) only compare distributions. Here the
response is known cell by cell, so a prediction can be scored cell by cell.

Data and space
--------------
Control cells only, from the shared data folder (``../shared/data`` from the project root):

* ``zhao``: Zhao 2021 glioblastoma, ``obs['condition'] == 'ctrl'`` (2,500 cells, 300 genes),
  ``layers['logcounts']``; cell states = ``obs['patient_id']`` (5 patients).
* ``kang``: Kang 2018 PBMC, ``obs['condition'] == 'control'`` (936 cells, 6,998 genes, ``X``
  log-normalised); cell states = ``obs['cell_type']`` (7 types).

Each is projected on its top principal components (plain numpy SVD of the centred log
expression of all its control cells; 50 for Zhao, 30 for Kang), and everything below lives
in that space.

The response ``R``
------------------
``R(x) = x + b + sum_k a_k * sigmoid((w_k . x - c_k) / tau_k) * w_k``, ``k = 1..3``:

* ``w_k`` is a unit vector half along the direction from the control mean to the centroid of
  cell state ``k`` (the 3 largest states) and half along a random direction orthogonal to it,
  so the projection ``w_k . x`` that gates the term mostly tells the cell's state, and the
  term moves cells partly off the axes along which control cells vary;
* ``c_k`` is the median of ``w_k . x`` over the control cells and ``tau_k`` 0.3 times its
  standard deviation: a smooth switch that is on for about half of the cells;
* ``a_k = 0.6 * s`` and ``b`` is a random shift of length ``0.3 * s``, ``s`` being the RMS
  distance of the control cells to their mean (the spread of the cells).

So the size of the response (from ``|b|`` to about ``|b| + sum a_k``) and its direction (a
cell-state-dependent mix of ``b`` and the ``w_k``) both depend smoothly on the cell state;
the RMS response comes out near 0.7 ``s`` (printed and stored as ``rms_response_over_spread``).

Why this form: ``R`` is the gradient of the strictly convex function
``|x|^2 / 2 + b . x + sum_k a_k tau_k softplus((w_k . x - c_k) / tau_k)``; its Jacobian
``I + sum_k a_k sigmoid'(.) / tau_k w_k w_k^T`` is symmetric positive definite, so ``R``
never folds space (it is injective and monotone: ``(R(x) - R(y)) . (x - y) > 0``). By
Brenier's theorem it is then *the* quadratic-cost optimal transport map from the control
distribution to its image. Since the three parts of the split below are drawn from the same
cells, the OT map from the training controls to the training perturbed cells is (up to
sampling) ``R`` itself, so the per-cell truth is recoverable in principle. It is not the
only map that pushes one distribution onto the other, and for the W1 cost it need not be the
optimal one (W1 optimal maps are not unique, and W1 transport rays cannot cross, while the
displacement segments of ``R`` may); the per-cell metrics measure exactly how close each
method lands to this particular, "monotone" answer.

Protocol
--------
For each seed, the control cells are split at random into three disjoint thirds: A (training
source, left as they are), B (training target, shown only as ``R(B)``: the pairing is hidden)
and C (test). Each method learns from ``A`` and ``R(B)`` and predicts ``T(C)``, which is
compared with the truth ``R(C)``. Methods, all on the same split and seed:

* ``old_default``: ``W1Config(step_size_learner="minibatch_ot", mask_constant_features=False)``;
* ``new_default``: ``W1Config()`` (``step_size_learner="ot_energy"``);
* ``gan``: ``W1Config(step_size_learner="gan")``;
* ``mean_shift``: ``x + mean(R(B)) - mean(A)``;
* ``discrete_ot``: exact OT (POT ``ot.emd``, uniform weights) between A and ``R(B)`` under the
  *squared* Euclidean cost (the cost for which ``R`` is optimal, so this is a favourable
  reference), each A cell getting its barycentric partner's displacement; a test cell moves
  by the mean displacement of its ``K_NEIGHBOURS`` nearest A cells;
* ``discrete_ot_p1.1``: the same under the cost ``|x - y|^1.1`` (the pairing cost the W1
  step-size learners use; close to W1).

W1 maps are fitted with ``cellw1.fit_map(A, R(B), config, seed=seed)`` (one torch thread).

Metrics (per method and seed, on the test cells C)
-------------------------------------------------
* ``rmse``: ``sqrt(mean_c |T(c) - R(c)|^2)``;
* ``rel_rmse``: ``rmse`` over the RMS true response ``sqrt(mean_c |R(c) - c|^2)`` (predicting
  no response scores 1);
* ``mag_pearson``: Pearson correlation of predicted and true per-cell response magnitudes
  ``|T(c) - c|`` and ``|R(c) - c|`` (undefined for the mean shift, which moves every cell by
  the same vector);
* ``cosine``: mean cosine between predicted and true per-cell displacements;
* ``mag_ratio``: mean predicted over mean true response magnitude;
* ``energy``: :func:`cellw1.eval.metrics.energy_distance` of ``T(C)`` against ``R(C)`` as
  distributions (ignores the pairing);
* ``seconds``: fit time (for the kNN methods, the OT solve and the kNN extrapolation).

Reported: the median over seeds and the worst seed (largest rmse / rel_rmse / energy /
seconds, smallest mag_pearson / cosine, mag_ratio farthest from 1). Two references for the
energy distance are given per data set: no prediction (``C`` against ``R(C)``) and the
sampling floor (``R(C)`` against ``R(B)``, two samples of the same distribution).

Usage
-----
::

    python -m benchmarks semisynthetic [--seeds 0,1,2] [--datasets zhao,kang]

Writes ``benchmarks/results/semisynthetic.json`` and ``semisynthetic.md`` (the printed
markdown tables). About 1.5 minutes on one CPU core with both data sets and 3 seeds.
"""

# %%
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

import cellw1
from cellw1.eval.metrics import energy_distance

from ._common import RESULTS, load, one_thread, parse, parser, write_json, write_text

RESPONSE_SEED = 12345  # the response R is fixed; the seeds change the split and the fits
N_TERMS = 3
GATE_WIDTH = 0.3  # tau_k / std(w_k . x)
TERM_SCALE = 0.6  # a_k / spread
SHIFT_SCALE = 0.3  # |b| / spread
K_NEIGHBOURS = 10
OT_MAX_ITER = 10_000_000

DATASETS = {
    # name of benchmarks._common.DATASETS: (condition key, control label, state key, layer or None, n_components)
    "zhao": ("condition", "ctrl", "patient_id", "logcounts", 50),
    "kang": ("condition", "control", "cell_type", None, 30),
}
METHODS = ("old_default", "new_default", "gan", "mean_shift", "discrete_ot", "discrete_ot_p1.1")
W1_CONFIGS = {
    "old_default": dict(step_size_learner="minibatch_ot", mask_constant_features=False),
    "new_default": {},
    "gan": dict(step_size_learner="gan"),
}
METRICS = ("rmse", "rel_rmse", "mag_pearson", "cosine", "mag_ratio", "energy", "seconds")
LOWER_IS_BETTER = {"rmse", "rel_rmse", "energy", "seconds"}


# %% data
def load_controls(name: str) -> tuple[np.ndarray, np.ndarray]:
    """PCA coordinates ``(n, k)`` of a data set's control cells, and their cell-state labels."""
    import scipy.sparse as sp

    condition, control, state, layer, k = DATASETS[name]
    adata = load(name)
    mask = (adata.obs[condition] == control).to_numpy()
    x = adata.layers[layer] if layer else adata.X
    x = x[mask]
    x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    z = u[:, :k] * s[:k]  # = centred @ V_k^T
    return z, adata.obs[state].to_numpy()[mask].astype(str)


# %% the response
@dataclass
class Response:
    """``R(x) = x + b + sum_k a_k sigmoid((w_k . x - c_k) / tau_k) w_k`` (see the module docstring)."""

    shift: np.ndarray  # b, (d,)
    directions: np.ndarray  # w_k, (K, d), unit rows
    amplitudes: np.ndarray  # a_k, (K,)
    centres: np.ndarray  # c_k, (K,)
    widths: np.ndarray  # tau_k, (K,)
    spread: float
    states: list[str]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``R(x)``: the cells ``x: (n, d)`` after the response."""
        gates = 1.0 / (1.0 + np.exp(-(x @ self.directions.T - self.centres) / self.widths))
        return x + self.shift + (gates * self.amplitudes) @ self.directions

    def gates(self, x: np.ndarray) -> np.ndarray:
        """The sigmoid gates ``(n, K)`` of the cells ``x: (n, d)``, one per term."""
        return 1.0 / (1.0 + np.exp(-(x @ self.directions.T - self.centres) / self.widths))


def make_response(z: np.ndarray, labels: np.ndarray) -> Response:
    """The fixed response of a data set, built from all its control cells and ``RESPONSE_SEED``."""
    rng = np.random.default_rng(RESPONSE_SEED)
    d = z.shape[1]
    mean = z.mean(axis=0)
    spread = float(np.sqrt(np.mean(np.sum((z - mean) ** 2, axis=1))))
    names, counts = np.unique(labels, return_counts=True)
    states = [str(n) for n in names[np.argsort(-counts, kind="stable")][:N_TERMS]]
    directions = []
    for state in states:
        g = z[labels == state].mean(axis=0) - mean
        g /= np.linalg.norm(g)
        r = rng.standard_normal(d)
        r -= (r @ g) * g
        r /= np.linalg.norm(r)
        directions.append((g + r) / np.sqrt(2.0))
    w = np.stack(directions)
    proj = z @ w.T
    shift = rng.standard_normal(d)
    shift *= SHIFT_SCALE * spread / np.linalg.norm(shift)
    return Response(
        shift=shift,
        directions=w,
        amplitudes=np.full(N_TERMS, TERM_SCALE * spread),
        centres=np.median(proj, axis=0),
        widths=GATE_WIDTH * proj.std(axis=0),
        spread=spread,
        states=states,
    )


def check_monotone(response: Response, z: np.ndarray, rng: np.random.Generator, n_pairs: int = 20_000) -> float:
    """Smallest ``(R(x) - R(y)) . (x - y) / |x - y|^2`` over random pairs of cells (>= 1 by construction)."""
    i, j = rng.integers(0, len(z), n_pairs), rng.integers(0, len(z), n_pairs)
    keep = i != j
    dx = z[i[keep]] - z[j[keep]]
    dr = response(z[i[keep]]) - response(z[j[keep]])
    return float(np.min(np.sum(dr * dx, axis=1) / np.sum(dx * dx, axis=1)))


# %% methods
def knn_extrapolate(anchors: np.ndarray, displacement: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Move each row of ``x`` by the mean displacement of its ``k`` nearest anchors."""
    d2 = np.sum(x**2, axis=1)[:, None] - 2.0 * x @ anchors.T + np.sum(anchors**2, axis=1)[None, :]
    nearest = np.argpartition(d2, k, axis=1)[:, :k]
    return x + displacement[nearest].mean(axis=1)


def discrete_ot(source: np.ndarray, target: np.ndarray, test: np.ndarray, exponent: float) -> np.ndarray:
    """Exact OT ``source -> target`` under ``|x - y|^exponent``, barycentric partners, kNN to ``test``."""
    import ot

    cost = ot.dist(source, target, metric="sqeuclidean")
    if exponent != 2.0:
        cost = np.sqrt(np.maximum(cost, 0.0)) ** exponent
    a = np.full(len(source), 1.0 / len(source))
    b = np.full(len(target), 1.0 / len(target))
    plan = ot.emd(a, b, cost, numItermax=OT_MAX_ITER)
    partner = (plan @ target) / plan.sum(axis=1, keepdims=True)
    return knn_extrapolate(source, partner - source, test, K_NEIGHBOURS)


def predict(method: str, a: np.ndarray, rb: np.ndarray, c: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Prediction ``T(C)`` of one method trained on ``A -> R(B)``, and its fit seconds."""
    start = time.perf_counter()
    if method in W1_CONFIGS:
        config = cellw1.W1Config(**W1_CONFIGS[method])
        tmap = cellw1.fit_map(a.astype(np.float32), rb.astype(np.float32), config, seed=seed)
        seconds = time.perf_counter() - start
        return np.asarray(tmap.transport(c.astype(np.float32)), dtype=np.float64), seconds
    if method == "mean_shift":
        pred = c + rb.mean(axis=0) - a.mean(axis=0)
    elif method == "discrete_ot":
        pred = discrete_ot(a, rb, c, 2.0)
    elif method == "discrete_ot_p1.1":
        pred = discrete_ot(a, rb, c, 1.1)
    else:
        raise ValueError(method)
    return pred, time.perf_counter() - start


# %% metrics
def score(c: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    """Per-cell and distributional agreement of ``T(C) = pred`` with ``R(C) = truth``."""
    true_disp, pred_disp = truth - c, pred - c
    true_mag, pred_mag = np.linalg.norm(true_disp, axis=1), np.linalg.norm(pred_disp, axis=1)
    rmse = float(np.sqrt(np.mean(np.sum((pred - truth) ** 2, axis=1))))
    rms_true = float(np.sqrt(np.mean(true_mag**2)))
    pearson = None
    if pred_mag.std() > 1e-9 * max(pred_mag.mean(), 1e-12):
        pearson = float(np.corrcoef(pred_mag, true_mag)[0, 1])
    cos = np.sum(pred_disp * true_disp, axis=1) / np.maximum(pred_mag * true_mag, 1e-12)
    return {
        "rmse": rmse,
        "rel_rmse": rmse / rms_true,
        "mag_pearson": pearson,
        "cosine": float(np.mean(cos)),
        "mag_ratio": float(pred_mag.mean() / true_mag.mean()),
        "energy": energy_distance(pred, truth),
    }


def summarise(rows: list[dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """Median over seeds and the worst seed's value, metric by metric."""
    out: dict[str, dict[str, float | None]] = {}
    for metric in METRICS:
        values = [r[metric] for r in rows if r.get(metric) is not None]
        if not values:
            out[metric] = {"median": None, "worst": None}
            continue
        arr = np.asarray(values, dtype=np.float64)
        if metric in LOWER_IS_BETTER:
            worst = arr.max()
        elif metric == "mag_ratio":
            worst = arr[np.argmax(np.abs(np.log(arr)))]
        else:
            worst = arr.min()
        out[metric] = {"median": float(np.median(arr)), "worst": float(worst)}
    return out


# %% run
def run_dataset(name: str, seeds: list[int]) -> dict:
    """Apply the response to one data set's control cells and score every method over the seeds.

    Each seed splits the cells in three: A is the control input of the fit, R(B) its perturbed cells, and
    the prediction of C is scored against R(C). Returns the response's description, the split sizes,
    the energy references, and per method the rows per seed and their summary.
    """
    z, labels = load_controls(name)
    response = make_response(z, labels)
    truth_all = response(z)
    rms_resp = float(np.sqrt(np.mean(np.sum((truth_all - z) ** 2, axis=1))))
    mags = np.linalg.norm(truth_all - z, axis=1)
    info = {
        "n_cells": int(len(z)),
        "dim": int(z.shape[1]),
        "states": response.states,
        "spread": response.spread,
        "rms_response": rms_resp,
        "rms_response_over_spread": rms_resp / response.spread,
        "response_magnitude_quantiles_over_spread": [
            float(q) for q in np.quantile(mags, [0.05, 0.5, 0.95]) / response.spread
        ],
        "mean_gate": [float(g) for g in response.gates(z).mean(axis=0)],
        "min_monotonicity_ratio": check_monotone(response, z, np.random.default_rng(0)),
    }
    print(f"\n## {name}: {info['n_cells']} control cells, d = {info['dim']}, states {response.states}", flush=True)
    print(
        f"spread {response.spread:.3f}; RMS response {rms_resp:.3f} = {info['rms_response_over_spread']:.2f} x spread; "
        f"magnitudes (5/50/95%) {np.round(info['response_magnitude_quantiles_over_spread'], 2).tolist()} x spread; "
        f"mean gates {np.round(info['mean_gate'], 2).tolist()}; min monotonicity ratio "
        f"{info['min_monotonicity_ratio']:.3f}",
        flush=True,
    )
    per_seed: dict[str, list[dict]] = {m: [] for m in METHODS}
    references = []
    for seed in seeds:
        perm = np.random.default_rng(seed).permutation(len(z))
        part_a, part_b, part_c = np.array_split(perm, 3)
        a, c = z[part_a], z[part_c]
        rb, rc = response(z[part_b]), response(c)
        references.append(
            {
                "seed": seed,
                "energy_no_prediction": energy_distance(c, rc),
                "energy_sampling_floor": energy_distance(rc, rb),
            }
        )
        for method in METHODS:
            torch.manual_seed(seed)
            pred, seconds = predict(method, a, rb, c, seed)
            row = {"seed": seed, **score(c, pred, rc), "seconds": seconds}
            per_seed[method].append(row)
            pear = "   n/a" if row["mag_pearson"] is None else f"{row['mag_pearson']:+.3f}"
            print(
                f"  seed {seed} {method:17s} rel_rmse {row['rel_rmse']:.3f} pearson {pear} cos {row['cosine']:.3f} "
                f"ratio {row['mag_ratio']:.3f} energy {row['energy']:.4f} {seconds:6.1f} s",
                flush=True,
            )
    return {
        "response": info,
        "sizes": {"A": int(len(part_a)), "B": int(len(part_b)), "C": int(len(part_c))},
        "references": references,
        "per_seed": per_seed,
        "summary": {m: summarise(rows) for m, rows in per_seed.items()},
    }


def fmt(entry: dict[str, float | None], digits: int) -> str:
    """``median (worst)`` of a summary entry with ``digits`` decimals, or ``n/a``."""
    if entry["median"] is None:
        return "n/a"
    return f"{entry['median']:.{digits}f} ({entry['worst']:.{digits}f})"


def markdown(results: dict, seeds: list[int], total_seconds: float) -> str:
    """The results of every data set as a markdown page: the response, the references and one table."""
    lines = [
        "# Semi-synthetic benchmark: a known per-cell response on real control cells",
        "",
        f"`benchmarks/semisynthetic.py`, seeds {seeds} (each seed: a new A/B/C split and fit seed). "
        f"Each cell: median over seeds (worst seed). Total run {total_seconds:.0f} s.",
        "",
    ]
    digits = {"rmse": 3, "rel_rmse": 3, "mag_pearson": 3, "cosine": 3, "mag_ratio": 3, "energy": 4, "seconds": 1}
    for name, res in results.items():
        info = res["response"]
        ref = res["references"]
        lines += [
            f"## {name}: {info['n_cells']} control cells, {info['dim']} PCs, "
            f"A/B/C = {res['sizes']['A']}/{res['sizes']['B']}/{res['sizes']['C']}",
            "",
            f"Response gated by states {info['states']}; RMS response {info['rms_response']:.3f} = "
            f"{info['rms_response_over_spread']:.2f} x the cells' spread ({info['spread']:.3f}); per-cell magnitude "
            f"5/50/95% = {', '.join(f'{q:.2f}' for q in info['response_magnitude_quantiles_over_spread'])} x spread.",
            f"Energy distance references (median over seeds): no prediction "
            f"{np.median([r['energy_no_prediction'] for r in ref]):.4f}; sampling floor (R(C) vs R(B)) "
            f"{np.median([r['energy_sampling_floor'] for r in ref]):.4f}.",
            "",
            "| method | RMSE | RMSE / RMS response | magnitude Pearson | mean cosine | mean magnitude ratio "
            "| energy distance | fit s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for method in METHODS:
            s = res["summary"][method]
            lines.append("| " + " | ".join([f"`{method}`"] + [fmt(s[m], digits[m]) for m in METRICS]) + " |")
        lines.append("")
    lines += [
        "RMSE: root mean over test cells of |T(c) - R(c)|^2. Magnitude Pearson: |T(c) - c| against |R(c) - c| "
        "(n/a for the mean shift: one vector for all cells). Mean cosine: between T(c) - c and R(c) - c. "
        "Magnitude ratio: mean |T(c) - c| / mean |R(c) - c|. Worst seed: largest RMSE/energy/seconds, smallest "
        "Pearson/cosine, ratio farthest from 1. `discrete_ot`: exact OT on squared Euclidean cost, "
        f"`discrete_ot_p1.1`: on |x - y|^1.1; both extrapolated to test cells by the mean displacement of "
        f"their {K_NEIGHBOURS} nearest training controls.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run each data set over the seeds and write the results as JSON and markdown."""
    p = parser(__doc__, name="semisynthetic", seeds="0,1,2", out=RESULTS, quick={"seeds": [0], "datasets": "kang"})
    p.add_argument("--datasets", default="zhao,kang", help=f"comma-separated, from {list(DATASETS)}")
    p.add_argument("--tag", default="", help="suffix of the output file names")
    args = parse(p, argv)
    one_thread()
    names = args.datasets.split(",")
    start = time.perf_counter()
    results = {name: run_dataset(name, args.seeds) for name in names}
    total = time.perf_counter() - start
    md = markdown(results, args.seeds, total)
    print("\n" + md)
    payload = {
        "seeds": args.seeds,
        "total_seconds": total,
        "settings": {
            "response_seed": RESPONSE_SEED,
            "n_terms": N_TERMS,
            "gate_width": GATE_WIDTH,
            "term_scale": TERM_SCALE,
            "shift_scale": SHIFT_SCALE,
            "k_neighbours": K_NEIGHBOURS,
            "w1_configs": {m: cellw1.W1Config(**kw).to_dict() for m, kw in W1_CONFIGS.items()},
        },
        "datasets": results,
    }
    write_json(args.out / f"semisynthetic{args.tag}.json", payload, args)
    write_text(args.out / f"semisynthetic{args.tag}.md", md)
