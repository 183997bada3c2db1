"""The screen workflow (issue 23) against the truth of SYNTHETIC screens, the tail of its test, and Papalexi.

    python -m benchmarks screen synthetic --perturbations 1000 --controls 10000 --genes 300 --seeds 0,1,2
    python -m benchmarks screen tail --seeds 0,1 --potential-iters 50
    python -m benchmarks screen papalexi

``synthetic``: per seed, a :func:`cellw1.datasets.synthetic_screen` (SYNTHETIC) and
:func:`cellw1.screen` on it; prints the FDR of the calls at q <= 0.05, the KS test of the null
perturbations' p-values, the power by effect (in noise units: the responders' mean shift in the
reference's whitened coordinates) and by cells, the median AUROC of the responder scores
against the true responders (perturbations with effect >= 2x noise; also for the conditional
model's potential, measured for comparison), and the ARI of the clusters against the true groups
among the called perturbations with an effect. ``tail``: per seed, the rate of p-values below 1e-2,
1e-3, 1e-4 and the KS p for random groups of 20, 60 and 200 control cells outside the reference
(the null, in the fitted space; the reference is redrawn ``--references`` times), for the F test
alone and the test with the reference's cumulants (the calls do not depend on
``--potential-iters``: they are made before training).
``papalexi``: the 25 targets of Papalexi et al. 2021 (../shared/data): calls, responder
shares, nearest neighbours. Results are written to benchmarks/results/screen/ (``--out``),
figures to docs/figures/ (``--figures``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import adjusted_rand_score, roc_auc_score

import cellw1
from cellw1.ot.screen_test import REFERENCE_CELLS, ControlReference, response_p_value
from cellw1.tl.screen import nearest

from ._common import QUICK_RESULTS, RESULTS, ROOT, load, one_thread, papalexi, parse, parser, write_json

FIGURES = ROOT / "docs" / "figures"
CONTROL = "non-targeting"


def _fitted(result: cellw1.ScreenResult, x: np.ndarray) -> np.ndarray:
    model = result.model
    return model.embedding.encode(model.preprocessor.transform(x))


def evaluate_synthetic(adata, result: cellw1.ScreenResult) -> tuple[dict, pd.DataFrame]:
    """The screen's calls, responders and clusters against the truth of the synthetic screen."""
    truth = adata.uns["screen_truth"]
    order = {p: i for i, p in enumerate(truth["perturbation"])}
    table = result.table.copy()
    index = [order[p] for p in table.index]
    table["effect"], table["group"] = truth["effect"][index], truth["group"][index]
    labels = adata.obs["perturbation"].to_numpy()
    responded = adata.obs["responded"].to_numpy()
    ref = result.reference
    noise, auroc, auroc_potential = [], [], []
    for name in table.index:
        rows = np.flatnonzero(labels == name)
        z = _fitted(result, adata.X[rows])
        white = (z - ref.mean) @ ref.whiten
        moved = responded[rows]
        noise.append(float(np.linalg.norm(white[moved].mean(0))) if moved.any() else 0.0)
        if table.loc[name, "called"] and 0 < moved.sum() < len(rows) and noise[-1] >= 2:
            scores = result.cells.loc[adata.obs_names[rows], "response_score"].to_numpy()
            auroc.append(roc_auc_score(moved, scores))
            f = np.asarray(result.model.map.potential(z, result.model.condition(name)))
            auroc_potential.append(roc_auc_score(moved, -f))
    table["effect_noise"] = noise
    null, called = table["effect"].to_numpy() == 0, table["called"].to_numpy()
    found = called & ~null
    summary = {
        "perturbations": len(table),
        "with_effect": int((~null).sum()),
        "called": int(called.sum()),
        "false_calls": int((called & null).sum()),
        "fdr": float((called & null).sum() / max(called.sum(), 1)),
        "power": float(found.sum() / max((~null).sum(), 1)),
        "null_ks_p": float(stats.kstest(table["p_value"][null], "uniform").pvalue),
        "null_share_p_below_0.05": float((table["p_value"][null] <= 0.05).mean()),
        "min_p": float(table["p_value"].min()),
        "auroc_median_effect_ge_2x_noise": float(np.median(auroc)) if auroc else None,
        "auroc_share_ge_0.9": float(np.mean(np.array(auroc) >= 0.9)) if auroc else None,
        "auroc_n": len(auroc),
        "auroc_potential_median": float(np.median(auroc_potential)) if auroc_potential else None,
        "ari_called_with_effect": float(adjusted_rand_score(table["group"][found], table["cluster"][found])),
        "clusters": int(table["cluster"].max() + 1),
        "seconds": result.model.info["screen_seconds"],
    }
    return summary, table


