"""cellw1.fit_conditional on an obsm embedding: used as it is, as cellw1.fit uses one."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import cellw1
from cellw1.datasets import synthetic_perturbation
from cellw1.errors import ConfigError
from cellw1.tl.spec import ConditionalSpec

FAST = cellw1.ConditionalConfig(
    potential_iters=150, regression_iters=100, energy_iters=50, batch_size=256, eval_every=50
)
#: components of the embedding in obsm (values of any sign, not expression)
N_FEATURES = 6


@pytest.fixture(scope="module")
def data():
    """Three perturbations (``NULL`` without an effect) and a PCA of their log expression in ``obsm["X_emb"]``."""
    adata = synthetic_perturbation(n_control=200, n_perturbed=120, n_genes=30, n_perturbations=3, seed=3)
    x = np.log1p(np.asarray(adata.X.toarray(), dtype=np.float64))
    x -= x.mean(0)
    axes = np.linalg.svd(x, full_matrices=False)[2][:N_FEATURES]
    adata.obsm["X_emb"] = (x @ axes.T).astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def model(data):
    return cellw1.fit_conditional(data, "condition", "control", config=FAST, obsm_key="X_emb", progress=False)


def controls(adata):
    return adata[adata.obs["condition"] == "control"].copy()


def test_fits_on_the_embedding_as_it_is(data, model):
    ctrl = controls(data)
    before = ctrl.obsm["X_emb"].copy()
    assert model.obsm_key == "X_emb"
    assert model.preprocessor is None
    assert model.calibration is None
    assert model.pooled_calibration is None
    assert model.embedding.kind == "genes"  # the embedding's own features, as for cellw1.fit
    assert model.features == [f"X_emb_{i}" for i in range(N_FEATURES)]
    pred = model.predict(ctrl, perturbation="pertA")
    assert pred.shape == (ctrl.n_obs, N_FEATURES)
    record = pred.uns["cellw1"]
    assert record["obsm_key"] == record["values"] == "X_emb"
    assert record["output"] is None
    assert record["input_kind"] is None
    assert record["conditional"] is True
    assert record["method"] == "w1_conditional"
    np.testing.assert_array_equal(ctrl.obsm["X_emb"], before)  # input untouched
    assert np.abs(pred.X - ctrl.obsm["X_emb"]).mean() > 0.05  # a responding perturbation moves the cells
    assert model.without_response == [("NULL", None)]
    np.testing.assert_array_equal(model.predict(ctrl, perturbation="NULL").X, ctrl.obsm["X_emb"])
    assert (pred.X < 0).any()  # continuous values keep their sign (never clipped)
    # toward the perturbed cells' mean
    observed = data.obsm["X_emb"][(data.obs["condition"] == "pertA").to_numpy()].mean(0)
    assert np.linalg.norm(pred.X.mean(0) - observed) < np.linalg.norm(ctrl.obsm["X_emb"].mean(0) - observed)


def test_same_output_record_as_a_single_map(data, model):
    ctrl = controls(data)
    single = cellw1.fit(
        data,
        "condition",
        "control",
        "pertA",
        obsm_key="X_emb",
        config=cellw1.W1Config(potential_iters=20, regression_iters=20, eval_every=10),
        progress=False,
    )
    mine, theirs = model.predict(ctrl, perturbation="pertA").uns["cellw1"], single.predict(ctrl).uns["cellw1"]
    for key in ("values", "output", "input_kind", "target_sum", "scale", "obsm_key", "space", "layer"):
        assert mine[key] == theirs[key], key
    added = model.predict(ctrl, perturbation="pertA", key_added="cellw1_pertA")
    assert added.obsm["cellw1_pertA"].shape == (ctrl.n_obs, N_FEATURES)
    assert "cellw1_pertA" not in added.layers


def test_combination_and_save_load(data, model, tmp_path):
    ctrl = controls(data)
    pair = model.predict(ctrl, perturbation="pertA+pertB")
    assert pair.shape == (ctrl.n_obs, N_FEATURES)
    assert np.isfinite(pair.X).all()
    assert (pair.obs["perturbation"] == "pertA+pertB").all()
    singles = [model.unshrunk(label).predict(ctrl).X for label in ("pertA", "pertB")]
    # both members move: the pair adds their whole changes (unclipped), unlike either alone
    np.testing.assert_allclose(pair.X, singles[0] + singles[1] - ctrl.obsm["X_emb"], atol=1e-4)
    assert not np.allclose(pair.X, singles[0])
    model.save(tmp_path / "m")
    loaded = cellw1.load(tmp_path / "m")
    assert isinstance(loaded, cellw1.ConditionalModel)
    assert loaded.obsm_key == "X_emb"
    for label in ("pertA", "pertB+pertA"):
        np.testing.assert_array_equal(
            model.predict(ctrl, perturbation=label).X, loaded.predict(ctrl, perturbation=label).X
        )


def test_embedding_without_the_genes(data, model):
    """An obsm model reads only obsm: the data need not have the training genes."""
    ctrl = controls(data)
    bare = ad.AnnData(obs=ctrl.obs.copy(), obsm={"X_emb": ctrl.obsm["X_emb"]})
    np.testing.assert_array_equal(
        model.predict(bare, perturbation="pertB").X, model.predict(ctrl, perturbation="pertB").X
    )


def test_spec_refuses_a_given_embedding_only(model):
    spec = ConditionalSpec(condition_key="condition", control="control", obsm_key="X_emb")
    assert spec.obsm_key == "X_emb"
    with pytest.raises(ConfigError, match="embedding="):
        ConditionalSpec(condition_key="condition", control="control", embedding=model.embedding)


def test_cli_fit_conditional_on_obsm_and_predict(data, tmp_path, capsys):
    from cellw1.cli.main import main

    path = tmp_path / "cells.h5ad"
    data.write_h5ad(path)
    model_dir, out = tmp_path / "model", tmp_path / "pred.h5ad"
    fit = ["fit", str(path), "--condition-key", "condition", "--control", "control", "--conditional"]
    fast = [
        "--obsm-key",
        "X_emb",
        "--potential-iters",
        "60",
        "--regression-iters",
        "60",
        "--energy-iters",
        "60",
        "--quiet",
    ]
    fast += ["--out"]
    assert main([*fit, *fast, str(model_dir)]) == 0
    assert "of obsm['X_emb']" in capsys.readouterr().out
    assert cellw1.load(model_dir).obsm_key == "X_emb"
    predict = ["predict", str(model_dir), str(path), "--out", str(out), "--perturbation", "pertA", "--controls-only"]
    assert main([*predict, "--quiet"]) == 0
    pred = ad.read_h5ad(out)
    n_control = int((data.obs["condition"] == "control").sum())
    assert pred.shape == (2 * n_control, N_FEATURES)  # predicted, then the controls themselves
    assert pred.uns["cellw1"]["obsm_key"] == "X_emb"
    np.testing.assert_allclose(pred.X[n_control:], controls(data).obsm["X_emb"], rtol=1e-6)


def test_evaluate_w1_conditional_on_obsm(data):
    result = cellw1.evaluate(
        data,
        "condition",
        "control",
        ["pertA", "pertB"],
        methods=["w1_conditional", "identity"],
        obsm_key="X_emb",
        conditional_config=FAST,
        metrics=["mmd"],
        n_splits=1,
        progress=False,
    )
    table = result.table
    rows = table[(table["method"] == "w1_conditional") & (table["metric"] == "mmd")]
    assert set(rows["perturbation"]) == {"pertA", "pertB"}
    assert np.isfinite(rows["value"]).all()


def test_streamed_from_disk_fits_the_same(data, model, tmp_path):
    """From an .h5ad path the embedding is streamed by rows; every group fits one buffer: the same fit."""
    path = tmp_path / "cells.h5ad"
    data.write_h5ad(path)
    streamed = cellw1.fit_conditional(str(path), "condition", "control", config=FAST, obsm_key="X_emb", progress=False)
    assert streamed.info["streamed_from"] == str(path)
    ctrl = controls(data)
    np.testing.assert_array_equal(
        streamed.predict(ctrl, perturbation="pertA").X, model.predict(ctrl, perturbation="pertA").X
    )
