"""Forest plot of an evaluation: the reference method against each baseline, per metric, with intervals."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ._figure import finish, panel_axes

COLUMNS = ("metric", "baseline", "median_improvement", "ci_low", "ci_high")
#: a win (interval above 0), a loss (below 0), a tie (spans 0)
#: bounds closer to 0 than this count as 0 (round-off)
TIE = 1e-12
COLORS = {"win": "#2ca02c", "loss": "#d62728", "tie": "#7f7f7f"}


def forest(
    comparisons: Any,
    *,
    metrics: Sequence[str] | str | None = None,
    title: str = "",
    ax: Any = None,
    save: str | os.PathLike | None = None,
) -> Any:
    """One panel per metric: the reference's median improvement over each baseline, with its interval.

    Improvements are signed so that right of 0 means the reference (``w1``) did better,
    whatever the metric's direction; green marks an interval above 0, red one below 0, grey
    one that spans 0. The best baseline of a metric is drawn in bold.

    Parameters
    ----------
    comparisons
        :meth:`cellw1.EvaluationResult.comparisons` (or an object with such a ``.comparisons()``):
        columns ``metric``, ``baseline``, ``median_improvement``, ``ci_low``, ``ci_high``
        (optional ``best``, ``reference``).
    metrics
        Metrics to draw, in this order; default all in the table.
    title
        Figure title (only for a new figure).
    ax
        One matplotlib ``Axes`` per metric drawn; by default a new figure.
    save
        File to write the figure to (format from the suffix), atomically.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into (the one holding ``ax`` when given).
    """
    table = comparisons.comparisons() if callable(getattr(comparisons, "comparisons", None)) else comparisons
    missing = set(COLUMNS) - set(getattr(table, "columns", []))
    if missing:
        raise InputError(
            f"the comparisons lack the columns {sorted(missing)}; pass EvaluationResult.comparisons() or the result."
        )
    if len(table) == 0:
        raise InputError("the comparisons have no rows: evaluate the reference method (w1) and a baseline.")
    present = list(dict.fromkeys(table["metric"].astype(str)))
    chosen = present if metrics is None else [str(m) for m in ([metrics] if isinstance(metrics, str) else metrics)]
    unknown = [m for m in chosen if m not in present]
    if unknown or not chosen:
        raise InputError(f"metrics {unknown or chosen} not in the comparisons; choose among {present}.")
    reference = str(table["reference"].iloc[0]) if "reference" in table else "reference"
    fig, axes = panel_axes(ax, len(chosen), figsize=(3.6, 0.5 + 0.4 * table.groupby("metric").size().max()))
    for panel, metric in zip(axes, chosen, strict=False):
        rows = table[table["metric"].astype(str) == metric].reset_index(drop=True)
        for y, row in rows.iterrows():
            low, mid, high = float(row["ci_low"]), float(row["median_improvement"]), float(row["ci_high"])
            kind = "win" if low > TIE else "loss" if high < -TIE else "tie"
            panel.errorbar(
                mid,
                y,
                xerr=[[max(mid - low, 0.0)], [max(high - mid, 0.0)]] if np.isfinite([low, high]).all() else None,
                fmt="o",
                color=COLORS[kind],
                capsize=3,
            )
        panel.axvline(0.0, color="black", linewidth=0.8)
        panel.set_yticks(range(len(rows)))
        labels = panel.set_yticklabels([str(b) for b in rows["baseline"]], fontsize=8)
        for label, best in zip(labels, rows.get("best", [False] * len(rows)), strict=False):
            label.set_fontweight("bold" if bool(best) else "normal")
        panel.invert_yaxis()
        panel.set_title(metric, fontsize=10)
        panel.set_xlabel(f"{reference} better ->", fontsize=8)
    return finish(fig, made=ax is None, save=save, title=title)
