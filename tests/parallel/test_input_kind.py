"""fit_all decides input_kind="auto" once for the whole collection; every fit is given that kind.

The data set's perturbations would each be detected differently on their own cells (counts for
``up``, log-normalised for ``down``), which put one collection's predictions on two scales.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pytest
from conftest import shallow_and_deep_counts

import cellw1
from cellw1.pp.preprocessing import detect_input_kind


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return shallow_and_deep_counts()


def cells_of(adata: ad.AnnData, *labels: str) -> ad.AnnData:
    return adata[adata.obs["condition"].isin(labels).to_numpy()]


def test_each_perturbation_alone_is_detected_differently(adata: ad.AnnData) -> None:
    assert detect_input_kind(cells_of(adata, "ctrl", "up").X)[0] == "counts"
    assert detect_input_kind(cells_of(adata, "ctrl", "down").X)[0] == "log"


def test_every_model_of_a_collection_has_one_kind(adata: ad.AnnData, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cellw1"):
        collection = cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", progress=False)
    assert {label: model.preprocessor.input_kind for label, model in collection.items()} == {
        "up": "counts",
        "down": "counts",
    }
    decided = [r for r in caplog.records if "decided once" in r.getMessage()]
    assert len(decided) == 1
    assert "cellw1.fit_all" in decided[0].getMessage()
    assert "non-negative integers up to 41" in decided[0].getMessage()
    control = cells_of(adata, "ctrl")
    for label, model in collection.items():
        assert model.preprocessor.input_kind == "counts"
        # the scale of counts: the median total count of the model's training cells
        totals = np.asarray(cells_of(adata, "ctrl", label).X.sum(axis=1)).reshape(-1)
        assert model.preprocessor.target_sum == pytest.approx(np.median(totals[totals > 0]))
        record = model.predict(control).uns["cellw1"]
        assert record["input_kind"] == "counts"
        assert record["target_sum"] == model.preprocessor.target_sum
        normalised = model.preprocess(control)
        np.testing.assert_allclose(np.expm1(normalised).sum(axis=1), model.preprocessor.target_sum, rtol=1e-4)


def test_the_decision_covers_only_the_requested_perturbations(adata: ad.AnnData) -> None:
    collection = cellw1.fit_all(adata, "condition", "ctrl", ["down"], method="identity", progress=False)
    assert collection["down"].preprocessor.input_kind == "log"  # as cellw1.fit of the same cells decides
    alone = cellw1.fit(adata, "condition", "ctrl", "down", method="identity", progress=False)
    assert alone.preprocessor.input_kind == "log"


@pytest.mark.parametrize("kind", ["log", "counts"])
def test_an_explicit_input_kind_is_kept(adata: ad.AnnData, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cellw1"):
        collection = cellw1.fit_all(adata, "condition", "ctrl", method="identity", input_kind=kind, progress=False)
    assert {model.preprocessor.input_kind for model in collection.values()} == {kind}
    assert not [r for r in caplog.records if "decided once" in r.getMessage()]


def test_a_shared_space_uses_the_same_decision(adata: ad.AnnData) -> None:
    collection = cellw1.fit_all(adata, "condition", "ctrl", method="identity", shared_space=True, progress=False)
    kinds = {model.preprocessor.input_kind for model in collection.values()}
    assert kinds == {"counts"}
