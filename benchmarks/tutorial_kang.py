"""Tutorial: predict how CD4 T cells respond to interferon-beta without ever seeing them stimulated.

The worked example of docs/tutorial.md, on Kang et al. 2018 (PBMCs, control vs IFN-beta).
It prints every number of the tutorial and writes its figures to docs/figures/. Run it from
the project root, with the shared data beside the project (``../shared/data``, or the path
in the environment variable ``KANG_H5AD``)::

    python benchmarks/tutorial_kang.py > benchmarks/results/tutorial_kang.txt

The saved output is what tests/test_docs.py holds the page's printed numbers to: rerun the
script this way after a change that moves them, and update the page where the test fails.

The file is a plain script in cells (``# %%``, the jupytext percent format): VS Code,
PyCharm or ``jupytext --to notebook`` open it as a notebook.
"""

# %% 1. Load the data
import os
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

import cellw1

DATA = Path(os.environ.get("KANG_H5AD", "../shared/data/kang2018_pbmc_ifnb.h5ad"))
FIGURES = Path("docs/figures")
HELD_OUT = "CD4T"  # the cell type whose stimulated cells the model never sees
MEAN_SHIFT = "mean_shift"  # the mean-shift baseline (a shift of every cell by the mean change)
start = time.perf_counter()

if not DATA.exists():
    raise SystemExit(f"{DATA} not found: run from the project root with ../shared/data beside it, or set KANG_H5AD.")
adata = ad.read_h5ad(DATA)  # X is log-normalised expression, 6,998 genes
print(f"{adata.n_obs} cells x {adata.n_vars} genes")
print(pd.crosstab(adata.obs["cell_type"], adata.obs["condition"]))

# %% 2. Fit on everything but the stimulated CD4 T cells
is_type = (adata.obs["cell_type"] == HELD_OUT).to_numpy()
is_stim = (adata.obs["condition"] == "stimulated").to_numpy()
train = adata[~(is_type & is_stim)]
control_cells, stimulated_cells = adata[is_type & ~is_stim], adata[is_type & is_stim]

w1 = cellw1.fit(train, "condition", "control", "stimulated", space="pca", seed=0, progress=False)
shift = cellw1.fit(train, "condition", "control", "stimulated", method=MEAN_SHIFT, seed=0, progress=False)
print(f"trained on {train.n_obs} cells; predicting {control_cells.n_obs} control {HELD_OUT} cells")
FIGURES.mkdir(parents=True, exist_ok=True)
fig = cellw1.pl.history(w1, save=FIGURES / "tutorial_history.png")  # how the two training phases went

# %% 3. Predict the stimulated state of the control CD4 T cells
predictions = {"W1": w1.predict(control_cells), "mean shift": shift.predict(control_cells)}
pred = predictions["W1"]
print(pred)  # a new AnnData: one predicted cell per input cell, same genes, log-normalised

# %% 4. Compare with the real stimulated CD4 T cells
# Every array on one scale: the model's log-normalised expression of its genes.
control = w1.preprocess(control_cells)
observed = w1.preprocess(stimulated_cells)
predicted = {"no change": control, **{name: np.asarray(p.X) for name, p in predictions.items()}}

# The genes that respond in CD4 T cells: scanpy's Wilcoxon test, stimulated vs control.
cd4t = adata[is_type].copy()
sc.tl.rank_genes_groups(cd4t, "condition", groups=["stimulated"], reference="control", method="wilcoxon")
de_genes = list(cd4t.uns["rank_genes_groups"]["names"]["stimulated"][:50])
de = pd.Index(w1.features).get_indexer(de_genes)
print("top DE genes:", ", ".join(de_genes[:10]))

observed_change = observed.mean(0) - control.mean(0)
rows = []
for name, cells in predicted.items():
    change = cells.mean(0) - control.mean(0)
    rows.append(
        {
            "prediction": name,
            "pearson_delta": np.corrcoef(change, observed_change)[0, 1] if change.any() else np.nan,
            "r2 (50 DE genes)": cellw1.metrics.r2(cells[:, de], observed[:, de]),
            "mmd (50 DE genes)": cellw1.metrics.mmd(cells[:, de], observed[:, de]),
            "energy (50 DE genes)": cellw1.metrics.energy_distance(cells[:, de], observed[:, de]),
        }
    )
scores = pd.DataFrame(rows).set_index("prediction")
print(scores.to_string(float_format="{:.4f}".format))

# How strongly each cell type answers: the observed change of ISG15's mean, stimulated - control.
isg15 = adata[:, "ISG15"].X.toarray().ravel()
by_type = pd.DataFrame({"ISG15": isg15, "cell_type": adata.obs["cell_type"].to_numpy(), "stimulated": is_stim})
means = by_type.groupby(["cell_type", "stimulated"], observed=True)["ISG15"].mean().unstack()
print("ISG15 change:", ", ".join(f"{t} {d:.2f}" for t, d in (means[True] - means[False]).items()))
gene = w1.features.index("ISG15")
print(
    f"ISG15 change predicted for {HELD_OUT}:",
    ", ".join(f"{name} {cells[:, gene].mean() - control[:, gene].mean():.2f}" for name, cells in predicted.items()),
)

# %% 5. Figures: per-gene change and the cells on a PCA
fig = cellw1.pl.mean_change(
    control,
    {k: v for k, v in predicted.items() if k != "no change"},
    observed,
    gene_names=w1.features,
    n_labels=6,
    save=FIGURES / "tutorial_mean_change.png",
)
fig = cellw1.pl.embedding(
    control[:, de],
    {k: v[:, de] for k, v in predicted.items() if k != "no change"},
    observed[:, de],
    title=f"{HELD_OUT}, 50 DE genes",
    save=FIGURES / "tutorial_embedding.png",
)

# %% 6. The evaluation protocol: CD4 T cells held out, three fits, every metric
report = cellw1.evaluate(
    adata,
    "condition",
    "control",
    methods=["identity", MEAN_SHIFT, "w1"],
    space="pca",
    holdout=("cell_type", HELD_OUT),
    n_splits=3,
    progress=False,
)
summary = report.summary().pivot(index="method", columns="metric", values="median")
print(summary[["r2", "l2", "mmd", "energy", "w1"]].to_string(float_format="{:.4g}".format))
print("seconds per fit:", ", ".join(f"{method} {seconds:.2g}" for method, seconds in summary["seconds"].items()))
fig = cellw1.pl.metric_bars(
    report,
    metrics=["r2", "mmd", "energy"],
    title=f"{HELD_OUT} held out (3 fits)",
    save=FIGURES / "tutorial_metrics.png",
)
print(f"whole tutorial: {time.perf_counter() - start:.0f} s")
