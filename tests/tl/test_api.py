"""AnnData in and out: fit, fit_all, predict, save/load, and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from conftest import FAST, count_adata

import cellw1
from cellw1 import InputError, ModelFileError
from cellw1.tl.methods import METHODS


def tiny_adata(n: int = 120, genes: int = 30, seed: int = 0, sparse: bool = True) -> ad.AnnData:
    """Counts for a control group and two perturbations; 'up' raises genes 0-4 fourfold."""
    return count_adata(
        ["ctrl", "up", "none"],
        n,
        genes,
        seed=seed,
        effects={1: 4.0},
        covariate=("cell_type", ["T", "B"]),
        sparse=sparse,
    )


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return tiny_adata()


@pytest.fixture(scope="module")
def w1_model(adata: ad.AnnData) -> cellw1.PerturbationModel:
    return cellw1.fit(adata, "condition", "ctrl", "up", config=FAST, progress=False)


def test_fit_and_predict_moves_control_towards_perturbation(adata: ad.AnnData, w1_model) -> None:
    before = adata.copy()
    control = adata[adata.obs["condition"] == "ctrl"]
    pred = w1_model.predict(control)
    assert pred.shape == (control.n_obs, adata.n_vars)
    assert list(pred.var_names) == list(adata.var_names)
    assert list(pred.obs["source_cell"]) == list(control.obs_names)
    assert set(pred.obs["perturbation"]) == {"up"}
    assert (pred.obs["response"] >= 0).all()
    observed = w1_model.preprocess(adata[adata.obs["condition"] == "up"])
    start = w1_model.preprocess(control)
    # the up-regulated genes go up; every gene mean lands near the observed perturbed mean
    # (normalisation lowers the other genes of the 'up' cells a little, and the map follows)
    gain = pred.X[:, :5].mean(0) - start[:, :5].mean(0)
    target_gain = observed[:, :5].mean(0) - start[:, :5].mean(0)
    assert np.all(gain > 0.5 * target_gain)
    error = np.linalg.norm(pred.X.mean(0) - observed.mean(0))
    assert error < 0.3 * np.linalg.norm(start.mean(0) - observed.mean(0))
    # the input AnnData is never modified
    assert np.array_equal(adata.X.toarray(), before.X.toarray())
    assert adata.obs.equals(before.obs)


def test_counts_are_detected_and_normalised_jointly(w1_model) -> None:
    assert w1_model.info["input_kind"] == "counts"
    assert "count" in w1_model.info["input_kind_reason"]
    assert w1_model.preprocessor is not None
    assert w1_model.preprocessor.target_sum > 0


def test_save_load_gives_identical_predictions(adata: ad.AnnData, w1_model, tmp_path: Path) -> None:
    w1_model.save(tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "model" / "model.json").exists()
    loaded = cellw1.load(tmp_path / "model")
    control = adata[adata.obs["condition"] == "ctrl"]
    np.testing.assert_array_equal(loaded.predict(control).X, w1_model.predict(control).X)
    assert loaded.features == w1_model.features
    assert loaded.perturbation == "up"


@pytest.mark.parametrize("method", [m for m in METHODS if m != "w2"])
@pytest.mark.parametrize("space", ["genes", "pca"])
def test_every_method_and_space_has_one_signature(adata: ad.AnnData, method: str, space: str, tmp_path: Path) -> None:
    configs = {"w1": FAST}
    if method == "scgen_vae":  # the real scGen is an optional extra
        pytest.importorskip("pertpy", reason='the real scGen is optional: pip install "cellw1[scgen]"')
        from cellw1.tl.scgen import ScGenConfig

        configs["scgen_vae"] = ScGenConfig(n_hidden=32, n_latent=4, max_epochs=3)
    model = cellw1.fit(
        adata,
        "condition",
        "ctrl",
        "up",
        method=method,
        space=space,
        config=configs.get(method),
        embedding_config=cellw1.EmbeddingConfig(n_components=10),
        progress=False,
    )
    control = adata[adata.obs["condition"] == "ctrl"][:40]
    pred = model.predict(control)
    assert pred.shape == (40, adata.n_vars)
    assert np.isfinite(pred.X).all()
    model.save(tmp_path / "m")
    np.testing.assert_allclose(cellw1.load(tmp_path / "m").predict(control).X, pred.X, rtol=1e-5, atol=1e-5)
    if method == "identity" and space == "genes":
        np.testing.assert_allclose(pred.X, model.preprocess(control), atol=1e-6)


def test_fit_all_and_collection_roundtrip(adata: ad.AnnData, tmp_path: Path) -> None:
    collection = cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", progress=False)
    assert sorted(collection) == ["none", "up"]
    assert not collection.failures
    collection.save(tmp_path / "all")
    loaded = cellw1.load(tmp_path / "all")
    assert isinstance(loaded, cellw1.ModelCollection)
    assert sorted(loaded) == ["none", "up"]
    control = adata[adata.obs["condition"] == "ctrl"][:10]
    both = loaded.predict(control)
    assert both.n_obs == 20
    assert set(both.obs["perturbation"]) == {"none", "up"}


def test_fit_all_reports_a_failing_perturbation_and_fits_the_rest(adata: ad.AnnData) -> None:
    extra = tiny_adata(n=5, seed=1)
    extra = extra[extra.obs["condition"] == "up"].copy()
    extra.obs["condition"] = "rare"
    small = ad.concat([adata, extra], index_unique="-")
    collection = cellw1.fit_all(small, "condition", "ctrl", method="identity", progress=False)
    assert "rare" in collection.failures
    assert "at least" in collection.failures["rare"]
    assert sorted(collection) == ["none", "up"]


def test_log_normalised_layer_and_obsm(adata: ad.AnnData) -> None:
    a = adata.copy()
    a.layers["logcounts"] = np.log1p(a.X.toarray())
    a.obsm["X_emb"] = np.random.default_rng(0).normal(size=(a.n_obs, 4)).astype(np.float32)
    model = cellw1.fit(a, "condition", "ctrl", "up", layer="logcounts", method="mean_shift", progress=False)
    assert model.info["input_kind"] == "log"
    emb = cellw1.fit(a, "condition", "ctrl", "up", obsm_key="X_emb", method="mean_shift", progress=False)
    pred = emb.predict(a[a.obs["condition"] == "ctrl"])
    assert pred.n_vars == 4
    assert list(pred.var_names) == [f"X_emb_{i}" for i in range(4)]


def test_bad_input_errors_name_the_fix(adata: ad.AnnData) -> None:
    with pytest.raises(InputError, match="not a column of adata.obs; available"):
        cellw1.fit(adata, "treatment", "ctrl", "up", progress=False)
    with pytest.raises(InputError, match=r"control 'DMSO' is not a value.*available: .*ctrl \(120\)"):
        cellw1.fit(adata, "condition", "DMSO", "up", progress=False)
    with pytest.raises(InputError, match="perturbation 'down'"):
        cellw1.fit(adata, "condition", "ctrl", "down", progress=False)
    with pytest.raises(InputError, match="empty"):
        cellw1.fit(adata[:0], "condition", "ctrl", "up", progress=False)
    negative = adata.copy()
    negative.X = negative.X.toarray()
    negative.X[0, 0] = -3
    with pytest.raises(InputError, match="negative"):
        cellw1.fit(negative, "condition", "ctrl", "up", input_kind="counts", progress=False)
    nan = adata.copy()
    nan.X = nan.X.toarray()
    nan.X[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        cellw1.fit(nan, "condition", "ctrl", "up", progress=False)
    with pytest.raises(InputError, match="layer 'raw' not found"):
        cellw1.fit(adata, "condition", "ctrl", "up", layer="raw", progress=False)
    with pytest.raises(cellw1.ConfigError, match="unknown method"):
        cellw1.fit(adata, "condition", "ctrl", "up", method="cellot", progress=False)


def test_predict_needs_the_same_genes(adata: ad.AnnData, w1_model) -> None:
    control = adata[adata.obs["condition"] == "ctrl"]
    shuffled = control[:, list(reversed(control.var_names))].copy()
    np.testing.assert_allclose(w1_model.predict(shuffled).X, w1_model.predict(control).X, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="genes are missing"):
        w1_model.predict(control[:, 3:])


def test_broken_model_directories(w1_model, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        cellw1.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="not a cellw1 model"):
        cellw1.load(tmp_path / "empty")
    w1_model.save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        cellw1.load(tmp_path / "m")


def test_methods_can_share_one_fitted_embedding(adata: ad.AnnData) -> None:
    config = cellw1.EmbeddingConfig(n_components=8)
    first = cellw1.fit(
        adata, "condition", "ctrl", "up", method="identity", space="pca", embedding_config=config, progress=False
    )
    second = cellw1.fit(
        adata, "condition", "ctrl", "up", method="mean_shift", embedding=first.embedding, progress=False
    )
    assert second.embedding is first.embedding
    assert second.embedding.kind == "pca"
    with pytest.raises(InputError, match="reads 30 features"):
        cellw1.fit(
            adata[:, :20], "condition", "ctrl", "up", method="mean_shift", embedding=first.embedding, progress=False
        )


def test_one_run_at_a_time_writes_a_collection_directory(tmp_path: Path) -> None:
    """A second writer is refused while the first holds the directory, and admitted after."""
    from cellw1.tl.collection import CollectionDirectory

    settings = {"method": "identity"}
    with CollectionDirectory(tmp_path / "models", settings):
        with pytest.raises(InputError, match="another cellw1 run is writing"):
            CollectionDirectory(tmp_path / "models", settings)
        with pytest.raises(InputError, match="another cellw1 run is writing"):
            cellw1.fit_all(
                tiny_adata(n=30), "condition", "ctrl", method="identity", out=tmp_path / "models", progress=False
            )
    with CollectionDirectory(tmp_path / "models", settings):  # released at the end of the block
        pass
