"""cellw1.fit_conditional and ConditionalModel: predict, save/load, clear errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import cellw1
from cellw1.datasets import synthetic_perturbation
from cellw1.errors import ConfigError, InputError, ModelFileError

FAST = cellw1.ConditionalConfig(
    potential_iters=150, regression_iters=100, energy_iters=50, batch_size=256, eval_every=50
)


@pytest.fixture(scope="module")
def data():
    adata = synthetic_perturbation(n_control=300, n_perturbed=200, n_genes=40, n_perturbations=3, seed=1)
    rng = np.random.default_rng(0)
    adata.obs["dose"] = rng.choice([1.0, 10.0, 100.0], size=adata.n_obs)
    adata.uns["vectors"] = {
        "pertA": [1.0, 0.0, 0.5],
        "pertB": [0.0, 1.0, 0.5],
        "NULL": [0.0, 0.0, 0.0],
        "pertNew": [0.5, 0.5, 0.5],
    }
    return adata


@pytest.fixture(scope="module")
def model(data):
    return cellw1.fit_conditional(data, "condition", "control", config=FAST, progress=False)


def controls(adata):
    return adata[adata.obs["condition"] == "control"].copy()


def test_predict_output_conventions(data, model):
    ctrl = controls(data)
    before = ctrl.copy()
    pred = model.predict(ctrl, perturbation="pertA")
    assert pred.shape == (ctrl.n_obs, data.n_vars)
    assert (pred.X >= 0).all()
    assert list(pred.obs["source_cell"]) == list(ctrl.obs_names)
    assert (pred.obs["perturbation"] == "pertA").all()
    assert pred.uns["cellw1"]["method"] == "w1_conditional"
    assert pred.uns["cellw1"]["output"] == "calibrated"
    assert pred.uns["cellw1"]["space"] == "pca"
    np.testing.assert_array_equal(ctrl.X.toarray(), before.X.toarray())  # input untouched
    # the real perturbation moves the cells further than the one without an effect
    assert pred.obs["response"].mean() > model.predict(ctrl, perturbation="NULL").obs["response"].mean()
    assert model.predict(ctrl, perturbation="pertA+pertB").uns["cellw1"]["output"] == "calibrated_additive"


def test_save_load_identical_predictions(data, model, tmp_path):
    model.save(tmp_path / "m")
    loaded = cellw1.load(tmp_path / "m")
    assert isinstance(loaded, cellw1.ConditionalModel)
    assert loaded.conditions == model.conditions
    assert loaded.labels == model.labels
    ctrl = controls(data)
    for label in ("pertA", "NULL", "pertA+pertB"):
        np.testing.assert_array_equal(
            model.predict(ctrl, perturbation=label).X, loaded.predict(ctrl, perturbation=label).X
        )
    with pytest.raises(ModelFileError, match="ConditionalModel"):
        cellw1.PerturbationModel.load(tmp_path / "m")
    raw = bytearray((tmp_path / "m" / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (tmp_path / "m" / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="corrupted"):
        cellw1.load(tmp_path / "m")


def test_errors_for_labels_and_doses(data, model):
    ctrl = controls(data)
    with pytest.raises(InputError, match="pertZ.*not one the model knows"):
        model.predict(ctrl, perturbation="pertZ")
    with pytest.raises(InputError, match="without dose_key"):
        model.predict(ctrl, perturbation="pertA", dose=3.0)
    with pytest.raises(InputError, match="not a perturbation"):
        model.predict(ctrl, perturbation="control")
    with pytest.raises(InputError, match="dose key 'nope'"):
        cellw1.fit_conditional(data, "condition", "control", dose_key="nope", config=FAST, progress=False)
    bad = data.copy()
    bad.obs["dose"] = "high"
    with pytest.raises(InputError, match="must hold numbers"):
        cellw1.fit_conditional(bad, "condition", "control", dose_key="dose", config=FAST, progress=False)
    small = data[(data.obs["condition"] != "pertB") | (np.arange(data.n_obs) % 20 == 0)].copy()
    with pytest.raises(InputError, match="fewer than 20 cells"):
        cellw1.fit_conditional(small, "condition", "control", config=FAST, progress=False)
    with pytest.raises(InputError, match="'pertQ' is not a value"):
        cellw1.fit_conditional(data, "condition", "control", perturbations=["pertQ"], config=FAST, progress=False)
    with pytest.raises(ConfigError, match="ConditionalConfig"):
        cellw1.fit_conditional(data, "condition", "control", config=cellw1.W2Config(), progress=False)


def test_doses(data, caplog, tmp_path):
    model = cellw1.fit_conditional(
        data, "condition", "control", perturbations=["pertA"], dose_key="dose", config=FAST, progress=False
    )
    assert [c["dose"] for c in model.conditions] == [1.0, 10.0, 100.0]
    ctrl = controls(data)
    with pytest.raises(InputError, match=r"give dose= \(training doses of 'pertA': \[1.0, 10.0, 100.0\]\)"):
        model.predict(ctrl, perturbation="pertA")
    pred = model.predict(ctrl, perturbation="pertA", dose=30.0)
    assert pred.uns["cellw1"]["dose"] == 30.0
    assert (pred.obs["dose"] == 30.0).all()
    # an unseen dose on the perturbation's dose-response curve: the input plus every training
    # dose's predicted change, weighted by the curve (cellw1.ot.conditional.dose_response)
    curve = model.dose_curves["pertA"]
    assert curve.doses == (1.0, 10.0, 100.0)
    assert pred.uns["cellw1"]["output"] == "calibrated_dose_curve"
    x = model.view("pertA", 10.0).preprocess(ctrl)
    changes = [np.asarray(model.predict(ctrl, perturbation="pertA", dose=d).X) - x for d in curve.doses]
    expected = np.maximum(x + sum(a * c for a, c in zip(curve.weights(30.0), changes, strict=True)), 0.0)
    np.testing.assert_allclose(np.asarray(pred.X), expected, rtol=1e-5, atol=1e-5)
    loaded = cellw1.load(model.save(tmp_path / "doses"))  # the curve is saved with the model
    assert loaded.dose_curves == model.dose_curves
    np.testing.assert_array_equal(loaded.predict(ctrl, perturbation="pertA", dose=30.0).X, pred.X)
    # without a curve: the network at the dose's code, calibrations interpolated in log1p(dose)
    model.dose_curves = {}
    pred = model.predict(ctrl, perturbation="pertA", dose=30.0)
    assert pred.uns["cellw1"]["output"] == "calibrated_interpolated"
    w = (np.log1p(30.0) - np.log1p(10.0)) / (np.log1p(100.0) - np.log1p(10.0))
    cal, _ = model._calibration("pertA", 30.0)
    np.testing.assert_allclose(cal, (1 - w) * model.calibration[1] + w * model.calibration[2])
    # shrink_response, on by default here: each condition's share of its response (cellw1.ot.effect)
    assert model.map.config.shrink_response
    shares = [effect["resolved"] for effect in model.map.info["effects"]]
    assert model.view("pertA", 10.0).method.response_share == shares[1]
    assert model.view("pertA", 30.0).method.response_share == pytest.approx((1 - w) * shares[1] + w * shares[2])
    assert model.view("pertA", 500.0).method.response_share == 1.0  # no cells: the whole map
    model.map.config = model.map.config.replace(shrink_response=False)
    assert model.view("pertA", 10.0).method.response_share == 1.0  # off: the whole map
    expected = "calibrated" if model.view("pertA", 10.0).method.has_response else "unchanged"  # no response: the input
    assert model.predict(ctrl, perturbation="pertA", dose=10.0).uns["cellw1"]["output"] == expected
    with caplog.at_level(logging.WARNING, logger="cellw1"):
        beyond = model.predict(ctrl, perturbation="pertA", dose=500.0)
    assert "outside the training doses [1, 100]" in caplog.text
    assert beyond.uns["cellw1"]["output"] == "calibrated_zeros"
    with pytest.raises(InputError, match="finite number >= 0"):
        model.predict(ctrl, perturbation="pertA", dose=-1.0)


def test_embedding_vectors(data, tmp_path):
    model = cellw1.fit_conditional(data, "condition", "control", embedding_key="vectors", config=FAST, progress=False)
    assert "pertNew" in model.labels  # a label with a vector but no cells can be predicted
    ctrl = controls(data)
    assert model.predict(ctrl, perturbation="pertNew").uns["cellw1"]["output"] == "calibrated_zeros"
    other = ctrl.copy()
    other.uns["vectors"] = {"pertX": [0.2, 0.3, 0.1]}  # a vector the model never saw, from the data
    assert model.predict(other, perturbation="pertX").shape == ctrl.shape
    other.uns["vectors"] = {"pertX": [0.2, 0.3]}
    with pytest.raises(InputError, match=r"vector of 'pertX' has shape \(2,\); the model reads vectors of 3"):
        model.predict(other, perturbation="pertX")
    with pytest.raises(InputError, match="pertY.*never seen.*no vector in the data's uns"):
        model.predict(other, perturbation="pertY")
    missing = data.copy()
    missing.uns["vectors"] = {"pertA": [1.0, 0.0, 0.5]}
    with pytest.raises(InputError, match="no vector for 2 trained perturbation"):
        cellw1.fit_conditional(missing, "condition", "control", embedding_key="vectors", config=FAST, progress=False)
    with pytest.raises(InputError, match="embedding key 'other' is not in adata.uns"):
        cellw1.fit_conditional(data, "condition", "control", embedding_key="other", config=FAST, progress=False)
    ragged = data.copy()
    ragged.uns["vectors"] = {**data.uns["vectors"], "pertB": [1.0, 2.0]}
    with pytest.raises(InputError, match="same length"):
        cellw1.fit_conditional(ragged, "condition", "control", embedding_key="vectors", config=FAST, progress=False)
    model.save(tmp_path / "v")
    loaded = cellw1.load(tmp_path / "v")
    np.testing.assert_array_equal(
        loaded.predict(ctrl, perturbation="pertNew").X, model.predict(ctrl, perturbation="pertNew").X
    )


def test_seeded_fit_reproducible(data):
    small = cellw1.ConditionalConfig(
        potential_iters=30, regression_iters=20, energy_iters=10, batch_size=64, eval_every=10
    )
    a, b = (
        cellw1.fit_conditional(data, "condition", "control", space="genes", config=small, seed=5, progress=False)
        for _ in range(2)
    )
    ctrl = controls(data)
    np.testing.assert_array_equal(a.predict(ctrl, perturbation="pertB").X, b.predict(ctrl, perturbation="pertB").X)


def test_cli_fit_conditional_and_predict_perturbation(data, tmp_path, capsys):
    from cellw1.cli.main import main

    path = tmp_path / "cells.h5ad"
    data.write_h5ad(path)
    fast = ["--potential-iters", "60", "--regression-iters", "60", "--energy-iters", "60", "--quiet", "--seed", "2"]
    model_dir = tmp_path / "model"
    assert (
        main(
            [
                "fit",
                str(path),
                "--condition-key",
                "condition",
                "--control",
                "control",
                "--conditional",
                "--space",
                "pca",
                "--out",
                str(model_dir),
                *fast,
            ]
        )
        == 0
    )
    assert "ConditionalModel(3 training conditions" in capsys.readouterr().out
    model = cellw1.load(model_dir)
    assert isinstance(model, cellw1.ConditionalModel)
    assert model.perturbations == ["NULL", "pertA", "pertB"]
    out = tmp_path / "pred.h5ad"
    assert (
        main(
            [
                "predict",
                str(model_dir),
                str(path),
                "--out",
                str(out),
                "--perturbation",
                "pertB",
                "--controls-only",
                "--quiet",
            ]
        )
        == 0
    )
    import anndata as ad

    written = ad.read_h5ad(out)
    ctrl = controls(data)
    assert written.n_obs == 2 * ctrl.n_obs  # --controls-only writes the controls after the predicted cells
    np.testing.assert_array_equal(written.X[: ctrl.n_obs], model.predict(ctrl, perturbation="pertB").X)
    assert written.uns["cellw1"]["method"] == "w1_conditional"
    capsys.readouterr()
    assert main(["predict", str(model_dir), str(path), "--out", str(tmp_path / "p2.h5ad"), "--quiet"]) == 2
    assert "needs --perturbation" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                str(model_dir),
                str(path),
                "--out",
                str(tmp_path / "p3.h5ad"),
                "--perturbation",
                "pertA",
                "--dose",
                "3",
                "--quiet",
            ]
        )
        == 2
    )
    assert "without dose_key" in capsys.readouterr().err
    assert (
        main(
            [
                "fit",
                str(path),
                "--condition-key",
                "condition",
                "--control",
                "control",
                "--conditional",
                "--on-disk",
                "--buffer-cells",
                "100",
                "--out",
                str(tmp_path / "disk"),
                *fast,
            ]
        )
        == 0
    )
    assert cellw1.load(tmp_path / "disk").map.info["streamed"]
    assert (
        main(
            [
                "fit",
                str(path),
                "--condition-key",
                "condition",
                "--control",
                "control",
                "--out",
                str(tmp_path / "m2"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "--conditional" in capsys.readouterr().err
    single = tmp_path / "single"
    assert (
        main(
            [
                "fit",
                str(path),
                "--condition-key",
                "condition",
                "--control",
                "control",
                "--perturbation",
                "pertA",
                "--method",
                "mean_shift",
                "--out",
                str(single),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "predict",
                str(single),
                str(path),
                "--out",
                str(tmp_path / "p4.h5ad"),
                "--perturbation",
                "pertA",
                "--quiet",
            ]
        )
        == 2
    )
    assert "for conditional models" in capsys.readouterr().err


def test_evaluate_w1_conditional_on_the_same_splits(data):
    result = cellw1.evaluate(
        data,
        "condition",
        "control",
        ["pertA", "NULL"],
        methods=["w1_conditional", "identity"],
        space="pca",
        conditional_config=FAST,
        metrics=["mmd"],
        n_splits=1,
        progress=False,
    )
    table = result.table
    assert set(table["method"]) == {"identity", "w1_conditional"}
    assert set(table.loc[table["method"] == "w1_conditional", "perturbation"]) == {"pertA", "NULL"}
    mmd = table[table["metric"] == "mmd"].set_index(["method", "perturbation"])["value"]
    assert mmd["w1_conditional", "pertA"] < mmd["identity", "pertA"]  # the real effect is predicted
    assert "shared by every perturbation" in result.settings["split_rule"]
    seconds = table[(table["metric"] == "seconds") & (table["method"] == "w1_conditional")]["value"]
    # the one fit, shared out
    assert seconds.nunique() == 1
    assert seconds.iloc[0] > 0


def test_fit_conditional_streams_from_disk(data, tmp_path):
    path = tmp_path / "cells.h5ad"
    data.write_h5ad(path)
    before = path.read_bytes()
    model = cellw1.fit_conditional(
        str(path), "condition", "control", space="pca", config=FAST, buffer_cells=64, progress=False
    )
    assert model.map.info["streamed"]
    assert path.read_bytes() == before
    ctrl = controls(data)
    obs = model.preprocessor.transform(data[data.obs["condition"] == "pertA"].X)
    start = model.preprocessor.transform(ctrl.X)
    pred = model.predict(ctrl, perturbation="pertA").X
    observed, predicted = obs.mean(0) - start.mean(0), pred.mean(0) - start.mean(0)
    assert predicted @ observed / (np.linalg.norm(predicted) * np.linalg.norm(observed)) > 0.8  # the effect's direction
    assert 0.5 < np.linalg.norm(predicted) / np.linalg.norm(observed) < 1.5
    with pytest.raises(ConfigError, match="buffer_cells"):
        cellw1.fit_conditional(data, "condition", "control", config=FAST, buffer_cells=0, progress=False)
    with pytest.raises(InputError, match="embedding_key"):
        cellw1.fit_conditional(str(path), "condition", "control", embedding_key="vectors", config=FAST, progress=False)
