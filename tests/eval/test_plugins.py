"""Methods of the evaluation as plug-ins (:mod:`cellw1.eval.plugin`, :mod:`cellw1.eval.registry`)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellw1.eval import registry
from cellw1.eval.baselines import AdditiveBaseline, GlobalMeanBaseline, NearestBaseline
from cellw1.eval.conditional import ConditionalMethod
from cellw1.eval.evaluation import evaluate
from cellw1.eval.external import ExternalMethod
from cellw1.eval.fitted import FittedMethod
from cellw1.eval.plan import plan_evaluation
from cellw1.eval.plugin import STAGES, Prediction, SplitMethod, SplitRun


@pytest.fixture(scope="module")
def cells() -> ad.AnnData:
    """4 features: 150 controls at 0, 90 cells each of A (shifted by 2) and B (shifted by -2)."""
    rng = np.random.default_rng(3)
    labels = ["ctrl"] * 150 + ["A"] * 90 + ["B"] * 90
    shift = {"ctrl": 0.0, "A": 2.0, "B": -2.0}
    x = rng.normal(scale=0.5, size=(len(labels), 4)) + np.array([[shift[label]] for label in labels])
    adata = ad.AnnData(
        X=np.zeros((len(labels), 2), dtype=np.float32),
        obs=pd.DataFrame({"cond": labels}, index=[f"c{i}" for i in range(len(labels))]),
    )
    adata.obsm["X_feat"] = x.astype(np.float32)
    return adata


def plan(adata: ad.AnnData, methods: tuple[str, ...], **kwargs):
    """Make the plan of ``evaluate`` with its defaults, on the obsm features unless told otherwise."""
    options = {
        "configs": {},
        "n_splits": 1,
        "n_repeats": None,
        "n_de_genes": 50,
        "de_direction": "up",
        "holdout": None,
        "metrics": None,
        "plot_perturbation": None,
        "suite": "cellw1",
        "external": None,
        "seed": 0,
        "effect_alpha": None,
        "space": "genes",
        "layer": None,
        "obsm_key": "X_feat",
        "embedding_config": None,
        "input_kind": "auto",
    }
    return plan_evaluation(adata, "cond", "ctrl", None, methods=methods, **{**options, **kwargs})


def test_every_method_name_has_its_plug_in_and_stage(cells):
    """Each name gets its plug-in, in the order given, external tools last."""
    methods = ("identity", "w1", "global_mean", "additive", "nearest", "w1_conditional")
    chosen = plan(cells, methods, obsm_key=None, external={"tool": lambda *args: None})
    plugins = registry.split_methods(chosen)
    kinds = [type(p) for p in plugins]
    assert kinds == [
        FittedMethod,
        FittedMethod,
        GlobalMeanBaseline,
        AdditiveBaseline,
        NearestBaseline,
        ConditionalMethod,
        ExternalMethod,
    ]
    assert [p.name for p in plugins] == [*methods, "tool"]
    # the conditional model predicts after the methods of the shared embedding, nearest last
    order = [STAGES.index(p.stage) for p in plugins]
    assert order[5] > max(order[:2])
    assert order[4] == len(STAGES) - 1


class Controls(SplitMethod):
    """A plug-in that predicts the held-out controls unchanged."""

    stage = "context"

    def predict(self, split: SplitRun) -> Prediction:
        """Predict the split's held-out controls, in its units."""
        return Prediction(split.units().control, 0.0)


def test_a_plug_in_is_scored_like_a_fitted_method(cells, monkeypatch):
    """A plug-in's prediction goes through the same scoring as a fitted method's."""
    monkeypatch.setitem(registry.PLUGINS, "global_mean", Controls)
    table = evaluate(
        cells, "cond", "ctrl", methods=("identity", "global_mean"), obsm_key="X_feat", n_splits=1, progress=False
    ).table
    scores = table[table["metric"] != "seconds"].pivot_table(
        index=["perturbation", "metric"], columns="method", values="value"
    )
    # identity predicts its input exactly: the same cells as the plug-in, so the same scores
    np.testing.assert_array_equal(scores["global_mean"].to_numpy(), scores["identity"].to_numpy())
    assert len(scores) > 0
    seconds = table[(table["metric"] == "seconds") & (table["method"] == "global_mean")]["value"]
    assert (seconds == 0.0).all()
    assert set(table[table["method"] == "global_mean"]["perturbation"]) == {"A", "B"}
