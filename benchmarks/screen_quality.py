"""Quality at scale: one conditional model against separate W1 maps on a SYNTHETIC screen (issue 23, section 5).

For each seed, ``cellw1.datasets.synthetic_screen`` (500 genes, 3,000 controls) is cut to 50
random perturbations with an effect and 10 null ones (seeded; each with at least 40 cells, so
that the library's split rule can hold cells out); ``cellw1.evaluate`` scores
identity, the mean shift, separate W1 maps and one conditional model (``w1_conditional``) on the
same splits in PCA space (one split per perturbation, the library's split rule). Printed per
seed: the median MMD over the 50 perturbations with an effect (target: the conditional model
within 10% of separate maps) and the median ``control_shift`` of the null ones (how far their
predicted mean moves from the controls'; identity's is 0). Writes
``benchmarks/results/screen/quality.json``.

    python -m benchmarks screen_quality [--seeds 0]
"""

# %%
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

import cellw1
from cellw1.tl.spec import MIN_CELLS as TRAIN_CELLS

from ._common import RESULTS, each_seed, one_thread, parse, parser, write_json

OUT = RESULTS / "screen" / "quality.json"
METHODS = ("identity", "mean_shift", "w1", "w1_conditional")
#: cells a perturbation needs to be chosen: twice the training cells the library's split needs (40)
MIN_CELLS = 2 * TRAIN_CELLS


def chosen(truth: dict, n_effect: int, n_null: int, seed: int) -> tuple[list[str], list[str]]:
    """Seeded random perturbations with enough cells to split: ``n_effect`` with an effect, ``n_null`` without."""
    names = np.asarray(truth["perturbation"])
    big = np.asarray(truth["n_cells"]) >= MIN_CELLS
    effect = np.asarray(truth["effect"]) > 0
    rng = np.random.default_rng(seed)
    with_effect = rng.choice(names[effect & big], size=min(n_effect, int((effect & big).sum())), replace=False)
    null = rng.choice(names[~effect & big], size=min(n_null, int((~effect & big).sum())), replace=False)
    return sorted(with_effect.tolist()), sorted(null.tolist())


def run(seed: int, n_effect: int = 50, n_null: int = 10) -> dict:
    """Evaluate the methods on one seed's screen; the medians and every row of the table."""
    screen = cellw1.datasets.synthetic_screen(
        n_perturbations=400, n_controls=3_000, n_genes=500, effect_fraction=0.2, mean_cells=120, seed=seed
    )
    truth = screen.uns["screen_truth"]
    with_effect, null = chosen(truth, n_effect, n_null, seed)
    keep = screen.obs["perturbation"].astype(str).isin([truth["control"], *with_effect, *null]).to_numpy()
    cells = screen[keep].copy()
    cells.uns = {}
    start = time.perf_counter()
    result = cellw1.evaluate(
        cells,
        "perturbation",
        truth["control"],
        methods=list(METHODS),
        space="pca",
        n_splits=1,
        metrics=["mmd", "energy", "l2"],
        seed=seed,
        progress=False,
    )
    seconds = time.perf_counter() - start
    table = result.table
    effect_rows = table[table["perturbation"].isin(with_effect)]
    mmd = effect_rows[effect_rows["metric"] == "mmd"].groupby("method")["value"].median()
    null_rows = table[table["perturbation"].isin(null) & (table["metric"] == "control_shift")]
    shift = null_rows.groupby("method")["value"].median()
    return {
        "seed": seed,
        "n_effect": len(with_effect),
        "n_null": len(null),
        "seconds": seconds,
        "median_mmd_effect": mmd.to_dict(),
        "median_control_shift_null": shift.to_dict(),
        "conditional_over_separate": float(mmd["w1_conditional"] / mmd["w1"]),
        "rows": table.to_dict(orient="records"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run each seed, print the medians and the ratio, write everything."""
    p = parser(__doc__, name="screen_quality", seeds="0", out=OUT, quick={"seeds": [0]})
    args = parse(p, argv)
    one_thread()
    found = each_seed(args.seeds, run)
    summary = pd.DataFrame(
        {
            seed: {
                **{f"mmd {m}": r["median_mmd_effect"].get(m) for m in METHODS},
                **{f"null shift {m}": r["median_control_shift_null"].get(m) for m in METHODS},
                "conditional / separate": r["conditional_over_separate"],
                "seconds": r["seconds"],
            }
            for seed, r in found.items()
        }
    )
    print(summary.to_string(float_format=lambda x: f"{x:.4g}"))
    write_json(args.out, {"seeds": list(found.values())}, args, indent=1)