def power_tables(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Power of the calls by effect (noise units) and by cells, among perturbations with an effect."""
    effect = table[table["effect"] > 0]
    by_effect = effect.groupby(pd.cut(effect["effect_noise"], [0, 0.5, 1, 2, 4, np.inf]), observed=True)["called"]
    by_cells = effect.groupby(pd.cut(effect["cells"], [0, 40, 80, 160, np.inf]), observed=True)["called"]
    return by_effect.agg(["mean", "size"]), by_cells.agg(["mean", "size"])


def run_synthetic(args: argparse.Namespace) -> None:
    """Screen each seed's SYNTHETIC data set, score it against the truth, and write the power tables and figures."""
    rows, tables = [], []
    for seed in args.seeds:
        adata = load("synthetic_screen", args.perturbations, args.controls, args.genes, seed=seed)
        result = cellw1.screen(adata, "perturbation", CONTROL, seed=seed, progress=False, config=_config(args))
        summary, table = evaluate_synthetic(adata, result)
        summary["seed"] = seed
        print(json.dumps(summary), flush=True)
        rows.append(summary)
        tables.append(table.assign(seed=seed))
        if seed == args.seeds[0]:
            cellw1.pl.screen_effects(result, save=args.figures / "screen_effects.png")
            cellw1.pl.screen_map(result, save=args.figures / "screen_map.png")
    both = pd.concat(tables)
    by_effect, by_cells = power_tables(both)
    print("power by effect (noise units), all seeds:\n" + by_effect.to_string())
    print("power by cells, all seeds:\n" + by_cells.to_string())
    pd.DataFrame(rows).to_csv(args.out / f"synthetic_{args.perturbations}.csv", index=False)
    both.to_csv(args.out / f"synthetic_{args.perturbations}_perturbations.csv")
    _power_figure(by_effect, by_cells, args.figures)


def _power_figure(by_effect: pd.DataFrame, by_cells: pd.DataFrame, figures: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3))
    FigureCanvasAgg(fig)
    for axis, frame, xlabel in zip(
        fig.subplots(1, 2), (by_effect, by_cells), ("effect (noise units)", "cells"), strict=True
    ):
        axis.bar([str(i) for i in frame.index], frame["mean"], color="#1f77b4")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("power at q <= 0.05")
        axis.set_ylim(0, 1)
        axis.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    cellw1.pl.save_figure(fig, figures / "screen_power.png")


