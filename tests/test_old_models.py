"""A model saved by cellw1 0.1 (main at 726cefa, before the layer split) loads and predicts as it did.

``tests/data/model_cellw1_0_1_726cefa`` was written by that release: the model directory, the
cells it was fitted on (``cells.h5ad``) and its own prediction for the first 60 (control) cells
(``predicted.npy``, raw values as that release wrote them).
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import cellw1

OLD = Path(__file__).parent / "data" / "model_cellw1_0_1_726cefa"


def test_a_model_of_cellw1_0_1_predicts_as_it_did(caplog: pytest.LogCaptureFixture) -> None:
    cells = ad.read_h5ad(OLD / "cells.h5ad")
    then = np.load(OLD / "predicted.npy")
    with caplog.at_level(logging.WARNING):
        model = cellw1.load(OLD)
    assert model.calibration is None
    assert model.history == {}  # files from before training histories were kept have none
    # the map itself is the same: raw values equal those the old release wrote
    raw = model.embedding.decode(model.method.predict(model.preprocess(cells[:60])))
    np.testing.assert_allclose(raw, then, rtol=1e-6, atol=1e-6)
    # what predict writes now: the same values, negative expression clipped at 0
    now = model.predict(cells[:60])
    assert now.uns["cellw1"]["output"] == "clipped"
    np.testing.assert_allclose(now.X, np.maximum(then, 0), rtol=1e-6, atol=1e-6)
    assert (then < 0).any()  # the clip is exercised
