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


FORMATS = Path(__file__).parent / "data" / "models_by_format"
# each conditional model file format (1: before dose curves, 2: before interaction tests, 3),
# written by main at b55f121, 82e3df7 and ada995f from the same tiny fits; predicted_main.* is
# what main at ada995f predicted with each file, the reference for every later change
CONDITIONS = {
    "conditional_doses": [("pertA", 10.0), ("pertB", 100.0), ("pertA", 3.0), ("pertB", 30.0)],
    "conditional_pairs": [(c, None) for c in ["p00", "p03", "p00+p01", "p02+p03", "p01+p02", "p02+p01"]],
}


@pytest.mark.parametrize(
    ("version", "kind"),
    [(v, k) for v in ("v1", "v2", "v3") for k in CONDITIONS],
)
def test_conditional_model_files_of_every_format_predict_as_before(version: str, kind: str) -> None:
    cells = ad.read_h5ad(FORMATS / ("dose_controls.h5ad" if kind == "conditional_doses" else "pair_controls.h5ad"))
    model = cellw1.load(FORMATS / version / kind)
    then = dict(np.load(FORMATS / version / kind / "predicted_main.npz"))
    # combinations composed from their members add each member's whole response since issue 25's
    # share fix (and a trained pair blends in its own whole response): those keys have a newer reference
    whole = FORMATS / version / kind / "predicted_whole_members.npz"
    if whole.exists():
        then.update(np.load(whole))
    for label, dose in CONDITIONS[kind]:
        key = f"{label}@{dose}" if dose is not None else label
        now = model.predict(cells, perturbation=label, dose=dose).X
        np.testing.assert_allclose(np.asarray(now), then[key], rtol=1e-5, atol=1e-5, err_msg=f"{version} {kind} {key}")


def test_a_single_map_file_of_this_format_predicts_as_before() -> None:
    cells = ad.read_h5ad(FORMATS / "dose_controls.h5ad")
    model = cellw1.load(FORMATS / "v3" / "single_map")
    assert model.calibration is not None
    np.testing.assert_allclose(
        np.asarray(model.predict(cells).X),
        np.load(FORMATS / "v3" / "single_map" / "predicted_main.npy"),
        rtol=1e-5,
        atol=1e-5,
    )
