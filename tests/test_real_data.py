"""Integration test on a real dataset (Zhao et al. 2021, panobinostat vs vehicle).

Runs when ``../shared/data`` (beside the repository) holds the shared datasets, and is
skipped with the reason otherwise. The protocol is the paper's (``cellw1.evaluate``):
held-out cells, top-50 DE genes chosen on the training split, 300 genes, raw counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import cellw1

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ZHAO = DATA / "zhao2021_glioblastoma_panobinostat.h5ad"

pytestmark = pytest.mark.skipif(not ZHAO.exists(), reason=f"shared dataset not found at {ZHAO}")


@pytest.fixture(scope="module")
def zhao_result() -> cellw1.EvaluationResult:
    import anndata as ad

    adata = ad.read_h5ad(ZHAO)
    return cellw1.evaluate(
        adata,
        "condition",
        "ctrl",
        ["panobinostat"],
        methods=["identity", "observed", "mean_shift", "w1"],
        metrics=["mmd", "r2", "l2"],
        n_splits=1,
        progress=False,
    )


def test_w1_beats_identity_and_mean_shift_on_held_out_cells(zhao_result: cellw1.EvaluationResult) -> None:
    medians = zhao_result.summary().pivot(index="method", columns="metric", values="median")
    assert medians.loc["w1", "mmd"] < 0.5 * medians.loc["identity", "mmd"]
    assert medians.loc["w1", "mmd"] < medians.loc["mean_shift", "mmd"]
    assert medians.loc["w1", "l2"] < 0.5 * medians.loc["identity", "l2"]
    assert medians.loc["w1", "r2"] > medians.loc["identity", "r2"]
    # held-out real perturbed cells are the floor: w1 should come close to it
    assert medians.loc["w1", "mmd"] < 2.0 * medians.loc["observed", "mmd"]


def test_counts_detected_on_real_data() -> None:
    import anndata as ad

    adata = ad.read_h5ad(ZHAO)
    model = cellw1.fit(adata, "condition", "ctrl", "panobinostat", method="mean_shift", progress=False)
    assert model.info["input_kind"] == "counts"
    assert len(model.features) == adata.n_vars
