"""Continuous data (values of any sign): the SYNTHETIC CyTOF stimulation of ``cellw1.datasets``.

For each seed, one data set (``synthetic_cytometry``: 24 markers, ``arcsinh(x / 5)``, four
cell types, the last one unresponsive) is split with the library's own split rule
(``cellw1.eval.splits``); identity, the mean shift and W1 are fitted on the training cells and
predict the held-out controls. Printed per method: the share of negative values of the
prediction against the held-out stimulated cells' (all markers, and the functional markers the
stimulation moves), the share of exact zeros, and MMD / energy distance on all markers
(``cellw1.eval.metrics``). Writes ``benchmarks/results/continuous.json``.

    python -m benchmarks continuous [--seeds 0,1,2]
"""

# %%
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

import cellw1
from cellw1.eval.metrics import compute_metrics
from cellw1.eval.splits import split_group, split_rngs

from ._common import RESULTS, each_seed, load, one_thread, parse, parser, write_json

OUT = RESULTS / "continuous.json"
METHODS = ("identity", "mean_shift", "w1")


def run(seed: int) -> list[dict]:
    """Fit every method on one seed's SYNTHETIC CyTOF split; per method its scores, negative shares and seconds."""
    adata = load("synthetic_cytometry", seed=seed)
    labels = adata.obs["condition"].astype(str).to_numpy()
    functional = adata.var["functional"].to_numpy()
    rows = {}
    for name in ("control", "stimulated"):
        group = np.flatnonzero(labels == name)
        train, test = split_group(group.size, split_rngs(seed, 0, "stimulated")[name == "stimulated"])
        rows[name] = (group[train], group[test])
    train = adata[np.sort(np.concatenate((rows["control"][0], rows["stimulated"][0])))].copy()
    inputs = adata[rows["control"][1]].copy()
    observed = np.asarray(adata.X[rows["stimulated"][1]], dtype=np.float64)
    out = []
    for method in METHODS:
        start = time.perf_counter()
        model = cellw1.fit(train, "condition", "control", "stimulated", method=method, seed=seed, progress=False)
        seconds = time.perf_counter() - start
        predicted = np.asarray(model.predict(inputs).X, dtype=np.float64)
        scores = compute_metrics(predicted, observed, ["mmd", "energy", "r2", "l2"])
        scores.update(
            negative=float((predicted < 0).mean()),
            negative_observed=float((observed < 0).mean()),
            negative_functional=float((predicted[:, functional] < 0).mean()),
            negative_functional_observed=float((observed[:, functional] < 0).mean()),
            zeros=float((predicted == 0).mean()),
            seconds=seconds,
        )
        out.append({"seed": seed, "method": method, **scores})
        print(seed, method, {k: round(v, 4) for k, v in scores.items()}, flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Run each seed, print the median scores per method and write every row."""
    p = parser(__doc__, name="continuous", seeds="0,1,2", out=OUT, quick={"seeds": [0]})
    args = parse(p, argv)
    one_thread()
    rows = [row for found in each_seed(args.seeds, run).values() for row in found]
    table = pd.DataFrame(rows).groupby("method").median(numeric_only=True).drop(columns="seed")
    print(table.round(4).to_string())
    write_json(args.out, {"rows": rows}, args, indent=1)
