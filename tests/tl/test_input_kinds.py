"""Every kind of input keeps its values: counts, log-normalised expression and continuous values of any sign."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import FAST, TINY

import cellw1
from cellw1.cli.main import main
from cellw1.datasets import synthetic_cytometry
from cellw1.pp.preprocessing import detect_input_kind


@pytest.fixture(scope="module")
def cytometry() -> ad.AnnData:
    return synthetic_cytometry(n_control=700, n_stimulated=700, seed=3)


def _kinds() -> dict[str, ad.AnnData]:
    """The same SYNTHETIC experiment as counts, as log-normalised expression and as z-scores."""
    counts = cellw1.datasets.synthetic_perturbation(n_control=200, n_perturbed=200, n_genes=30, n_perturbations=1)
    log = counts.copy()
    log.X = np.log1p(counts.X.toarray() / counts.X.toarray().sum(1, keepdims=True) * 1e4).astype(np.float32)
    scaled = log.copy()
    scaled.X = ((log.X - log.X.mean(0)) / (log.X.std(0) + 1e-3)).astype(np.float32)
    return {"counts": counts, "log": log, "continuous": scaled}


@pytest.mark.parametrize("space", ["genes", "pca"])
def test_identity_returns_its_input_bit_for_bit_for_every_kind(space: str) -> None:
    for kind, adata in _kinds().items():
        model = cellw1.fit(adata, "condition", "control", "pertA", method="identity", space=space, progress=False)
        assert model.preprocessor.input_kind == kind  # detected
        controls = adata[adata.obs["condition"] == "control"]
        pred = model.predict(controls)
        expected = model.preprocess(controls) if kind == "counts" else np.asarray(controls.X, dtype=np.float32)
        np.testing.assert_array_equal(np.asarray(pred.X), expected)
        assert pred.uns["cellw1"]["output"] == "unchanged"
        assert pred.uns["cellw1"]["input_kind"] == kind


def test_negative_values_are_detected_as_continuous_and_the_warning_names_it(caplog) -> None:
    x = np.random.default_rng(0).normal(size=(50, 10))
    assert detect_input_kind(x)[0] == "continuous"
    assert detect_input_kind(sp.csr_matrix(np.abs(x)))[0] == "log"
    adata = _kinds()["continuous"]
    with caplog.at_level(logging.WARNING, logger="cellw1"):
        cellw1.fit(adata, "condition", "control", "pertA", method="mean_shift", progress=False)
    assert "treated as continuous" in caplog.text
    assert "input_kind=" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cellw1"):  # given: no warning
        cellw1.fit(adata, "condition", "control", "pertA", method="mean_shift", input_kind="continuous", progress=False)
    assert "continuous" not in caplog.text


def test_log_given_for_signed_values_warns_that_they_are_clipped(caplog) -> None:
    adata = _kinds()["continuous"]
    with caplog.at_level(logging.WARNING, logger="cellw1"):
        model = cellw1.fit(
            adata, "condition", "control", "pertA", method="mean_shift", input_kind="log", progress=False
        )
    assert "clipped to 0" in caplog.text
    assert "input_kind='continuous'" in caplog.text
    assert np.asarray(model.predict(adata[:50]).X).min() >= 0  # what the user asked for


def test_continuous_predictions_are_never_clipped_nor_calibrated(cytometry: ad.AnnData) -> None:
    model = cellw1.fit(cytometry, "condition", "control", "stimulated", method="mean_shift", progress=False)
    assert model.calibration is None
    assert model.preprocessor.input_kind == "continuous"
    controls = cytometry[cytometry.obs["condition"] == "control"]
    pred = model.predict(controls)
    expected = np.asarray(controls.X, dtype=np.float32) + model.method.shift
    np.testing.assert_allclose(np.asarray(pred.X), expected, rtol=1e-6, atol=1e-6)
    record = pred.uns["cellw1"]
    assert (record["values"], record["output"], record["log_base"], record["target_sum"]) == (
        "continuous",
        "raw",
        None,
        None,
    )
    assert "no clipping" in record["scale"]


def test_w1_reproduces_the_share_of_negative_values(cytometry: ad.AnnData) -> None:
    """On SYNTHETIC CyTOF data the predicted share of negative values is the observed one, within 0.05,
    overall and on the functional markers that the stimulation moves; no exact zeros appear.
    """
    rng = np.random.default_rng(0)
    control = np.flatnonzero(cytometry.obs["condition"] == "control")
    stimulated = np.flatnonzero(cytometry.obs["condition"] == "stimulated")
    rng.shuffle(control), rng.shuffle(stimulated)
    train = cytometry[np.sort(np.concatenate((control[:450], stimulated[:450])))].copy()
    model = cellw1.fit(train, "condition", "control", "stimulated", config=FAST, progress=False)
    predicted = np.asarray(model.predict(cytometry[control[450:]]).X)
    observed = np.asarray(cytometry.X[stimulated[450:]])
    before = np.asarray(cytometry.X[control[450:]])
    functional = cytometry.var["functional"].to_numpy()
    assert abs((predicted < 0).mean() - (observed < 0).mean()) <= 0.05
    assert abs((predicted[:, functional] < 0).mean() - (observed[:, functional] < 0).mean()) <= 0.05
    assert abs((before[:, functional] < 0).mean() - (observed[:, functional] < 0).mean()) > 0.1  # the test can fail
    assert (predicted == 0).mean() == (before == 0).mean() == 0.0


def test_the_cli_fits_predicts_and_evaluates_continuous_data(cytometry: ad.AnnData, tmp_path: Path) -> None:
    data = tmp_path / "cyto.h5ad"
    cytometry.write_h5ad(data)
    controls = tmp_path / "controls.h5ad"
    cytometry[cytometry.obs["condition"] == "control"].copy().write_h5ad(controls)
    common = ["--condition-key", "condition", "--control", "control", "--quiet"]
    assert main(["fit", str(data), *common, "--perturbation", "stimulated", "--method", "mean_shift",
                 "--input-kind", "continuous", "--out", str(tmp_path / "m")]) == 0  # fmt: skip
    assert main(["predict", str(tmp_path / "m"), str(controls), "--quiet", "--out", str(tmp_path / "p.h5ad")]) == 0
    pred = ad.read_h5ad(tmp_path / "p.h5ad")
    assert np.asarray(pred.X).min() < 0
    assert pred.uns["cellw1"]["input_kind"] == "continuous"
    assert main(["evaluate", str(data), *common, "--methods", "identity,mean_shift", "--potential-iters", "20",
                 "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    assert (tmp_path / "r").is_dir()


def test_w1_tiny_fit_keeps_signed_embeddings() -> None:
    """An obsm-free embedding in X (signed values) is continuous data: the map's output is not clipped."""
    rng = np.random.default_rng(1)
    x = np.concatenate((rng.normal(size=(150, 6)), rng.normal(size=(150, 6)) - 1.0)).astype(np.float32)
    adata = ad.AnnData(x)
    adata.obs["condition"] = ["ctrl"] * 150 + ["pert"] * 150
    model = cellw1.fit(adata, "condition", "ctrl", "pert", config=TINY, progress=False)
    pred = np.asarray(model.predict(adata[:150]).X)
    assert model.preprocessor.input_kind == "continuous"
    assert (pred < 0).mean() > 0.5
