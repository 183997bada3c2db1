"""Throughput of ``fit_all`` on a SYNTHETIC screen: perturbations per core-minute, per mode, with held-out quality.

A :func:`cellw1.datasets.synthetic_screen` (SYNTHETIC; ``--perturbations`` perturbations of
~150 training cells, ``--controls`` controls, ``--genes`` genes, PCA 50) is split once: a
seeded quarter of every group's cells is held out. Each mode then fits every perturbation
with :func:`cellw1.fit_all` (W1, in this process, one torch thread, one BLAS thread), in one
run so that the ratios share the machine's load:

- ``per_perturbation``: the default, a normalisation and PCA per perturbation;
- ``shared_space``: ``shared_space=True``, one normalisation and PCA for the screen;
- ``screen_config``: ``shared_space=True`` and :data:`SCREEN_CONFIG` (fewer steps).

Per mode: wall and CPU seconds (the CPU seconds of this process are less sensitive to the
other jobs of a shared machine), seconds per perturbation and perturbations per core-minute
(wall and CPU), the load average before and after; and the quality: for each perturbation
with an effect, the MMD (:func:`cellw1.eval.metrics.mmd`) between its held-out cells and the
model's prediction for the held-out controls, and the distance between their means, in one
reference PCA for every mode (fitted on the training cells), with identity (the controls
unchanged) for scale.

    python -m benchmarks fit_all_throughput
    python -m benchmarks fit_all_throughput --perturbations 40 --modes per_perturbation,shared_space
    python -m benchmarks fit_all_throughput --quick
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import cellw1
from cellw1.eval.metrics import mmd

from ._common import RESULTS, markdown_table, one_thread, parse, parser, write_json, write_text

OUT = RESULTS / "fit_all_throughput.json"
KEY, CONTROL = "perturbation", "non-targeting"
#: fewer steps for a screen's separate maps (measured here against the default)
SCREEN_CONFIG = cellw1.W1Config(potential_iters=250, step_iters=500, regression_iters=150, energy_iters=250)
MODES: dict[str, tuple[bool, cellw1.W1Config | None]] = {
    "per_perturbation": (False, None),
    "shared_space": (True, None),
    "screen_config": (True, SCREEN_CONFIG),
}
#: cells of each side of the MMD (seeded draw)
MMD_CELLS = 300


def held_out(adata: Any, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of every group's cells, as a boolean mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(adata.n_obs, dtype=bool)
    for label in adata.obs[KEY].cat.categories:
        rows = np.flatnonzero((adata.obs[KEY] == label).to_numpy())
        mask[rng.choice(rows, size=int(round(fraction * len(rows))), replace=False)] = True
    return mask


def reference_pca(train: Any, n_components: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Mean and components of a PCA of log1p(counts scaled to 10,000) of the training cells."""
    x = _log_normalised(np.asarray(train.X))
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:n_components].T


def _log_normalised(counts: np.ndarray) -> np.ndarray:
    return np.log1p(1e4 * counts / counts.sum(1, keepdims=True))


def quality(collection: cellw1.ModelCollection, test: Any, effect: dict[str, float], pca: tuple) -> dict[str, Any]:
    """MMD of each perturbation with an effect: prediction for the held-out controls vs its held-out cells."""
    mean, components = pca
    controls = test[test.obs[KEY] == CONTROL]
    found: dict[str, dict[str, float]] = {}
    for label, model in collection.items():
        if effect[label] <= 0:
            continue
        observed = model.preprocessor.transform(np.asarray(test[test.obs[KEY] == label].X))
        predicted = np.asarray(model.predict(controls).X)
        unchanged = model.preprocessor.transform(np.asarray(controls.X))
        target = (observed - mean) @ components
        found[label] = {}
        for name, cells in (("model", predicted), ("identity", unchanged)):
            z = (cells - mean) @ components
            found[label][name] = mmd(z, target, max_points=MMD_CELLS)
            found[label][f"{name}_mean_error"] = float(np.linalg.norm(z.mean(0) - target.mean(0)))

    def median(key: str) -> float | None:
        return float(np.median([v[key] for v in found.values()])) if found else None

    return {
        "per_perturbation": found,
        "median_mmd": median("model"),
        "median_mmd_identity": median("identity"),
        "median_mean_error": median("model_mean_error"),
        "median_mean_error_identity": median("identity_mean_error"),
    }


