"""cell-eval as an evaluation backend, and `cellw1 predict --controls-only` output read by `cell-eval run` as it is.

The tests that run cell-eval are skipped, with the reason, where the optional extra
``cellw1[eval]`` is not installed; .ci/run installs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import count_adata

import cellw1
from cellw1.errors import ConfigError, MissingDependencyError
from cellw1.eval.celleval import ACROSS_PERTURBATIONS

SKIP_REASON = 'cell-eval is optional: pip install "cellw1[eval]"'


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    """Counts: 'up' multiplies the first 5 of 40 genes by 4."""
    return count_adata(["ctrl", "up"], 240, 40, seed=5, effects={1: 4.0}, sparse=False)


def test_missing_cell_eval_names_the_extra(adata: ad.AnnData, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cell_eval", None)  # makes `import cell_eval` fail, installed or not
    with pytest.raises(MissingDependencyError, match=r'pip install "cellw1\[eval\]"'):
        cellw1.evaluate(adata, "condition", "ctrl", methods=["identity"], suite="cell-eval", progress=False)


def test_unknown_suite() -> None:
    with pytest.raises(ConfigError, match="unknown suite 'celleval'"):
        cellw1.evaluate(count_adata(["c", "p"], 60, 5), "condition", "c", suite="celleval", progress=False)


@pytest.fixture(scope="module")
def result(adata: ad.AnnData) -> cellw1.EvaluationResult:
    pytest.importorskip("cell_eval", reason=SKIP_REASON)
    return cellw1.evaluate(
        adata,
        "condition",
        "ctrl",
        methods=["identity", "observed", "mean_shift"],
        suite="cell-eval",
        n_de_genes=10,
        n_splits=1,
        progress=False,
    )


def test_cell_eval_metrics_sit_next_to_cellw1s(result: cellw1.EvaluationResult) -> None:
    medians = result.summary().pivot(index="method", columns="metric", values="median")
    for metric in (
        "mmd",
        "energy",
        "r2",
        "l2",
        "overlap_at_N",
        "pearson_delta",
        "mse",
        "de_nsig_counts_pred",
        "de_nsig_counts_real",
    ):
        assert metric in medians.columns, metric
    assert not set(ACROSS_PERTURBATIONS) & set(medians.columns)  # undefined with one perturbation per split
    assert result.settings["suite"] == "cell-eval"
    # known answers: real perturbed training cells match the held-out perturbed cells far better than the
    # unchanged controls; the 5 genes moved fourfold are the DE genes of both real and observed
    assert medians.loc["observed", "mse"] < 0.25 * medians.loc["identity", "mse"]
    assert medians.loc["observed", "pearson_delta"] > 0.9
    assert medians.loc["mean_shift", "pearson_delta"] > 0.9
    assert medians.loc["observed", "de_nsig_counts_real"] >= 5
    assert medians.loc["identity", "de_nsig_counts_pred"] <= 2  # no response predicted: (almost) nothing DE


def test_cell_eval_wilcoxon_and_report(result: cellw1.EvaluationResult, tmp_path: Path) -> None:
    wilcoxon = result.wilcoxon("mean_shift")
    assert "overlap_at_N" in set(wilcoxon["metric"])
    assert "de_nsig_counts_pred" not in set(wilcoxon["metric"])
    row = wilcoxon[(wilcoxon["metric"] == "mse") & (wilcoxon["method"] == "identity")].iloc[0]
    assert not row["higher_is_better"]
    assert row["better"] == "mean_shift"
    written = result.save(tmp_path / "report")
    assert "overlap_at_N" in set(pd.read_csv(tmp_path / "report" / "results.csv")["metric"])
    assert any(p.name == "metrics.png" for p in written)


def test_cell_eval_refuses_obsm(adata: ad.AnnData) -> None:
    pytest.importorskip("cell_eval", reason=SKIP_REASON)
    a = adata.copy()
    a.obsm["X_emb"] = np.random.default_rng(0).normal(size=(a.n_obs, 3))
    with pytest.raises(ConfigError, match="obsm_key"):
        cellw1.evaluate(a, "condition", "ctrl", obsm_key="X_emb", suite="cell-eval", progress=False)


def test_cli_evaluate_suite(adata: ad.AnnData, tmp_path: Path) -> None:
    pytest.importorskip("cell_eval", reason=SKIP_REASON)
    from cellw1.cli.main import main

    data = tmp_path / "data.h5ad"
    adata.write_h5ad(data)
    assert (
        main(
            [
                "evaluate",
                str(data),
                "--condition-key",
                "condition",
                "--control",
                "ctrl",
                "--methods",
                "identity,mean_shift",
                "--suite",
                "cell-eval",
                "--de-genes",
                "10",
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "pearson_delta" in set(pd.read_csv(tmp_path / "r" / "results.csv")["metric"])


def test_predict_controls_only_goes_to_cell_eval_run_as_it_is(adata: ad.AnnData, tmp_path: Path) -> None:
    pytest.importorskip("cell_eval", reason=SKIP_REASON)
    from cellw1.cli.main import main

    real = tmp_path / "real.h5ad"
    adata.write_h5ad(real)  # the real cells as the user has them: raw counts, control and perturbed
    assert (
        main(
            [
                "fit",
                str(real),
                "--condition-key",
                "condition",
                "--control",
                "ctrl",
                "--perturbation",
                "up",
                "--method",
                "mean_shift",
                "--out",
                str(tmp_path / "model"),
                "--quiet",
            ]
        )
        == 0
    )
    pred = tmp_path / "pred.h5ad"
    assert main(["predict", str(tmp_path / "model"), str(real), "--controls-only", "--out", str(pred), "--quiet"]) == 0
    outdir = tmp_path / "cell-eval"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cell_eval",
            "run",
            "-ap",
            str(pred),
            "-ar",
            str(real),
            "--control-pert",
            "ctrl",
            "--pert-col",
            "condition",
            "--num-threads",
            "1",
            "-o",
            str(outdir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = pd.read_csv(outdir / "results.csv")
    row = results[results["perturbation"] == "up"].iloc[0]
    # cell-eval normalised the real counts to their median total, the one cellw1 used: the mean shift
    # reproduces the response direction and the DE genes
    assert row["pearson_delta"] > 0.9
    assert row["overlap_at_N"] > 0.5
