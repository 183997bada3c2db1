"""Output conventions: predictions say their scale in uns, are never negative, and can be added to the input as a layer."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from conftest import TINY, count_adata

import cellw1
from cellw1.errors import ConfigError, InputError
from cellw1.files.model_files import read_metadata
from cellw1.tl.model import MODEL_FILE


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return count_adata(["ctrl", "up"], 150, 30, seed=3, effects={1: 4.0}, sparse=False)


@pytest.fixture(scope="module")
def identity(adata: ad.AnnData) -> cellw1.PerturbationModel:
    return cellw1.fit(adata, "condition", "ctrl", "up", method="identity", progress=False)


def controls(adata: ad.AnnData) -> ad.AnnData:
    return adata[adata.obs["condition"] == "ctrl"]


def test_uns_records_the_scale_and_reproduces_it(
    adata: ad.AnnData, identity: cellw1.PerturbationModel, tmp_path: Path
) -> None:
    pred = identity.predict(controls(adata))
    record = pred.uns["cellw1"]
    counts = np.asarray(adata.X, dtype=np.float64)
    assert record["input_kind"] == "counts"
    assert record["log_base"] == "e"
    assert record["target_sum"] == pytest.approx(np.median(counts.sum(1)))  # median total of the training cells
    assert record["method"] == "identity"
    assert record["space"] == "genes"
    assert (record["control"], record["perturbation"]) == ("ctrl", "up")
    assert record["cellw1_version"] == cellw1.__version__
    assert "log(1 + target_sum * counts / total counts)" in record["scale"]
    # the record alone reproduces the values: the identity prediction is the control cells on that scale
    c = np.asarray(controls(adata).X, dtype=np.float64)
    by_hand = np.log1p(record["target_sum"] * c / c.sum(1, keepdims=True))
    np.testing.assert_allclose(pred.X, by_hand, rtol=1e-5, atol=1e-5)
    # the checksum is the one of the weights in the saved model file
    identity.save(tmp_path / "m")
    _, meta = read_metadata(tmp_path / "m" / MODEL_FILE, "PerturbationModel")
    assert record["model_sha256"] == meta["sha256"]
    assert cellw1.load(tmp_path / "m").predict(controls(adata)).uns["cellw1"]["model_sha256"] == meta["sha256"]


def test_uns_of_log_input_says_no_transform(adata: ad.AnnData) -> None:
    logged = ad.AnnData(np.log1p(np.asarray(adata.X)) * 0.9, obs=adata.obs, var=adata.var)
    model = cellw1.fit(logged, "condition", "ctrl", "up", method="mean_shift", progress=False)
    record = model.predict(controls(logged)).uns["cellw1"]
    assert record["input_kind"] == "log"
    assert record["target_sum"] is None
    assert record["log_base"] is None
    assert record["method"] == "mean_shift"
    assert "as given" in record["scale"]


@pytest.mark.parametrize("method", ["identity", "observed", "mean_shift", "w1"])
@pytest.mark.parametrize("space", ["genes", "pca"])
def test_predictions_in_log1p_space_are_never_negative(adata: ad.AnnData, method: str, space: str) -> None:
    model = cellw1.fit(
        adata,
        "condition",
        "ctrl",
        "up",
        method=method,
        space=space,
        config=TINY if method == "w1" else None,
        embedding_config=cellw1.EmbeddingConfig(n_components=5),
        progress=False,
    )
    pred = np.asarray(model.predict(controls(adata)).X)
    assert pred.min() >= 0
    assert np.isfinite(pred).all()
    output = model.predict(controls(adata)).uns["cellw1"]["output"]
    assert output == ("unchanged" if method == "identity" else "calibrated" if method != "observed" else "clipped")


def test_key_added_puts_the_prediction_in_a_layer_of_the_input(adata: ad.AnnData) -> None:
    subset = adata[:, :20].copy()  # the model covers genes 0-19 of the 30
    model = cellw1.fit(subset, "condition", "ctrl", "up", method="mean_shift", progress=False)
    before = adata.copy()
    out = model.predict(adata, key_added="cellw1_up")
    np.testing.assert_array_equal(np.asarray(adata.X), np.asarray(before.X))  # the input is untouched
    assert "cellw1_up" not in adata.layers
    assert out is not adata
    assert out.shape == adata.shape
    assert list(out.var_names) == list(adata.var_names)
    np.testing.assert_array_equal(np.asarray(out.X), np.asarray(adata.X))  # X stays the input's
    layer = out.layers["cellw1_up"]
    plain = model.predict(adata)
    np.testing.assert_allclose(layer[:, :20], plain.X, rtol=1e-6)
    assert np.isnan(layer[:, 20:]).all()
    assert list(out.var["cellw1_up_modelled"]) == [True] * 20 + [False] * 10
    np.testing.assert_allclose(out.obs["cellw1_up_response"], plain.obs["response"])
    assert out.uns["cellw1_up"]["target_sum"] == plain.uns["cellw1"]["target_sum"]
    with pytest.raises(ConfigError, match="already has layers"):
        model.predict(out, key_added="cellw1_up")
    with pytest.raises(InputError, match="key_added"):
        model.predict(adata, key_added="x", out="never.h5ad")
    with pytest.raises(ConfigError, match="key_added"):
        model.predict(adata, key_added="")
    chosen = model.predict(adata, cells=(adata.obs["condition"] == "ctrl").to_numpy(), key_added="k")
    assert list(chosen.obs_names) == list(controls(adata).obs_names)


def test_key_added_for_an_obsm_model_goes_to_obsm(adata: ad.AnnData) -> None:
    a = adata.copy()
    a.obsm["X_emb"] = np.random.default_rng(0).normal(size=(a.n_obs, 4)).astype(np.float32)
    model = cellw1.fit(a, "condition", "ctrl", "up", obsm_key="X_emb", method="mean_shift", progress=False)
    out = model.predict(a, key_added="pred")
    np.testing.assert_allclose(out.obsm["pred"], model.predict(a).X, rtol=1e-6)
    assert "pred" not in out.layers


def test_with_controls_pairs_predicted_and_measured_cells(
    adata: ad.AnnData, identity: cellw1.PerturbationModel
) -> None:
    c = controls(adata)
    paired = identity.predict(c, with_controls=True)
    n = c.n_obs
    assert paired.n_obs == 2 * n
    assert list(paired.obs["condition"]) == ["up"] * n + ["ctrl"] * n
    assert list(paired.obs_names[n:]) == [f"{name}-ctrl" for name in c.obs_names]
    np.testing.assert_allclose(paired.X[n:], identity.preprocess(c), rtol=1e-6)
    assert (paired.obs["response"].to_numpy()[n:] == 0).all()


def test_cli_key_added_and_controls_only(adata: ad.AnnData, identity: cellw1.PerturbationModel, tmp_path: Path) -> None:
    from cellw1.cli.main import main

    data = tmp_path / "data.h5ad"
    adata.write_h5ad(data)
    identity.save(tmp_path / "m")
    assert (
        main(
            [
                "predict",
                str(tmp_path / "m"),
                str(data),
                "--key-added",
                "pred",
                "--out",
                str(tmp_path / "k.h5ad"),
                "--quiet",
            ]
        )
        == 0
    )
    added = ad.read_h5ad(tmp_path / "k.h5ad")
    assert added.shape == adata.shape
    assert "pred" in added.layers
    assert added.uns["pred"]["input_kind"] == "counts"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "m"),
                str(data),
                "--key-added",
                "pred",
                "--on-disk",
                "--out",
                str(tmp_path / "k2.h5ad"),
                "--quiet",
            ]
        )
        == 2
    )
    assert (
        main(
            ["predict", str(tmp_path / "m"), str(data), "--controls-only", "--out", str(tmp_path / "c.h5ad"), "--quiet"]
        )
        == 0
    )
    paired = ad.read_h5ad(tmp_path / "c.h5ad")
    assert sorted(set(paired.obs["condition"])) == ["ctrl", "up"]
    assert paired.n_obs == 2 * controls(adata).n_obs
