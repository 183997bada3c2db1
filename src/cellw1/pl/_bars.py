"""Metric bars of an evaluation, as in Chen et al., Fig. 3: one panel per metric."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ._figure import finish, panel_axes

METHOD_COLORS = ("#7f7f7f", "#bcbd22", "#2ca02c", "#9467bd", "#d62728", "#1f77b4", "#ff7f0e", "#8c564b")
COLUMNS = ("method", "metric", "value")


def metric_table(result: Any) -> Any:
    """The tidy table of ``result``: a DataFrame itself, or the ``.table`` of an evaluation result."""
    table = getattr(result, "table", result)
    missing = set(COLUMNS) - set(getattr(table, "columns", []))
    if missing:
        raise InputError(
            f"the results lack the columns {sorted(missing)}; pass cellw1.evaluate's result or its "
            "`.table` (columns method, metric, value)."
        )
    if len(table) == 0:
        raise InputError("the results have no rows; there is nothing to plot.")
    return table


def _select(kind: str, wanted: Sequence[str] | None, present: list[str]) -> list[str]:
    if wanted is None:
        return present
    chosen = [str(w) for w in ([wanted] if isinstance(wanted, str) else wanted)]
    unknown = [w for w in chosen if w not in present]
    if unknown or not chosen:
        raise InputError(f"{kind} {unknown or chosen} not in the results; choose among {present}.")
    return chosen


def metric_bars(
    result: Any,
    *,
    metrics: Sequence[str] | str | None = None,
    methods: Sequence[str] | None = None,
    title: str = "",
    ax: Any = None,
    save: str | os.PathLike | None = None,
) -> Any:
    """One panel per metric: for each method a bar at the median with an IQR error bar.

    The values of every perturbation and repeat are drawn as dots over the bars. The
    ``seconds`` panel uses a log scale.

    Parameters
    ----------
    result
        The result of :func:`cellw1.evaluate` (anything with a ``.table``), or a tidy
        DataFrame with columns ``method``, ``metric`` and ``value``.
    metrics
        Metrics to draw, in this order; default all in the table.
    methods
        Methods to draw, in this order; default all in the table.
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
    table = metric_table(result)
    method_col, metric_col = table["method"].astype(str), table["metric"].astype(str)
    methods = _select("methods", methods, list(dict.fromkeys(method_col)))
    metrics = _select("metrics", metrics, list(dict.fromkeys(metric_col)))
    colors = {m: METHOD_COLORS[i % len(METHOD_COLORS)] for i, m in enumerate(methods)}
    values_all = table["value"].to_numpy(dtype=float)

    fig, axes = panel_axes(ax, len(metrics), figsize=(0.8 + 0.55 * len(methods), 3.0))
    jitter = np.random.default_rng(0)
    for panel, metric in zip(axes, metrics, strict=False):
        in_metric = (metric_col == metric).to_numpy()
        for x, method in enumerate(methods):
            values = values_all[in_metric & (method_col == method).to_numpy()]
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
            panel.bar(x, median, width=0.7, color=colors[method], alpha=0.85)
            panel.errorbar(x, median, yerr=[[median - q25], [q75 - median]], color="black", capsize=3, linewidth=1)
            panel.scatter(x + jitter.uniform(-0.18, 0.18, values.size), values, s=6, color="black", alpha=0.5, zorder=3)
        panel.set_xticks(range(len(methods)))
        panel.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
        panel.set_title(metric, fontsize=10)
        shown = values_all[in_metric]
        if metric == "seconds" and shown.size and (shown[np.isfinite(shown)] > 0).all():
            panel.set_yscale("log")
    return finish(fig, made=ax is None, save=save, title=title)
