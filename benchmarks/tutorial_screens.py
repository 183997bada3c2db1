"""Tutorial: screen many perturbations at once, on a SYNTHETIC screen with its truth and on Papalexi's 25 targets.

The worked example of docs/screens.md. It prints every number of the tutorial and writes its
figure to docs/figures/. Run it from the project root::

    python benchmarks/tutorial_screens.py

The SYNTHETIC part always runs (about a minute on two cores). The Papalexi part runs where the
shared data lie beside the project (``../shared/data``, or the path in the environment
variable ``PAPALEXI_H5AD``). The script stops with a message when a claim of the tutorial
stops holding (a missing column, a save and load that differ). The file is a plain script in
cells (``# %%``, the jupytext percent format): VS Code, PyCharm or ``jupytext --to notebook``
open it as a notebook.
"""

# %% 1. A SYNTHETIC screen, written to disk
import os
import shutil
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import adjusted_rand_score, roc_auc_score

import cellw1
from cellw1.tl.screen import nearest

torch.set_num_threads(1)  # the tutorial's timings: one torch thread
PAPALEXI = Path(os.environ.get("PAPALEXI_H5AD", "../shared/data/papalexi2021_eccite_thp1_crispr.h5ad"))
FIGURES = Path("docs/figures")
CONTROL = "non-targeting"
# a shortened schedule (300 phase-1 steps, 100 + 100 for the step size): the calls, responders
# and clusters do not depend on it, only the `w1` column does
CONFIG = cellw1.ConditionalConfig(potential_iters=300, regression_iters=100, energy_iters=100)
start = time.perf_counter()
tmp = Path(tempfile.mkdtemp(prefix="cellw1-screen-"))

# 300 perturbations (20% with an effect), 4,000 controls, 200 genes; written block by block
path = cellw1.datasets.synthetic_screen(300, 4_000, 200, seed=0, path=tmp / "screen.h5ad")
adata = ad.read_h5ad(path)  # only to score the calls against the truth below
print(f"{adata.n_obs} cells x {adata.n_vars} genes, {adata.obs['perturbation'].nunique() - 1} perturbations")

# %% 2. Screen it from the file
result = cellw1.screen(path, "perturbation", CONTROL, config=CONFIG, seed=0, progress=False)
print(result)
table = result.table
columns = ["cells", "w1", "w1_low", "w1_high", "energy", "statistic", "p_value", "q_value", "called"]
columns += ["responder_share", "top_genes", "cluster", "map_1", "map_2"]
if missing := set(columns) - set(table.columns):
    raise SystemExit(f"the screen table lacks {sorted(missing)}: docs/screens.md's table is out of date.")
if missing := {"perturbation", "response_score", "responder"} - set(result.cells.columns):
    raise SystemExit(f"result.cells lacks {sorted(missing)}: docs/screens.md is out of date.")
shown = ["cells", "energy", "p_value", "q_value", "called", "responder_share", "cluster", "top_genes"]
print(table.sort_values("q_value")[shown].head().to_string(float_format="{:.3g}".format))

# %% 3. The calls against the truth
truth = pd.DataFrame({k: adata.uns["screen_truth"][k] for k in ("perturbation", "effect", "group")})
truth = truth.set_index("perturbation").loc[table.index]
null, called = truth["effect"].to_numpy() == 0, table["called"].to_numpy()
print(
    f"{called.sum()} called at q <= 0.05, {(called & null).sum()} of them null: "
    f"FDR {(called & null).sum() / max(called.sum(), 1):.3f}, "
    f"power {(called & ~null).sum() / (~null).sum():.3f} ({(~null).sum()} with an effect)"
)

# %% 4. Responders: the cell scores of a strong perturbation against the cells that truly responded
labels, responded = adata.obs["perturbation"].to_numpy(), adata.obs["responded"].to_numpy()
partial = [p for p in table.index[called] if 0 < responded[labels == p].sum() < (labels == p).sum()]
strong = truth.loc[partial, "effect"].idxmax()  # the called one with the largest true effect, and escapers
cells = labels == strong
scores = result.cells.loc[adata.obs_names[cells], "response_score"]
print(
    f"{strong}: {cells.sum()} cells, {responded[cells].mean():.2f} truly responded, "
    f"responder share {table.loc[strong, 'responder_share']:.2f}, "
    f"AUROC of the scores {roc_auc_score(responded[cells], scores):.3f}"
)

