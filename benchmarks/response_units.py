"""Whether W1's loss to the mean shift on the response distribution depends on the units or the calibration (issue 24).

Issue 24 measured the IFN-gamma knock-outs' response scores with the controls spreading 0.26-0.41
mean responses; cellw1's default units (counts normalised to the training cells' median total,
then log1p) spread them more. This runs :func:`cellw1.evaluate` (``mean_shift`` and ``w1``, the
evaluation's splits and response gate, ``--splits`` splits) on Papalexi's cells of ``--targets``
in each of these units:

- ``median``: the raw counts, as a user gives them (default preprocessing, calibrated output);
- ``10000``: log1p of counts scaled to 10,000 per cell (Seurat's and many tutorials' units),
  given as log data (calibrated output);
- ``median_raw`` / ``10000_raw``: the same units given as continuous data, so neither method's
  output is calibrated (the median is that of every cell's total here).

It prints, per units, target and metric, the means of both methods, their paired difference
(W1 - mean shift; below 0: W1 closer) and the splits where W1 is closer; and per units and
target the SD of the controls' and the perturbed cells' scores (every cell, along the axis on
the top-50 DE genes in either direction of every cell: the spread the issue reported).

    python -m benchmarks response_units [--targets STAT1,JAK2,IFNGR1,IFNGR2,SMAD4] [--splits 5]
"""

# %%
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scanpy as sc

import cellw1
from cellw1.eval.degenes import top_de_genes
from cellw1.eval.response import ResponseAxis

from ._common import RESULTS, one_thread, papalexi, parse, parser, write_json

logger = logging.getLogger(__name__)
OUT = RESULTS / "response_units.json"
CONTROL, KEY = "non-targeting", "target"
UNITS = ("median", "10000", "median_raw", "10000_raw")
METRICS = ("response_w1", "responder_share_error", "energy", "mmd")


def in_units(adata: sc.AnnData, units: str) -> tuple[sc.AnnData, str]:
    """``adata`` (counts) in ``units``, and the ``input_kind`` to give :func:`cellw1.evaluate`."""
    if units == "median":
        return adata, "auto"
    scale, _, raw = units.partition("_")
    values = adata.copy()
    sc.pp.normalize_total(values, target_sum=None if scale == "median" else float(scale))
    sc.pp.log1p(values)
    return values, "continuous" if raw else "log"


def spreads(values: sc.AnnData, targets: list[str]) -> pd.DataFrame:
    """SD of the controls' and the perturbed cells' response scores per target: every cell, the axis's genes."""
    x = values.X.toarray() if hasattr(values.X, "toarray") else np.asarray(values.X)
    labels = values.obs[KEY].astype(str).to_numpy()
    control, rows = x[labels == CONTROL].astype(np.float64), []
    for target in targets:
        perturbed = x[labels == target].astype(np.float64)
        genes = top_de_genes(control, perturbed, list(values.var_names), 50, direction="either")
        cols = values.var_names.get_indexer(genes)
        axis = ResponseAxis.fit(control[:, cols], perturbed[:, cols])
        sd = {
            name: float(axis.scores(cells[:, cols]).std())
            for name, cells in (("control", control), ("perturbed", perturbed))
        }
        rows.append({"perturbation": target, "control_sd": sd["control"], "perturbed_sd": sd["perturbed"]})
    return pd.DataFrame(rows)


def compare(table: pd.DataFrame) -> pd.DataFrame:
    """Per units, target and metric: both methods' means, the mean paired difference and W1's wins."""
    wide = table.pivot_table(index=["units", "perturbation", "metric", "repeat"], columns="method", values="value")
    wide["difference"] = wide["w1"] - wide["mean_shift"]
    wide["w1_closer"] = wide["difference"] < 0
    grouped = wide.groupby(level=[0, 1, 2], sort=False)
    return grouped[["mean_shift", "w1", "difference"]].mean().join(grouped["w1_closer"].sum())


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate both methods in every units, print the comparison and write every row."""
    p = parser(__doc__, name="response_units", out=OUT, quick={"targets": "STAT1", "splits": 2, "units": "median"})
    p.add_argument("--targets", default="STAT1,JAK2,IFNGR1,IFNGR2,SMAD4")
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--units", default=",".join(UNITS), help=f"comma-separated, of {UNITS}")
    args = parse(p, argv)
    one_thread()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    targets = args.targets.split(",")
    adata = papalexi()
    adata = adata[adata.obs[KEY].astype(str).isin([*targets, CONTROL]).to_numpy()].copy()
    tables, spread = [], []
    for units in args.units.split(","):
        values, kind = in_units(adata, units)
        result = cellw1.evaluate(
            values, KEY, CONTROL, targets, methods=["mean_shift", "w1"], n_splits=args.splits,
            input_kind=kind, metrics=list(METRICS), progress=False,
        )  # fmt: skip
        table = result.table[result.table.metric.isin(METRICS)].assign(units=units)
        tables.append(table)
        if units != "median":  # the counts' default units are those of median_raw
            spread.append(spreads(values, targets).assign(units=units))
        logger.info("%s done", units)
    rows = pd.concat(tables, ignore_index=True)
    summary = compare(rows)
    print(summary.round(4).to_string())
    print(summary.xs("response_w1", level="metric").groupby(level="units", sort=False)["w1_closer"].sum().to_string())
    spread_table = pd.concat(spread, ignore_index=True) if spread else pd.DataFrame()
    print(spread_table.round(3).to_string())
    rows["value"] = rows["value"].astype(np.float64)
    document = {"rows": rows.to_dict(orient="records"), "spreads": spread_table.to_dict(orient="records")}
    write_json(args.out, document, args, indent=1)


if __name__ == "__main__":
    main()