def run_tail(args: argparse.Namespace) -> None:
    """Null p-values of random control groups, each against a reference drawn from the other controls.

    Per seed, the controls in the fitted space are split ``--references`` times into a random
    reference of ``REFERENCE_CELLS`` cells and the rest; groups of 20, 60 and 200 cells are drawn
    from the rest. Resampling the reference averages over its own sampling error, which the test's
    p-values include (with one reference, every group shares its offset). Both tests on the same
    groups: ``F`` (the F test alone, the test before the cumulants) and ``cumulants``
    (:func:`~cellw1.ot.screen_test.response_p_value`).
    """
    out = []
    for seed in args.seeds:
        adata = load("synthetic_screen", 50, args.controls, args.genes, seed=seed)
        result = cellw1.screen(adata, "perturbation", CONTROL, seed=seed, progress=False, config=_config(args))
        cells = _fitted(result, adata.X[adata.obs["perturbation"].to_numpy() == CONTROL])
        rng = np.random.default_rng(seed)
        p: dict[tuple[int, str], list[np.ndarray]] = {}
        for _ in range(args.references):
            order = rng.permutation(len(cells))
            ref = ControlReference(cells[order[:REFERENCE_CELLS]])
            white = (cells[order[REFERENCE_CELLS:]] - ref.mean) @ ref.whiten
            m, d = ref.n_cells, ref.rank
            for n in (20, 60, 200):
                groups = [rng.choice(len(white), n, replace=False) for _ in range(args.draws // args.references)]
                t2 = np.concatenate([_statistic(white, block, m) for block in np.array_split(np.stack(groups), 20)])
                p.setdefault((n, "F"), []).append(stats.f.sf((m - d) / (d * (m - 1)) * t2, d, m - d))
                p.setdefault((n, "cumulants"), []).append(response_p_value(ref, t2, n))
        for (n, test), values in p.items():
            out.append(_tail_row(np.concatenate(values), seed=seed, cells=n, test=test, references=args.references))
    pd.DataFrame(out).to_csv(args.out / "tail.csv", index=False)


def _tail_row(p: np.ndarray, **labels: Any) -> dict[str, Any]:
    """Draws, KS p and the rates of p-values below 1e-2, 1e-3, 1e-4 of null p-values ``p``, logged."""
    row = {**labels, "draws": len(p), "ks_p": float(stats.kstest(p, "uniform").pvalue)}
    row.update({f"rate_below_{level:g}": float((p <= level).mean()) for level in (1e-2, 1e-3, 1e-4)})
    print(json.dumps(row), flush=True)
    return row


def _statistic(white: np.ndarray, groups: np.ndarray, reference_cells: int) -> np.ndarray:
    """Hotelling's ``T^2`` of each group of rows ``groups: (k, n)`` of whitened cells against the reference."""
    n = groups.shape[1]
    mean = white[groups].mean(1)
    return np.einsum("ij,ij->i", mean, mean) / (1.0 / n + 1.0 / reference_cells)


def run_papalexi(args: argparse.Namespace) -> None:
    """Screen Papalexi 2021, print its table and nearest neighbours of the IFN-gamma pathway, save table and map."""
    adata = papalexi()
    result = cellw1.screen(adata, "target", CONTROL, seed=args.seed, progress=False, config=_config(args))
    table = result.table.sort_values("p_value")
    print(
        table[
            ["cells", "w1", "energy", "p_value", "q_value", "called", "responder_share", "cluster", "top_genes"]
        ].to_string()
    )
    for name in ("IFNGR1", "IFNGR2", "JAK2", "STAT1"):
        print(name, "nearest:", nearest(result, name, k=3))
    table.to_csv(args.out / "papalexi.csv")
    cellw1.pl.screen_map(result, save=args.figures / "screen_papalexi_map.png")


def _config(args: argparse.Namespace) -> cellw1.ConditionalConfig:
    if args.full:
        return cellw1.ConditionalConfig()
    return cellw1.ConditionalConfig(potential_iters=args.potential_iters, regression_iters=100, energy_iters=100)


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``synthetic``, ``tail`` or ``papalexi`` and record its seconds."""
    quick = {
        "seeds": [0],
        "perturbations": 30,
        "controls": 1_000,
        "genes": 50,
        "draws": 200,
        "references": 2,
        "potential_iters": 50,
        "figures": QUICK_RESULTS / "screen" / "figures",
    }
    p = parser(__doc__, name="screen", seeds="0", seed=0, out=RESULTS / "screen", quick=quick)
    p.add_argument("what", choices=("synthetic", "tail", "papalexi"))
    p.add_argument("--perturbations", type=int, default=1_000)
    p.add_argument("--controls", type=int, default=10_000)
    p.add_argument("--genes", type=int, default=300)
    p.add_argument("--draws", type=int, default=100_000, help="null groups per size and seed (tail)")
    p.add_argument("--references", type=int, default=20, help="references drawn per seed (tail)")
    p.add_argument(
        "--potential-iters", type=int, default=600, help="phase-1 steps (shortened; step size 100 + 100 steps)"
    )
    p.add_argument("--full", action="store_true", help="ConditionalConfig's own defaults")
    p.add_argument("--figures", type=Path, default=FIGURES, help="folder of the figures (%(default)s)")
    args = parse(p, argv)
    one_thread()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    {"synthetic": run_synthetic, "tail": run_tail, "papalexi": run_papalexi}[args.what](args)
    write_json(args.out / f"run_{args.what}.json", {"seconds": time.perf_counter() - start}, args)
    print(f"done in {time.perf_counter() - start:.0f} s")
