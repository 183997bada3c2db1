"""The validated fit specification, a response test made before the fit, and the public predictor contract."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from conftest import TINY, count_adata

import cellw1
import cellw1.tl.pipeline as pipeline
from cellw1 import ConfigError, InputError
from cellw1.ot.effect import EffectTest
from cellw1.tl.conditional.views import ConditionView
from cellw1.tl.model import PerturbationModel
from cellw1.tl.prediction import Predictor, predict_source
from cellw1.tl.spec import ConditionalSpec, FitSpec


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    """Make counts of a control and two perturbations of different strength (17 genes)."""
    return count_adata(["ctrl", "up", "other"], 60, 17, seed=4, effects={1: 4.0, 2: 2.0}, sparse=False)


def test_the_spec_checks_every_setting_once() -> None:
    """Bad settings fail when the spec is made; good ones are stored normalised."""
    spec = FitSpec(condition_key="condition", control=0, perturbation=1.0, method="mean_shift", seed=np.int64(3))
    assert (spec.control, spec.perturbation, spec.seed) == ("0", "1", 3)  # labels as text, the seed an int
    assert type(spec.seed) is int
    for bad in (
        {"method": "nope"},
        {"space": "umap"},
        {"seed": -1},
        {"buffer_cells": 0},
        {"effect_alpha": 2.0},
        {"method": "w2", "config": TINY},  # a W1 config for W2
        {"effect": {"p_value": 0.5}},  # a dict, not an EffectTest
    ):
        with pytest.raises(ConfigError):
            FitSpec(condition_key="condition", control="ctrl", perturbation="up", **bad)
    with pytest.raises(InputError, match="both 'ctrl'"):
        FitSpec(condition_key="condition", control="ctrl", perturbation="ctrl")
    with pytest.raises(ConfigError, match="ConditionalConfig"):
        ConditionalSpec(condition_key="condition", control="ctrl", config="fast")  # type: ignore[arg-type]
    conditional = ConditionalSpec(condition_key="condition", control="ctrl", perturbations="up", config=TINY)
    assert conditional.perturbations == ("up",)
    assert type(conditional.config).__name__ == "ConditionalConfig"
    assert spec.for_perturbation("2").perturbation == "2"
    assert spec.for_perturbation("2").method == "mean_shift"


def test_a_precomputed_response_test_is_followed_instead_of_testing_again(
    adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test passed to ``fit`` is not made again, and its decision is followed."""
    fitted = cellw1.fit(adata, "condition", "ctrl", "up", method="mean_shift", seed=1, progress=False)
    made = fitted.effect
    assert made is not None
    assert made.to_dict() == fitted.info["effect"]

    def no_test(*args: object, **kwargs: object) -> EffectTest:
        raise AssertionError("the response test ran again")

    monkeypatch.setattr(pipeline, "effect_test", no_test)
    again = cellw1.fit(adata, "condition", "ctrl", "up", method="mean_shift", seed=1, progress=False, effect=made)
    np.testing.assert_array_equal(again.method.shift, fitted.method.shift)  # the same fit, no second test
    assert again.info["effect"] == fitted.info["effect"]
    # a decision made elsewhere is followed: no response there, so the controls are predicted
    none = EffectTest(energy=0.0, p_value=1.0, cells=made.cells)
    gated = cellw1.fit(adata, "condition", "ctrl", "up", method="mean_shift", seed=1, progress=False, effect=none)
    assert not gated.method.has_response
    controls = adata[adata.obs["condition"] == "ctrl"]
    np.testing.assert_allclose(gated.predict(controls).X, gated.preprocess(controls), rtol=1e-6)


def test_fit_all_warns_once_about_cells_without_a_label(adata: ad.AnnData, caplog: pytest.LogCaptureFixture) -> None:
    """The fits of ``fit_all`` leave the warning to ``fit_all`` (the spec says so)."""
    data = adata.copy()
    data.obs["condition"] = data.obs["condition"].astype(object)
    data.obs.iloc[:3, data.obs.columns.get_loc("condition")] = None
    with caplog.at_level("WARNING"):
        models = cellw1.fit_all(data, "condition", "ctrl", method="mean_shift", progress=False)
    assert set(models) == {"up", "other"}
    assert sum("have no label" in record.getMessage() for record in caplog.records) == 1


class _Negated:
    """A predictor of one's own: a model's predictions, negated (only the public contract is used)."""

    def __init__(self, model: PerturbationModel) -> None:
        self.model = model
        self.features, self.layer, self.obsm_key = model.features, model.layer, model.obsm_key
        self.condition_key, self.control, self.perturbation = model.condition_key, model.control, "negated"
        self.expression = False

    def feature_columns(self, names):
        return self.model.feature_columns(names)

    def input_values(self, raw, columns):
        return self.model.input_values(raw, columns)

    def predict_values(self, values):
        predicted, response = self.model.predict_values(values)
        return -predicted, response

    def output_obs(self, obs):
        return obs.assign(perturbation=self.perturbation)

    def output_uns(self):
        return {"negated": True}


def test_prediction_reads_only_the_public_predictor_contract(adata: ad.AnnData) -> None:
    """A predictor of one's own, with the public methods only, predicts through the one loop."""
    model = cellw1.fit(adata, "condition", "ctrl", "up", method="mean_shift", progress=False)
    controls = adata[adata.obs["condition"] == "ctrl"]
    own: Predictor = _Negated(model)
    result = predict_source(
        {"negated": own}, controls, stacked=False, out=None, cells=None, chunk_cells=7, progress=False, what="test"
    )
    assert not isinstance(result, Path)
    np.testing.assert_allclose(result.X, -model.predict(controls).X, rtol=1e-6)
    assert result.uns["cellw1"] == {"negated": True}
    assert set(result.obs["perturbation"]) == {"negated"}


def test_a_condition_view_holds_a_model_instead_of_being_one(adata: ad.AnnData) -> None:
    """A condition's view is composed of a model of the shared parts, and predicts as the conditional model."""
    model = cellw1.fit_conditional(adata, "condition", "ctrl", config=TINY, seed=0, progress=False)
    view = model.view("up")
    assert isinstance(view, ConditionView)
    assert not isinstance(view, PerturbationModel)
    assert isinstance(view.model, PerturbationModel)
    assert view.model.method is view.method
    controls = adata[adata.obs["condition"] == "ctrl"]
    np.testing.assert_array_equal(view.predict(controls).X, model.predict(controls, perturbation="up").X)
    renamed = view.relabelled("up again")
    assert renamed.perturbation == "up again"
    assert view.perturbation == "up"
