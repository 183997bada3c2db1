"""The evaluation protocol: split sizes, the tidy table, summaries, rank-sum tests, files, OOD mode."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, count_adata, shallow_and_deep_counts
from scipy.stats import ranksums

from cellw1.datasets import synthetic_perturbation
from cellw1.errors import ConfigError, InputError
from cellw1.eval.evaluation import evaluate
from cellw1.eval.metrics import METRICS
from cellw1.eval.result import EvaluationResult
from cellw1.eval.scoring import SPLIT_METRICS
from cellw1.eval.splits import n_test_cells, split_group
from cellw1.tl import api

METHODS = ("identity", "observed", "mean_shift", "w1")
METRIC_NAMES = [*METRICS, *SPLIT_METRICS, "responder_share", "seconds", "control_shift"]


@pytest.fixture(scope="module")
def data() -> ad.AnnData:
    return synthetic_perturbation(n_control=300, n_perturbed=300, n_genes=60, seed=0)


@pytest.fixture(scope="module")
def result(data: ad.AnnData) -> tuple[EvaluationResult, ad.AnnData]:
    before = data.copy()
    # the smallest W1 schedule: the tests read the table's shape, not the W1 map's quality
    res = evaluate(data, "condition", "control", methods=METHODS, n_splits=2, config=TINY, progress=False)
    return res, before


class FitSpy:
    """Wraps ``cellw1.tl.api.fit`` to record the training cells and the cells each model predicts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict] = []
        real_fit = api.fit

        def spy(adata, condition_key, control, perturbation, **kwargs):
            model = real_fit(adata, condition_key, control, perturbation, **kwargs)
            record = {"train": adata.obs.copy(), "perturbation": perturbation, "method": kwargs["method"]}
            self.calls.append(record)
            real_predict = model.predict

            def predict(cells):
                record["test_control"] = cells.obs.copy()
                return real_predict(cells)

            model.predict = predict
            return model

        monkeypatch.setattr(api, "fit", spy)


