"""Paired comparisons with intervals (:mod:`cellw1.eval.confidence`): known answers and nominal coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from cellw1.eval.confidence import bootstrap_ci, comparisons, improvements, per_perturbation, wilcoxon_p


def _table(diff: np.ndarray, baseline_values: np.ndarray) -> pd.DataFrame:
    """Long table: w1 and mean_shift on 'mmd' (lower is better) for perturbations x splits."""
    rows = []
    for p in range(diff.shape[0]):
        for r in range(diff.shape[1]):
            base = baseline_values[p, r]
            rows.append(("mean_shift", f"p{p}", r, "mmd", base))
            rows.append(("identity", f"p{p}", r, "mmd", base + 1.0))
            rows.append(("w1", f"p{p}", r, "mmd", base - diff[p, r]))  # w1 lower by diff: improvement = diff
    return pd.DataFrame(rows, columns=["method", "perturbation", "repeat", "metric", "value"])


def test_improvement_is_signed_so_positive_means_the_reference_did_better():
    table = _table(np.full((3, 2), 0.25), np.ones((3, 2)))
    d = improvements(table, "w1", "mean_shift", "mmd", higher_is_better=False)
    assert len(d) == 6
    assert np.allclose(d["improvement"], 0.25)
    flipped = improvements(table, "w1", "mean_shift", "mmd", higher_is_better=True)
    assert np.allclose(flipped["improvement"], -0.25)


def test_comparisons_pick_the_best_baseline_and_say_who_wins():
    rng = np.random.default_rng(0)
    table = _table(0.3 + 0.01 * rng.normal(size=(11, 3)), rng.uniform(1, 2, size=(11, 3)))
    out = comparisons(table, lambda m: False)
    best = out[out["best"]]
    assert list(best["baseline"]) == ["mean_shift"]  # identity is worse by 1 everywhere
    row = best.iloc[0]
    assert row["wins"] == 11
    assert row["losses"] == 0
    assert row["n_pairs"] == 33
    assert row["ci_low"] > 0.25
    assert row["ci_high"] < 0.35
    assert row["wilcoxon_p"] < 0.01
    assert row["verdict"].startswith("w1 beats mean_shift on mmd: better in 11 of 11 perturbations, worse in 0")
    losing = comparisons(_table(-0.3 + 0.01 * rng.normal(size=(11, 3)), np.ones((11, 3))), lambda m: False)
    assert "LOSES to mean_shift" in losing[losing["best"]].iloc[0]["verdict"]


def test_per_perturbation_intervals_run_over_splits():
    diff = np.array([[0.1, 0.2, 0.3, 0.2, 0.1], [-0.1, -0.2, -0.3, -0.2, -0.1]])
    out = per_perturbation(_table(diff, np.ones((2, 5))), lambda m: False)
    row = out[(out["baseline"] == "mean_shift")].set_index("perturbation")
    assert row.loc["p0", "median_improvement"] == pytest.approx(0.2)
    assert row.loc["p0", "ci_low"] > 0
    assert row.loc["p1", "ci_high"] < 0
    assert row.loc["p1", "n_splits"] == 5
    assert row.loc["p0", "wilcoxon_p"] == pytest.approx(0.0625)  # the smallest two-sided p with 5 splits


def test_degenerate_samples_give_plain_answers():
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert np.isnan(bootstrap_ci([])[0])
    assert wilcoxon_p([0.0, 0.0]) == 1.0
    assert np.isnan(wilcoxon_p([]))


def test_bootstrap_interval_covers_a_known_difference_at_its_nominal_rate():
    """200 simulated comparisons of 25 perturbations, true median improvement 0.2: about 95% of intervals cover it."""
    rng = np.random.default_rng(12345)
    n_sims, truth = 200, 0.2
    covered = 0
    for sim in range(n_sims):
        values = truth + rng.normal(scale=0.5, size=25)  # symmetric: median = mean = truth
        low, high = bootstrap_ci(values, 0.95, n_resamples=999, seed=sim)
        covered += low <= truth <= high
    # the central 99.9% of Binomial(200, 0.95): 179 to 198 intervals (this seed: 194)
    low_band, high_band = binom.ppf([0.0005, 0.9995], n_sims, 0.95)
    assert low_band <= covered <= high_band, covered


def test_equal_values_up_to_round_off_tie():
    table = _table(np.zeros((4, 2)), np.ones((4, 2)))
    table.loc[table["method"] == "w1", "value"] += 1e-12  # the same prediction scored twice
    row = comparisons(table, lambda m: False).query("baseline == 'mean_shift'").iloc[0]
    assert row["wins"] == row["losses"] == 0
    assert row["median_improvement"] == 0.0
    assert "ties with" in row["verdict"]
