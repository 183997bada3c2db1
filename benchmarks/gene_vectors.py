"""Built-in gene vectors (``cellw1.gene_vectors``) for targets the conditional model never saw (issue 25).

``papalexi``: the 9 of Papalexi's 25 CRISPR targets that its 299 genes measure (CMTM6,
IFNGR2, JAK2, NFKBIA, STAT1, STAT2, STAT3, TNFRSF14, UBE2L6; ``grna_frac >= 0.8``). Three
folds of 3 held-out targets (a seeded permutation); a third of the controls is held out as
the input. Each fold fits ``fit_conditional`` (PCA space, defaults) on the training controls
and the 6 other targets, with ``embedding_key`` the gene vectors computed from the training
controls only, and predicts the 3 held-out targets from their vectors. Baselines: the global
mean (input + the mean over the 6 training targets of their mean shifts) and no change.

``synthetic``: the same protocol on :func:`cellw1.datasets.synthetic_gene_targets`
(SYNTHETIC: a knock-out lowers its gene and moves the cells' latent state along that gene's
loadings, so a gene's co-expression says where its knock-out goes by construction, a best
case for the vectors), 12 targets, folds of 4, seeds 0-2.

Scores on held-out cells, all genes, log-normalised: MMD, energy, PearsonΔ (the predicted and
observed mean changes from the input). Results to ``benchmarks/results/gene_vectors.json``.

    python -m benchmarks gene_vectors [--parts papalexi,synthetic] [--seeds 0,1,2]
"""

# %%
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import cellw1

from ._common import RESULTS, each_seed, load, one_thread, papalexi, parse, parser, read_json, write_json
from .combinations_synthetic import score

OUT = RESULTS / "gene_vectors.json"


def folds(adata, key: str, control: str, targets: list[str], size: int, seed: int) -> dict:
    """Per fold of ``size`` held-out targets: the three methods' scores on each held-out target."""
    labels = adata.obs[key].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    ctrl = rng.permutation(np.flatnonzero(labels == control))
    train_ctrl, test_ctrl = np.sort(ctrl[len(ctrl) // 3 :]), np.sort(ctrl[: len(ctrl) // 3])
    order = rng.permutation(targets).tolist()
    found = {}
    for start in range(0, len(order), size):
        held = order[start : start + size]
        trained = [t for t in targets if t not in held]
        train = adata[np.sort(np.concatenate([train_ctrl, np.flatnonzero(np.isin(labels, trained))]))].copy()
        train.uns["gene_vectors"] = cellw1.gene_vectors(train, key, control)
        model = cellw1.fit_conditional(train, key, control, embedding_key="gene_vectors", seed=seed, progress=False)
        pre = model.preprocessor.transform
        ctrl_in = adata[test_ctrl].copy()
        x = pre(ctrl_in.X)
        base = pre(train[train.obs[key].astype(str) == control].X).mean(0)
        global_shift = np.mean([pre(adata[labels == t].X).mean(0) - base for t in trained], axis=0)
        for target in held:
            obs = pre(adata[labels == target].X)
            found[target] = {
                "model": score(model.predict(ctrl_in, perturbation=target).X, obs, x),
                "global_mean": score(np.maximum(x + global_shift, 0.0), obs, x),
                "no_change": score(x, obs, x),
            }
    return found


def table(cases: list[dict]) -> str:
    """Markdown table: median MMD, energy and PearsonΔ per method, and how often the model beats each baseline."""
    lines = ["| method | median MMD | median energy | median PearsonΔ | model better: MMD | energy | PearsonΔ |"]
    lines.append("|---|---|---|---|---|---|---|")
    for m in ("model", "global_mean", "no_change"):
        med = [np.median([c[m][k] for c in cases]) for k in ("mmd", "energy", "pearson_delta")]
        wins = ""
        if m != "model":
            wins = " | ".join(
                f"{sum((c['model'][k] < c[m][k]) == (k != 'pearson_delta') for c in cases)}/{len(cases)}"
                for k in ("mmd", "energy", "pearson_delta")
            )
        lines.append(f"| {m} | {med[0]:.4g} | {med[1]:.4g} | {med[2]:.3f} | {wins or ' | '} |")
    return "\n".join(lines)


def synthetic_folds(seed: int) -> dict:
    """The held-out-target folds (four targets each) of one seed's SYNTHETIC gene-target data set."""
    adata = load("synthetic_gene_targets", seed=seed)
    targets = [t for t in adata.obs["condition"].cat.categories if t != "control"]
    return folds(adata, "condition", "control", targets, 4, seed)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen parts (Papalexi once, the synthetic data per seed), write them and print their tables."""
    p = parser(__doc__, name="gene_vectors", seeds="0,1,2", out=OUT, quick={"parts": "synthetic", "seeds": [0]})
    p.add_argument("--parts", default="papalexi,synthetic")
    args = parse(p, argv)
    one_thread()
    results = read_json(args.out)
    for part in args.parts.split(","):
        if part == "papalexi":
            adata = papalexi()
            targets = sorted(t for t in set(adata.obs["target"].astype(str)) if t in set(adata.var_names))
            results[part] = {"0": folds(adata, "target", "non-targeting", targets, 3, 0)}
        else:
            results[part] = {str(s): found for s, found in each_seed(args.seeds, synthetic_folds, part).items()}
        write_json(args.out, results, args)
        cases = [c for per_seed in results[part].values() for c in per_seed.values()]
        print(part, f"({len(cases)} held-out targets)\n" + table(cases), flush=True)
