"""Baselines under honest names: ``mean_shift``, the deprecated alias ``scgen``, the real scGen (``scgen_vae``)."""

from __future__ import annotations

import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import cellw1
from cellw1.errors import ConfigError, MissingDependencyError
from cellw1.tl.methods import METHODS, MeanShift, check_method, load_method
from cellw1.tl.scgen import ScGenConfig


def _data(n: int = 120, genes: int = 12, seed: int = 0) -> ad.AnnData:
    """Log-like data: the perturbed cells are the controls' distribution moved up by 1.5 on genes 0-3."""
    rng = np.random.default_rng(seed)
    control = rng.gamma(2.0, 0.5, size=(n, genes))
    perturbed = rng.gamma(2.0, 0.5, size=(n, genes))
    perturbed[:, :4] += 1.5
    obs = pd.DataFrame({"condition": ["ctrl"] * n + ["up"] * n}, index=[f"c{i}" for i in range(2 * n)])
    return ad.AnnData(
        X=np.concatenate([control, perturbed]).astype(np.float32),
        obs=obs,
        var=pd.DataFrame(index=[f"g{i}" for i in range(genes)]),
    )


def test_mean_shift_is_the_name_and_scgen_is_no_method_of_its_own() -> None:
    assert "mean_shift" in METHODS
    assert "scgen" not in METHODS
    assert MeanShift.name == "mean_shift"
    assert check_method("mean_shift") == "mean_shift"
    with pytest.raises(ConfigError, match="unknown method 'meanshift'"):
        check_method("meanshift")


def test_scgen_alias_warns_and_fits_the_mean_shift() -> None:
    adata = _data()
    new = cellw1.fit(adata, "condition", "ctrl", "up", method="mean_shift", input_kind="log", progress=False)
    with pytest.warns(FutureWarning, match="'scgen' is deprecated.*mean_shift"):
        old = cellw1.fit(adata, "condition", "ctrl", "up", method="scgen", input_kind="log", progress=False)
    assert old.method.name == "mean_shift"
    np.testing.assert_array_equal(old.method.shift, new.method.shift)
    controls = adata[adata.obs["condition"] == "ctrl"]
    np.testing.assert_array_equal(old.predict(controls).X, new.predict(controls).X)


def test_fit_all_warns_once_for_the_alias() -> None:
    with pytest.warns(FutureWarning) as caught:
        collection = cellw1.fit_all(_data(), "condition", "ctrl", method="scgen", input_kind="log", progress=False)
    assert len([w for w in caught if issubclass(w.category, FutureWarning)]) == 1
    assert [collection[label].method.name for label in collection] == ["mean_shift"]
    with pytest.raises(ConfigError, match="method must be a name"):
        check_method(None)  # type: ignore[arg-type]


def test_evaluate_labels_the_alias_mean_shift() -> None:
    adata = _data(n=90)
    with pytest.warns(FutureWarning, match="deprecated"):
        result = cellw1.evaluate(
            adata,
            "condition",
            "ctrl",
            methods=("identity", "scgen"),
            input_kind="log",
            metrics=["l2"],
            n_de_genes=5,
            n_splits=1,
            progress=False,
        )
    assert set(result.table["method"]) == {"identity", "mean_shift"}
    with pytest.raises(ConfigError, match="more than once"), pytest.warns(FutureWarning):
        cellw1.evaluate(adata, "condition", "ctrl", methods=("mean_shift", "scgen"), progress=False)


def test_models_saved_as_scgen_load_quietly_as_mean_shift() -> None:
    shift = np.arange(4, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method = load_method({"shift": torch.from_numpy(shift)}, {"name": "scgen", "info": {"n_balanced": 3}})
    assert isinstance(method, MeanShift)
    assert method.name == "mean_shift"
    np.testing.assert_array_equal(method.predict(np.zeros((2, 4), dtype=np.float32)), np.tile(shift, (2, 1)))


def test_cli_fit_accepts_the_alias(tmp_path) -> None:
    from cellw1.cli.main import main

    path = tmp_path / "data.h5ad"
    _data().write_h5ad(path)
    with pytest.warns(FutureWarning, match="deprecated"):
        code = main(
            [
                "fit",
                str(path),
                "--condition-key",
                "condition",
                "--control",
                "ctrl",
                "--perturbation",
                "up",
                "--method",
                "scgen",
                "--out",
                str(tmp_path / "model"),
                "--quiet",
            ]
        )
    assert code == 0
    assert cellw1.load(tmp_path / "model").method.name == "mean_shift"


def test_scgen_vae_without_the_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pertpy", None)  # makes `import pertpy` fail, installed or not
    with pytest.raises(MissingDependencyError, match=r'pip install "cellw1\[scgen\]"'):
        cellw1.fit(_data(), "condition", "ctrl", "up", method="scgen_vae", input_kind="log", progress=False)


def test_scgen_config_checks_its_values() -> None:
    with pytest.raises(ConfigError, match="max_epochs"):
        ScGenConfig(max_epochs=0)
    with pytest.raises(ConfigError, match="dropout_rate"):
        ScGenConfig(dropout_rate=1.0)
    with pytest.raises(ConfigError, match="needs a ScGenConfig"):
        cellw1.fit(_data(), "condition", "ctrl", "up", method="scgen_vae", config=cellw1.W1Config(), progress=False)


def test_real_scgen_predicts_the_response_and_round_trips(tmp_path) -> None:
    pytest.importorskip("pertpy", reason='the real scGen is optional: pip install "cellw1[scgen]"')
    adata = _data(n=200)
    config = ScGenConfig(n_hidden=64, n_latent=8, max_epochs=40, batch_size=64)
    model = cellw1.fit(
        adata, "condition", "ctrl", "up", method="scgen_vae", config=config, input_kind="log", seed=0, progress=False
    )
    assert model.method.name == "scgen_vae"
    controls = adata[adata.obs["condition"] == "ctrl"]
    perturbed = np.asarray(adata[adata.obs["condition"] == "up"].X)
    pred = model.predict(controls)
    change = np.asarray(pred.X).mean(0) - np.asarray(controls.X).mean(0)
    # genes 0-3 move up by 1.5 in the data; scGen must move them much more than the others
    assert change[:4].mean() > 0.75
    assert abs(change[4:]).mean() < 0.5 * change[:4].mean()
    assert np.abs(np.asarray(pred.X).mean(0) - perturbed.mean(0))[:4].max() < 1.0
    model.save(tmp_path / "m")
    again = cellw1.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict(controls).X, pred.X, rtol=1e-5, atol=1e-5)
