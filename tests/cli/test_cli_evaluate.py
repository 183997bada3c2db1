"""The ``cellw1 evaluate`` verb: it benchmarks the methods on held-out cells and writes the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import count_adata

from cellw1.cli import evaluate as evaluate_verb
from cellw1.cli.main import main
from cellw1.datasets import synthetic_perturbation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHORT = [
    "--potential-iters",
    "20",
    "--regression-iters",
    "20",
    "--energy-iters",
    "20",
    "--de-genes",
    "8",
    "--splits",
    "1",
]
SHORT += ["--quiet"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Counts of a control, a perturbation tripling 5 genes, and one with no effect."""
    adata = count_adata(("ctrl", "up", "same"), 75, 20, seed=2, effects={1: 3.0}, gamma=(3.0, 2.0))
    path = tmp_path_factory.mktemp("evaluate") / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def test_evaluate_writes_the_report_of_every_method(cells: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    argv = [
        "evaluate",
        str(cells),
        "--condition-key",
        "condition",
        "--control",
        "ctrl",
        "--methods",
        "identity,observed,mean_shift,w2,w1",
        "--w2-iters",
        "4",
        *SHORT,
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    names = {
        "results.csv",
        "summary.csv",
        "wilcoxon.csv",
        "settings.json",
        "metrics.png",
        "embedding.png",
        "mean_change.png",
        "comparisons.csv",
        "per_perturbation.csv",
        "forest.png",
        "report.md",
        "report.html",
    }
    assert {p.name for p in out.iterdir()} == names
    assert (out / "metrics.png").read_bytes()[:8] == PNG_MAGIC
    assert f"wrote {len(names)} files to {out}" in stdout
    assert "median over perturbations and splits:" in stdout
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"identity", "observed", "mean_shift", "w2", "w1"}
    assert set(table["perturbation"]) == {"up", "same"}
    assert set(table["repeat"]) == {0}
    value = table.set_index(["method", "perturbation", "metric"])["value"]
    for perturbation in ("up", "same"):  # identity predicts the test controls themselves
        assert value["identity", perturbation, "control_shift"] == pytest.approx(0.0, abs=1e-6)
    # on the real effect, real perturbed cells and the mean shift beat predicting no change
    assert value["observed", "up", "l2"] < 0.5 * value["identity", "up", "l2"]
    assert value["mean_shift", "up", "l2"] < 0.5 * value["identity", "up", "l2"]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["methods"] == ["identity", "observed", "mean_shift", "w2", "w1"]
    assert settings["n_de_genes"] == 8
    assert "n_iters=4" in settings["w2_config"]
    assert "potential_iters=20" in settings["config"]
    assert "energy_iters=20" in settings["config"]
    wilcoxon = pd.read_csv(out / "wilcoxon.csv")
    assert set(wilcoxon["reference"]) == {"w1"}
    assert "identity" in set(wilcoxon["method"])
    assert "w1 against the best baseline of each metric" in stdout  # the verdicts, also in report.md
    report = (out / "report.md").read_text()
    assert "## Where w1 loses" in report
    assert "forest.png" in report
    assert "<h2>Where w1 loses</h2>" in (out / "report.html").read_text()


def test_evaluate_help_lists_the_new_options(capsys) -> None:
    assert main(["evaluate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--splits" in text
    assert "global_mean" in text
    assert "deprecated alias of --splits" in text
    assert "--reference" in text
    assert "--confidence" in text


def test_evaluate_reports_against_the_reference_asked_for(cells: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    argv = ["evaluate", str(cells), "--condition-key", "condition", "--control", "ctrl"]
    argv += ["--methods", "identity,mean_shift", "--reference", "mean_shift", "--confidence", "0.8"]
    assert main([*argv, *SHORT, "--out", str(out)]) == 0
    assert "mean_shift against the best baseline of each metric" in capsys.readouterr().out
    compared = pd.read_csv(out / "comparisons.csv")
    assert set(compared["reference"]) == {"mean_shift"}
    assert set(compared["baseline"]) == {"identity"}
    assert "## Where mean_shift loses" in (out / "report.md").read_text()


def test_evaluate_without_data_uses_the_synthetic_set(tmp_path: Path, capsys, monkeypatch) -> None:
    def small(seed: int):  # type: ignore[no-untyped-def]
        return synthetic_perturbation(n_control=150, n_perturbed=150, n_genes=30, n_perturbations=1, seed=seed)

    monkeypatch.setattr(evaluate_verb, "synthetic_perturbation", small)
    assert main(["evaluate", "--methods", "identity,mean_shift", *SHORT, "--out", str(tmp_path / "r")]) == 0
    assert "no data given: using cellw1's built-in SYNTHETIC dataset (300 cells x 30 genes)" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "r" / "results.csv")
    assert set(table["method"]) == {"identity", "mean_shift"}
    assert set(table["perturbation"]) == {"pertA"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--control", "ctrl"], "with DATA, give --condition-key and --control"),
        (["--condition-key", "condition", "--control", "ctrl", "--holdout", "celltype"], "must look like KEY=VALUE"),
        (["--condition-key", "condition", "--control", "ctrl", "--methods", "identity,cellot"], "cellot"),
        (["--condition-key", "condition", "--control", "nope"], "control 'nope'"),
        (["--condition-key", "condition", "--control", "ctrl", "--confidence", "95"], "--confidence 95.0 must be"),
        (["--condition-key", "condition", "--control", "ctrl", "--methods", "identity", "--reference", "w1"], "w1"),
    ],
)
def test_evaluate_usage_errors_exit_two(cells: Path, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    assert main(["evaluate", str(cells), *extra, "--quiet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("cellw1: error: ")
    assert message in err[0]
    assert not (tmp_path / "r").exists()


def test_an_unknown_method_is_named_with_every_method_evaluate_runs(tmp_path, capsys) -> None:
    """The error lists the baselines evaluate runs (global_mean, additive, nearest), not only fit's methods."""
    code = main(["evaluate", "--methods", "identity,foo", "--splits", "1", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown method 'foo'" in err
    for name in ("global_mean", "additive", "nearest", "w1"):
        assert name in err


def test_comma_lists_take_spaces_after_the_commas(tmp_path, monkeypatch) -> None:
    """``--methods "identity, mean_shift"`` and ``--perturbations "pertA, NULL"`` name what they say."""
    seen = {}

    def spy(adata, condition_key, control, perturbations=None, **kwargs):
        seen.update(perturbations=perturbations, methods=kwargs["methods"])
        raise SystemExit(0)

    monkeypatch.setattr(evaluate_verb, "evaluate", spy)
    argv = ["evaluate", "--methods", "identity, mean_shift,", "--perturbations", "pertA, NULL", "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        main([*argv, "--quiet"])
    assert seen == {"perturbations": ["pertA", "NULL"], "methods": ["identity", "mean_shift"]}
