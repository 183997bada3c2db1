"""The baselines that read a split's other perturbations (:mod:`cellw1.eval.baselines`), inside :func:`cellw1.evaluate`."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from cellw1.errors import InputError
from cellw1.eval.evaluation import evaluate

#: the smallest W1 schedule (nearest borrows its map; its quality is not tested here)
FAST = TINY.replace(energy_iters=10)
SHIFTS = {"A": (2.0, 2.0, 0, 0), "B": (0, 0, 2.0, 2.0), "A+B": (2.0, 2.0, 2.0, 2.0), "C": (2.2, 2.2, 0, 0)}


@pytest.fixture(scope="module")
def shifted() -> ad.AnnData:
    """4 features: 150 controls at 0 and 90 cells of each perturbation shifted by SHIFTS (A+B is additive)."""
    rng = np.random.default_rng(0)
    labels = ["ctrl"] * 150 + [p for p in SHIFTS for _ in range(90)]
    x = rng.normal(scale=0.5, size=(len(labels), 4)) + np.array([SHIFTS.get(label, (0, 0, 0, 0)) for label in labels])
    adata = ad.AnnData(
        X=np.zeros((len(labels), 2), dtype=np.float32),
        obs=pd.DataFrame({"cond": labels}, index=[f"c{i}" for i in range(len(labels))]),
    )
    adata.obsm["X_feat"] = x.astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def table(shifted: ad.AnnData) -> pd.DataFrame:
    methods = ("identity", "mean_shift", "global_mean", "additive", "observed")
    metrics = ["l2", "pearson_delta_pert", "centroid_accuracy"]
    res = evaluate(
        shifted,
        "cond",
        "ctrl",
        methods=methods,
        obsm_key="X_feat",
        metrics=metrics,
        n_splits=1,
        config=TINY,
        progress=False,
    )
    return res.table.set_index(["method", "perturbation", "metric"])["value"]


def test_global_mean_moves_the_controls_to_the_mean_of_all_perturbed_cells(table):
    pooled = np.mean([SHIFTS[p] for p in SHIFTS], axis=0)  # equal group sizes: the cell pool's mean
    for p in SHIFTS:  # control_shift is |mean(prediction) - mean(test controls)| = |pooled - training controls|
        assert table["global_mean", p, "control_shift"] == pytest.approx(np.linalg.norm(pooled), abs=0.1)


def test_additive_adds_the_members_shifts_and_scores_only_combinations(table):
    # the members' training shifts add up to (2, 2, 2, 2): |.| = 4, and the prediction lands near the truth
    assert table["additive", "A+B", "control_shift"] == pytest.approx(4.0, abs=0.15)
    assert table["additive", "A+B", "l2"] < 0.15 * table["identity", "A+B", "l2"]
    assert {p for (m, p, _) in table.index if m == "additive"} == {"A+B"}


def test_every_observed_centroid_is_its_own(table):
    for p in SHIFTS:
        assert table["observed", p, "centroid_accuracy"] == 1.0
        assert table["observed", p, "pearson_delta_pert"] > 0.9


def test_nearest_borrows_the_neighbours_w1_map(shifted):
    res = evaluate(
        shifted,
        "cond",
        "ctrl",
        ["A", "C"],  # each other's nearest neighbour
        methods=("nearest", "w1"),
        obsm_key="X_feat",
        metrics=["l2"],
        n_splits=1,
        config=FAST,
        progress=False,
    )
    value = res.table.set_index(["method", "perturbation", "metric"])["value"]
    # counted under w1
    assert value["nearest", "A", "seconds"] == 0.0
    assert value["nearest", "C", "seconds"] == 0.0
    assert {p for (m, p, _) in value.index if m == "nearest"} == {"A", "C"}


def test_a_missing_member_is_skipped_with_a_note(shifted, caplog):
    keep = shifted.obs["cond"].isin(["ctrl", "B", "A+B"]).to_numpy()
    with caplog.at_level(logging.INFO, logger="cellw1.eval.baselines"):
        res = evaluate(
            shifted[keep].copy(), "cond", "ctrl", methods=("additive",), obsm_key="X_feat", n_splits=1, progress=False
        )
    assert "additive" not in set(res.table["method"])
    assert "member(s) ['A']" in caplog.text


def test_another_tools_prediction_is_scored_on_the_same_splits(shifted):
    def oracle(train, test_control, perturbation):  # the true shift, as another tool might predict it
        assert set(train.obs["cond"]) == {"ctrl", perturbation}
        assert set(test_control.obs["cond"]) == {"ctrl"}
        return test_control.obsm["X_feat"] + np.array(SHIFTS[perturbation], dtype=np.float32)

    args = {"obsm_key": "X_feat", "metrics": ["l2"], "n_splits": 1, "progress": False}
    res = evaluate(shifted, "cond", "ctrl", ["A", "B"], methods=("identity",), external={"oracle": oracle}, **args)
    l2 = res.table[res.table["metric"] == "l2"].set_index(["method", "perturbation"])["value"]
    assert l2["oracle", "A"] < 0.15 * l2["identity", "A"]
    assert res.settings["external"] == ["oracle"]
    with pytest.raises(InputError, match=r"returned shape \(30, 3\)"):
        evaluate(
            shifted,
            "cond",
            "ctrl",
            ["A"],
            methods=("identity",),
            external={"bad": lambda t, c, p: np.ones((30, 3))},
            **args,
        )