def run_mode(name: str, train: Any, labels: list[str], seed: int) -> tuple[cellw1.ModelCollection, dict[str, Any]]:
    """Fit every perturbation in mode ``name``; its seconds, throughput and load."""
    shared, config = MODES[name]
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    collection = cellw1.fit_all(
        train, KEY, CONTROL, labels, space="pca", config=config, seed=seed, shared_space=shared, progress=False
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(collection)
    record = {
        "shared_space": shared,
        "config": (config or cellw1.W1Config()).to_dict(),
        "fitted": n,
        "failures": collection.failures,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "seconds_per_perturbation": wall / n,
        "cpu_seconds_per_perturbation": cpu / n,
        "per_core_minute": 60 * n / wall,
        "per_cpu_minute": 60 * n / cpu,
        "fit_seconds_median": float(np.median([m.info["fit_seconds"] for m in collection.values()])),
        "with_response": sum(m.method.has_response for m in collection.values()),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    print(
        f"{name}: {n} perturbations in {wall:.1f} s wall, {cpu:.1f} s CPU: {wall / n:.2f} s each, "
        f"{record['per_core_minute']:.1f} per core-minute ({record['per_cpu_minute']:.1f} per CPU-minute); "
        f"load {load_before:.2f} -> {record['load_after']:.2f}",
        flush=True,
    )
    return collection, record


def main(argv: Sequence[str] | None = None) -> None:
    """Fit the screen in every mode, measure throughput and held-out MMD, write the results."""
    p = parser(__doc__, name="fit_all_throughput", seed=0, out=OUT, quick={"perturbations": 3, "genes": 200})
    p.add_argument("--perturbations", type=int, default=30)
    p.add_argument("--controls", type=int, default=4000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    args = parse(p, argv)
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        p.error(f"unknown modes {unknown}; choose among {list(MODES)}")
    one_thread()
    # ~200 cells per perturbation, a quarter held out: ~150 to fit
    adata = cellw1.datasets.synthetic_screen(
        args.perturbations, args.controls, args.genes, mean_cells=200, cells_range=(130, 270), seed=args.seed
    )
    truth = adata.uns["screen_truth"]
    effect = dict(zip(truth["perturbation"], np.asarray(truth["effect"], dtype=float), strict=True))
    test_mask = held_out(adata, 0.25, args.seed)
    train, test = adata[~test_mask].copy(), adata[test_mask].copy()
    labels = [str(p) for p in truth["perturbation"]]
    cells = train.obs[KEY].value_counts()
    print(f"{len(labels)} perturbations, median {cells[labels].median():.0f} training cells, {cells[CONTROL]} controls")
    pca = reference_pca(train)
    results: dict[str, Any] = {}
    for name in modes:
        collection, record = run_mode(name, train, labels, args.seed)
        record["quality"] = quality(collection, test, effect, pca)
        q = record["quality"]
        print(
            f"  median MMD {q['median_mmd']:.4g}, mean error {q['median_mean_error']:.3g} (with an effect)", flush=True
        )
        results[name] = record
    payload = {
        "data": "SYNTHETIC: cellw1.datasets.synthetic_screen",
        "perturbations": len(labels),
        "with_effect": sum(effect[p] > 0 for p in labels),
        "training_cells_median": float(cells[labels].median()),
        "controls": int(cells[CONTROL]),
        "genes": args.genes,
        "space": "pca (50)",
        "threads": "1 torch thread, OMP_NUM_THREADS=1",
        "modes": results,
    }
    write_json(args.out, payload, args)
    write_text(args.out.with_suffix(".md"), table(results) + "\n")


def table(results: dict[str, Any]) -> str:
    """A markdown table of the modes."""
    rows = [
        [
            name,
            f"{r['seconds_per_perturbation']:.2f}",
            f"{r['per_core_minute']:.1f}",
            f"{r['per_cpu_minute']:.1f}",
            r["quality"]["median_mmd"],
            r["quality"]["median_mmd_identity"],
            r["quality"]["median_mean_error"],
            r["quality"]["median_mean_error_identity"],
            f"{r['load_before']:.1f} / {r['load_after']:.1f}",
        ]
        for name, r in results.items()
    ]
    header = [
        "mode",
        "s / perturbation",
        "per core-minute",
        "per CPU-minute",
        "median MMD",
        "identity",
        "mean error",
        "identity",
        "load",
    ]
    return markdown_table(header, rows)