# -- the split rule -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "expected"), [(48, 16), (1000, 333), (2386, 500), (6000, 1000), (2500, 500), (4000, 800)]
)
def test_test_size_rule(n, expected):
    assert n_test_cells(n) == expected
    assert n_test_cells(n) == min(max(round(0.2 * n), 500), 1000, n // 3)


@pytest.mark.parametrize("n", [48, 1000, 2386, 6000])
def test_split_group_is_a_seeded_partition(n):
    train, test = split_group(n, np.random.default_rng(1))
    assert test.size == n_test_cells(n)
    assert train.size == n - test.size
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    again_train, again_test = split_group(n, np.random.default_rng(1))
    np.testing.assert_array_equal(test, again_test)
    assert not np.array_equal(test, split_group(n, np.random.default_rng(2))[1])


# -- evaluate on a tiny synthetic data set ---------------------------------------------------------
def test_table_has_one_row_per_method_perturbation_repeat_metric(result):
    res, _ = result
    table = res.table
    assert list(table.columns) == ["method", "perturbation", "repeat", "metric", "value"]
    moving = ("mean_shift", "w1")  # the methods that move cells have a row saying whether they were gated
    assert len(table) == len(METHODS) * 2 * 2 * len(METRIC_NAMES) + len(moving) * 2 * 2
    assert not table.duplicated(["method", "perturbation", "repeat", "metric"]).any()
    assert set(table["method"]) == set(METHODS)
    assert set(table["perturbation"]) == {"pertA", "NULL"}
    assert set(table["repeat"]) == {0, 1}
    assert set(table["metric"]) == {*METRIC_NAMES, "gated"}
    assert set(table.loc[table["metric"] == "gated", "method"]) == set(moving)
    assert np.isfinite(table["value"]).all()
    seconds = table[table["metric"] == "seconds"].set_index("method")["value"]
    assert (seconds > 0).all()
    assert seconds["w1"].min() > seconds["identity"].max()  # a neural fit takes longer than a copy


def test_observed_beats_identity_on_a_real_effect(result):
    res, _ = result
    mmd = res.table[(res.table["metric"] == "mmd") & (res.table["perturbation"] == "pertA")]
    by_method = mmd.groupby("method")["value"].mean()
    assert by_method["observed"] < by_method["identity"]


def test_input_adata_is_not_modified(result, data):
    _, before = result
    assert (data.X != before.X).nnz == 0
    assert data.obs.equals(before.obs)
    assert list(data.var_names) == list(before.var_names)
    assert data.uns.keys() == before.uns.keys()


def test_summary_matches_quantiles(result):
    res, _ = result
    summary = res.summary()
    assert list(summary.columns) == ["method", "metric", "median", "q25", "q75", "n"]
    assert len(summary) == len(METHODS) * len(METRIC_NAMES) + 2  # and "gated" of the mean shift and W1
    row = summary[(summary["method"] == "mean_shift") & (summary["metric"] == "l2")].iloc[0]
    values = res.table.query("method == 'mean_shift' and metric == 'l2'")["value"].to_numpy()
    assert row["n"] == 4
    assert row["median"] == pytest.approx(np.median(values))
    assert row["q25"] == pytest.approx(np.quantile(values, 0.25))
    assert row["q75"] == pytest.approx(np.quantile(values, 0.75))


def test_save_writes_tables_and_figures(result, tmp_path):
    res, _ = result
    written = res.save(tmp_path / "out")
    names = {p.name for p in written}
    assert {"results.csv", "summary.csv", "wilcoxon.csv", "metrics.png", "embedding.png", "mean_change.png"} <= names
    for p in written:
        assert p.stat().st_size > 0
    assert (tmp_path / "out" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(saved) == len(res.table)
    wil = pd.read_csv(tmp_path / "out" / "wilcoxon.csv")
    assert set(wil["method"]) == {"identity", "observed", "mean_shift"}
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporary files left behind


def test_save_over_an_earlier_report_leaves_none_of_its_figures(result, tmp_path):
    """A report saved over one with a forest plot, having none itself, removes the stale plot."""
    res, _ = result
    first = res.save(tmp_path / "out")  # w1 against the baselines: a forest plot
    assert tmp_path / "out" / "forest.png" in first
    second = res.save(tmp_path / "out", reference="scgen_vae")  # not evaluated: no comparisons, no forest plot
    assert tmp_path / "out" / "forest.png" not in second
    assert not (tmp_path / "out" / "forest.png").exists()
    assert (tmp_path / "out" / "embedding.png").exists()  # written again, kept


def test_embedding_snapshot_holds_repeat_zero_of_the_first_perturbation(result):
    res, _ = result
    snap = res.embedding
    assert snap is not None
    assert snap.perturbation == "pertA"
    assert set(snap.predicted) == set(METHODS)
    n_test = n_test_cells(300)
    # 50 DE genes
    assert snap.control.shape == (n_test, 50)
    assert snap.observed.shape == (n_test, 50)
    np.testing.assert_allclose(snap.predicted["identity"], snap.control, atol=1e-5)


def test_splits_are_disjoint_and_sized_by_the_rule(data, monkeypatch):
    spy = FitSpy(monkeypatch)
    evaluate(
        data,
        "condition",
        "control",
        ["pertA"],
        methods=("identity", "mean_shift"),
        metrics=["l2"],
        n_splits=1,
        progress=False,
    )
    assert [c["method"] for c in spy.calls] == ["identity", "mean_shift"]
    for call in spy.calls:
        counts = call["train"]["condition"].astype(str).value_counts()
        assert counts.to_dict() == {"control": 200, "pertA": 200}  # 300 - n_test_cells(300)
        test = call["test_control"]
        assert len(test) == 100
        assert set(test["condition"].astype(str)) == {"control"}
        assert not set(test.index) & set(call["train"].index)
    # both methods see the same split
    assert list(spy.calls[0]["train"].index) == list(spy.calls[1]["train"].index)


def test_the_split_depends_on_the_seed_and_repeat(data, monkeypatch):
    spy = FitSpy(monkeypatch)
    evaluate(data, "condition", "control", ["pertA"], methods=("identity",), metrics=["l2"], n_splits=2, progress=False)
    evaluate(data, "condition", "control", ["pertA"], methods=("identity",), metrics=["l2"], n_splits=1, progress=False)
    first, second, again = (set(c["test_control"].index) for c in spy.calls)
    assert first != second
    assert first == again


# -- out of distribution ---------------------------------------------------------------------------
def test_holdout_trains_without_the_held_out_value_and_tests_on_it(data, monkeypatch):
    spy = FitSpy(monkeypatch)
    res = evaluate(
        data,
        "condition",
        "control",
        ["pertA"],
        methods=("identity", "observed"),
        metrics=["mmd"],
        holdout=("cell_type", "type1"),
        n_splits=1,
        progress=False,
    )
    n_type1_control = int(((data.obs["condition"] == "control") & (data.obs["cell_type"] == "type1")).sum())
    for call in spy.calls:
        assert "type1" not in set(call["train"]["cell_type"].astype(str))
        assert set(call["train"]["condition"].astype(str)) == {"control", "pertA"}
        assert set(call["test_control"]["cell_type"].astype(str)) == {"type1"}
        assert len(call["test_control"]) == n_type1_control
    mmd = res.table[res.table["metric"] == "mmd"].set_index("method")["value"]
    # "observed" samples perturbed cells of the *training* types, which differ from type1 far
    # more than pertA does: out of distribution it is no longer an upper bound.
    assert mmd["observed"] > mmd["identity"]


def test_holdout_of_a_batch_keeps_observed_ahead(data):
    """The batch effect is small, so perturbed cells of the other batch still look like the truth."""
    res = evaluate(
        data,
        "condition",
        "control",
        ["pertA"],
        methods=("identity", "observed"),
        metrics=["mmd"],
        holdout=("batch", "batch1"),
        n_splits=1,
        progress=False,
    )
    mmd = res.table[res.table["metric"] == "mmd"].set_index("method")["value"]
    assert mmd["observed"] < mmd["identity"]


def test_holdout_with_unknown_value_lists_the_values(data):
    with pytest.raises(InputError, match=r"type0.*type1.*type2"):
        evaluate(data, "condition", "control", methods=("identity",), holdout=("cell_type", "liver"), progress=False)
    with pytest.raises(InputError, match="cell_type"):
        evaluate(data, "condition", "control", methods=("identity",), holdout=("tissue", "liver"), progress=False)


# -- other inputs ----------------------------------------------------------------------------------
def test_obsm_features_are_all_scored(monkeypatch):
    rng = np.random.default_rng(0)
    n = 300
    x = np.vstack([rng.normal(size=(n, 4)), rng.normal(loc=2.0, size=(n, 4))]).astype(np.float32)
    adata = ad.AnnData(
        X=np.zeros((2 * n, 3), dtype=np.float32),
        obs=pd.DataFrame({"cond": ["c"] * n + ["p"] * n}, index=[f"c{i}" for i in range(2 * n)]),
    )
    adata.obsm["X_feat"] = x
    res = evaluate(
        adata,
        "cond",
        "c",
        methods=("identity", "mean_shift"),
        obsm_key="X_feat",
        metrics=["l2"],
        n_splits=1,
        progress=False,
    )
    l2 = res.table[res.table["metric"] == "l2"].set_index("method")["value"]
    assert l2["identity"] == pytest.approx(4.0, abs=0.5)  # |(2, 2, 2, 2)| = 4 on all four features
    assert l2["mean_shift"] < 0.8
    assert res.embedding is not None
    assert res.embedding.control.shape[1] == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": ("identity", "gan")}, ConfigError, "gan"),
        ({"methods": ()}, ConfigError, "empty"),
        ({"n_splits": 0}, ConfigError, "n_splits"),
        ({"n_splits": 2, "n_repeats": 2}, ConfigError, "not both"),
        ({"metrics": ["accuracy"]}, ConfigError, "accuracy"),
        ({"perturbations": ["pertZ"]}, InputError, "pertZ"),
        ({"plot_perturbation": "pertZ"}, InputError, "pertZ"),
    ],
)
def test_bad_arguments_raise_before_fitting(data, kwargs, error, match):
    args = {"methods": ("identity",), "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        evaluate(data, "condition", "control", **args)


def test_too_small_groups_are_named():
    small = synthetic_perturbation(n_control=200, n_perturbed=20, n_genes=20)
    with pytest.raises(InputError, match="pertA"):
        evaluate(small, "condition", "control", methods=("identity",), progress=False)


# -- rank-sum tests on hand-made tables -------------------------------------------------
def hand_table() -> pd.DataFrame:
    rows = []
    values = {"w1": [0.1, 0.2, 0.3, 0.25], "mean_shift": [0.5, 0.6, 0.4, 0.7], "identity": [0.9, 1.0, 1.1, 1.2]}
    r2 = {"w1": [0.9, 0.8, 0.85, 0.95], "mean_shift": [0.99, 0.97, 0.98, 0.96], "identity": [0.5, 0.4, 0.6, 0.3]}
    for method in values:
        for i in range(4):
            rows.append((method, f"p{i % 2}", i // 2, "mmd", values[method][i]))
            rows.append((method, f"p{i % 2}", i // 2, "r2", r2[method][i]))
    return pd.DataFrame(rows, columns=["method", "perturbation", "repeat", "metric", "value"])


def test_wilcoxon_uses_ranksums_and_the_metric_direction():
    res = EvaluationResult(hand_table())
    wil = res.wilcoxon().set_index(["metric", "method"])
    assert set(wil.index) == {("mmd", "mean_shift"), ("mmd", "identity"), ("r2", "mean_shift"), ("r2", "identity")}
    expected = ranksums([0.1, 0.2, 0.3, 0.25], [0.5, 0.6, 0.4, 0.7])
    assert wil.loc[("mmd", "mean_shift"), "statistic"] == pytest.approx(expected.statistic)
    assert wil.loc[("mmd", "mean_shift"), "pvalue"] == pytest.approx(expected.pvalue)
    assert wil.loc[("mmd", "mean_shift"), "better"] == "w1"  # lower mmd is better
    assert wil.loc[("r2", "mean_shift"), "better"] == "mean_shift"  # higher r2 is better
    assert wil.loc[("r2", "identity"), "better"] == "w1"
    with pytest.raises(ConfigError, match="w2"):
        res.wilcoxon(reference="w2")


def test_control_shift_is_zero_for_identity_and_left_out_of_wilcoxon(result):
    res, _ = result
    shift = res.table[res.table["metric"] == "control_shift"].set_index(["method", "perturbation", "repeat"])["value"]
    assert np.allclose(shift.loc["identity"], 0.0, atol=1e-6)
    assert (shift.loc["observed"] > 0).all()
    assert "control_shift" not in set(res.wilcoxon()["metric"])


def test_one_test_for_a_response_gates_every_method_that_moves_cells(result, data):
    """The perturbation's test decides for every method alike (issue 21): NULL is predicted as its controls by
    the mean shift and W1; identity and observed are not gated; effect_alpha=None switches it off for all.
    """
    res, _ = result
    table = res.table
    gated = table[table["metric"] == "gated"].pivot_table("value", ["perturbation", "repeat"], "method")
    assert set(gated.columns) == {"mean_shift", "w1"}
    assert (gated["mean_shift"] == gated["w1"]).all()
    assert (gated.loc["NULL"] == 1).all().all()
    assert (gated.loc["pertA"] == 0).all().all()
    assert res.settings["gated"] == [("NULL", 0), ("NULL", 1)]
    assert res.settings["effect_alpha"] == 0.05
    mmd = table[table["metric"] == "mmd"].pivot_table("value", ["perturbation", "repeat"], "method")
    np.testing.assert_array_equal(mmd.loc["NULL", "mean_shift"], mmd.loc["NULL", "identity"])
    np.testing.assert_array_equal(mmd.loc["NULL", "w1"], mmd.loc["NULL", "identity"])
    off = evaluate(
        data,
        "condition",
        "control",
        ["NULL"],
        methods=("identity", "mean_shift"),
        n_splits=1,
        effect_alpha=None,
        progress=False,
    ).table
    assert (off.loc[off["metric"] == "gated", "value"] == 0).all()
    shifted = off[(off["metric"] == "mmd") & (off["method"] == "mean_shift")]["value"].to_numpy()
    assert not np.array_equal(shifted, off[(off["metric"] == "mmd") & (off["method"] == "identity")]["value"])


def test_n_splits_defaults_to_5_and_n_repeats_is_its_deprecated_alias(data):
    args = {"methods": ("identity",), "metrics": ["l2"], "progress": False}
    res = evaluate(data, "condition", "control", ["pertA"], **args)
    assert res.settings["n_splits"] == 5
    assert sorted(set(res.table["repeat"])) == [0, 1, 2, 3, 4]
    with pytest.warns(FutureWarning, match="n_splits"):
        old = evaluate(data, "condition", "control", ["pertA"], n_repeats=2, **args)
    assert old.settings["n_splits"] == 2
    scores = res.table[(res.table["repeat"] < 2) & (res.table["metric"] != "seconds")].reset_index(drop=True)
    assert old.table[old.table["metric"] != "seconds"].reset_index(drop=True).equals(scores)  # the same splits


def test_the_response_axis_follows_a_response_that_only_goes_down():
    # a knock-out that lowers genes 0-3 and raises none: the scored genes (ranked up) miss it,
    # the response axis (DE genes in either direction) follows it, so the controls stay about one
    # mean response from the observed cells and the observed ceiling is near 0
    adata = count_adata(["ctrl", "ko"], [300, 300], 30, seed=3, effects={1: 0.15}, affected=4, gamma=(4.0, 1.0))
    res = evaluate(
        adata, "condition", "ctrl", methods=["identity", "observed"], n_splits=2, n_de_genes=4,
        metrics=["response_w1", "responder_share_error"], effect_alpha=None, progress=False,
    )  # fmt: skip
    table = res.table.set_index(["method", "repeat", "metric"])["value"]
    for repeat in (0, 1):
        assert table["identity", repeat, "response_w1"] == pytest.approx(1.0, abs=0.15)
        assert table["observed", repeat, "response_w1"] < 0.15
        assert table["identity", repeat, "responder_share"] < 0.1
        assert table["observed", repeat, "responder_share"] > 0.9


# -- the input kind, decided once -------------------------------------------------------------------
def kinds_of_fits(monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str, str]]:
    """Record (perturbation, method, input kind) of every fit of an evaluation."""
    kinds: set[tuple[str, str, str]] = set()
    real_fit = api.fit

    def spy(adata, condition_key, control, perturbation, **kwargs):
        model = real_fit(adata, condition_key, control, perturbation, **kwargs)
        kinds.add((perturbation, kwargs["method"], model.preprocessor.input_kind))
        return model

    monkeypatch.setattr(api, "fit", spy)
    return kinds


def test_every_fit_of_an_evaluation_has_one_input_kind(monkeypatch, caplog):
    """The cells of up alone are detected as counts, down's as log-normalised: the evaluation decides once."""
    data = shallow_and_deep_counts()
    kinds = kinds_of_fits(monkeypatch)
    with caplog.at_level("INFO", logger="cellw1"):
        result = evaluate(data, "condition", "ctrl", methods=("identity", "mean_shift"), n_splits=1, progress=False)
    assert kinds == {(p, m, "counts") for p in ("up", "down") for m in ("identity", "mean_shift")}
    assert result.settings["input_kind"] == "counts"  # the conditional model is given it too (plan.input_kind)
    assert sum("decided once" in r.getMessage() for r in caplog.records) == 1


def test_an_explicit_input_kind_is_kept_by_the_evaluation(monkeypatch):
    kinds = kinds_of_fits(monkeypatch)
    evaluate(
        shallow_and_deep_counts(),
        "condition",
        "ctrl",
        methods=("identity",),
        input_kind="log",
        n_splits=1,
        progress=False,
    )
    assert {kind for _, _, kind in kinds} == {"log"}


def test_continuous_input_is_warned_about_once(caplog):
    """Values of any sign: one warning for the whole evaluation, not one per fit."""
    data = shallow_and_deep_counts()
    data.X = data.X.toarray() - 1.5
    with caplog.at_level("WARNING", logger="cellw1"):
        evaluate(data, "condition", "ctrl", methods=("identity", "observed", "mean_shift"), n_splits=1, progress=False)
    assert sum("treated as continuous" in r.getMessage() for r in caplog.records) == 1


def test_a_chosen_baseline_with_nothing_to_score_is_warned_and_named_in_the_report(data, tmp_path, caplog):
    # additive scores combinations "A+B"; this data has none, so a user who asked for it hears why it has no rows
    with caplog.at_level("WARNING", logger="cellw1.eval.plan"):
        res = evaluate(data, "condition", "control", methods=["identity", "additive"], n_splits=1, progress=False)
    assert "additive" not in set(res.table["method"])
    assert any("additive" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    res.save(tmp_path / "out")
    assert "No rows for additive" in (tmp_path / "out" / "report.md").read_text()


def test_evaluate_reads_a_file_as_fit_does(data, tmp_path):
    path = tmp_path / "cells.h5ad"
    data.write_h5ad(path)
    settings = dict(methods=["identity", "mean_shift"], n_splits=1, progress=False)
    from_file = evaluate(str(path), "condition", "control", **settings)
    in_memory = evaluate(data, "condition", "control", **settings)
    columns = ["method", "perturbation", "repeat", "metric"]
    pd.testing.assert_frame_equal(
        from_file.table.drop(columns="value").reset_index(drop=True),
        in_memory.table.drop(columns="value").reset_index(drop=True),
    )
    values = from_file.table[~from_file.table.metric.eq("seconds")].set_index(columns)["value"]
    expected = in_memory.table[~in_memory.table.metric.eq("seconds")].set_index(columns)["value"]
    pd.testing.assert_series_equal(values, expected)
    with pytest.raises(InputError, match="does not exist"):
        evaluate(tmp_path / "missing.h5ad", "condition", "control", **settings)


def test_de_direction_either_scores_a_knock_out_on_the_genes_it_lowers():
    # the response only goes down: ranked up, the 4 scored genes are noise; in either direction, the 4 it lowers
    adata = count_adata(["ctrl", "ko"], [300, 300], 30, seed=3, effects={1: 0.15}, affected=4, gamma=(4.0, 1.0))
    shift = {}
    for direction in ("up", "either"):
        res = evaluate(
            adata, "condition", "ctrl", methods=["observed"], n_splits=1, n_de_genes=4, de_direction=direction,
            metrics=["l2"], effect_alpha=None, progress=False,
        )  # fmt: skip
        assert res.settings["de_direction"] == direction
        shift[direction] = res.table.set_index("metric").loc["control_shift", "value"]
    assert shift["either"] > 3 * shift["up"]
    with pytest.raises(ConfigError, match="de_direction='down'"):
        evaluate(adata, "condition", "ctrl", methods=["observed"], de_direction="down", progress=False)