# %% 5. Look-alikes: the clusters of the called perturbations against the true groups
found = called & ~null
ari = adjusted_rand_score(truth["group"][found], table["cluster"][found])
print(f"{table['cluster'].max() + 1} clusters; ARI against the true groups {ari:.2f} ({found.sum()} perturbations)")
print(f"nearest to {strong}: {nearest(result, strong)}; its true group {truth.loc[strong, 'group']}, theirs", end=" ")
print(list(truth.loc[nearest(result, strong), "group"]))

# %% 6. Figures, drawn into axes of one figure
fig = Figure(figsize=(10, 3.8))
FigureCanvasAgg(fig)
left, right = fig.subplots(1, 2)
cellw1.pl.screen_effects(result, label=5, ax=left)  # effects ranked, coloured by q
cellw1.pl.screen_map(result, label=False, ax=right)  # the called perturbations by their response
fig.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
cellw1.pl.save_figure(fig, FIGURES / "tutorial_screen.png")

# %% 7. Predict with the fitted conditional model: a called perturbation and a null one
controls = adata[adata.obs["perturbation"] == CONTROL][:1_000]
view = result.model.view(strong)
before = view.preprocess(controls)  # the controls in the model's log-normalised genes
predicted = np.asarray(result.model.predict(controls, perturbation=strong).X)  # same genes and scale
change = predicted.mean(0) - before.mean(0)
seen = view.preprocess(adata[labels == strong]).mean(0) - before.mean(0)
print(
    f"{strong}: mean change predicted {np.linalg.norm(change):.2f}, observed {np.linalg.norm(seen):.2f}, "
    f"correlation over genes {np.corrcoef(change, seen)[0, 1]:.2f}"
)
quiet = truth.index[null & ~called][0]  # a null perturbation, not called: predicted as its controls
stays = np.abs(np.asarray(result.model.predict(controls, perturbation=quiet).X) - before).max()
print(f"{quiet}: largest change of a predicted value {stays:.1e}")
if stays > 1e-4:
    raise SystemExit(f"{quiet} is not called but its prediction moves the controls ({stays:.1e}).")
print(f"{len(result.model.without_response)} of {len(table)} perturbations are predicted as their controls")

# %% 8. Save and load
folder = result.save(tmp / "screen")  # screen.csv, cells.csv, model/
model = cellw1.load(folder / "model")
saved = pd.read_csv(folder / "screen.csv", index_col=0)
numbers = table.select_dtypes("number").columns
same = saved.index.equals(table.index) and saved["called"].equals(table["called"])
if not (same and np.allclose(saved[numbers], table[numbers], rtol=1e-6, atol=0, equal_nan=True)):  # map_*: float32
    raise SystemExit("screen.csv does not read back as result.table.")
again = np.asarray(model.predict(controls, perturbation=strong).X)
if not np.allclose(again, np.asarray(result.model.predict(controls, perturbation=strong).X), atol=1e-5):
    raise SystemExit("the loaded model predicts otherwise than the fitted one.")
print(f"saved to {folder.name}/: {sorted(p.name for p in folder.iterdir())}; the loaded model predicts the same")
print(f"synthetic part: {time.perf_counter() - start:.0f} s")

# %% 9. Papalexi's 25 targets (where the shared data lie)
shutil.rmtree(tmp)  # the screen file and the saved result
if not PAPALEXI.exists():
    print(f"{PAPALEXI} not found: the Papalexi part is skipped ({time.perf_counter() - start:.0f} s).")
    raise SystemExit(0)
eccite = ad.read_h5ad(PAPALEXI)
eccite = eccite[eccite.obs["grna_frac"] >= 0.8].copy()  # cells whose guide is clear
real = cellw1.screen(eccite, "target", CONTROL, config=CONFIG, seed=0, progress=False)
calls = real.table.sort_values("p_value")
print(f"{eccite.n_obs} cells; {calls['called'].sum()} of {len(calls)} targets called at q <= 0.05")
print(calls[["cells", "p_value", "q_value", "called", "responder_share"]].to_string(float_format="{:.3g}".format))
pathway = ["IFNGR1", "IFNGR2", "JAK2", "STAT1"]  # the IFN-gamma pathway
if not real.table.loc[pathway, "called"].all():
    raise SystemExit("the IFN-gamma pathway's targets are no longer all called on Papalexi.")
for name in pathway:
    low = 1 - real.table.loc[name, "responder_share"]
    print(f"{name}: nearest {nearest(real, name)}, low-response share {low:.2f}, top genes", end=" ")
    print(real.table.loc[name, "top_genes"])
print(f"whole tutorial: {time.perf_counter() - start:.0f} s")
