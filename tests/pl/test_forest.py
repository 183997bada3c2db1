"""``cellw1.pl.forest``: the reference against each baseline per metric, into given axes or a file."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from cellw1 import pl
from cellw1.errors import InputError


def comparisons() -> pd.DataFrame:
    rows = [
        ("mmd", "w1", "identity", False, 0.3, 0.1, 0.5),
        ("mmd", "w1", "mean_shift", True, -0.2, -0.3, -0.1),
        ("r2", "w1", "mean_shift", True, 0.0, -0.1, 0.1),
    ]
    columns = ["metric", "reference", "baseline", "best", "median_improvement", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def test_forest_draws_one_panel_per_metric_with_colours_by_interval(tmp_path):
    fig = pl.forest(comparisons(), save=tmp_path / "forest.png")
    assert (tmp_path / "forest.png").read_bytes()[:4] == b"\x89PNG"
    mmd = fig.axes[0]
    assert mmd.get_title() == "mmd"
    assert [t.get_text() for t in mmd.get_yticklabels()] == ["identity", "mean_shift"]
    colours = [line.get_color() for line in mmd.get_lines() if line.get_marker() == "o"]
    assert colours == ["#2ca02c", "#d62728"]  # a win above 0, a loss below 0
    assert [t.get_fontweight() for t in mmd.get_yticklabels()] == ["normal", "bold"]  # the best baseline


def test_forest_draws_into_given_axes_and_names_bad_input():
    fig = Figure()
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    assert pl.forest(comparisons(), ax=axes) is fig
    assert axes[1].get_title() == "r2"
    with pytest.raises(InputError, match="lack the columns"):
        pl.forest(pd.DataFrame({"metric": ["mmd"]}))
    with pytest.raises(InputError, match="no rows"):
        pl.forest(comparisons().iloc[:0])
    with pytest.raises(InputError, match="energy"):
        pl.forest(comparisons(), metrics=["energy"])
