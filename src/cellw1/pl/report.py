"""Figures of an evaluation: metric bars (as in Chen et al., Fig. 3) and a PCA of cells.

Both functions draw with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``, no
``pyplot`` state) and write the PNG atomically, so a half-written figure is never seen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._data import as_array
from ..errors import InputError
from .plotting import save_png

METHOD_COLORS = ("#7f7f7f", "#bcbd22", "#2ca02c", "#9467bd", "#d62728", "#1f77b4", "#ff7f0e", "#8c564b")
CONTROL_COLOR = "#1f77b4"
OBSERVED_COLOR = "#b0b0b0"
PREDICTED_COLOR = "#d62728"



def plot_metric_bars(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> Path:
    """One panel per metric: for each method a bar at the median with an IQR error bar.

    The values of every perturbation and repeat are drawn as dots over the bars. The
    ``seconds`` panel uses a log scale.

    Parameters
    ----------
    table
        Tidy results with columns ``method``, ``metric`` and ``value`` (``EvaluationResult.table``).
    path
        Output PNG, written atomically.
    title
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    missing = {"method", "metric", "value"} - set(getattr(table, "columns", []))
    if missing:
        raise InputError(f"table lacks the columns {sorted(missing)}; pass EvaluationResult.table.")
    if len(table) == 0:
        raise InputError("table has no rows; there is nothing to plot.")
    methods = list(dict.fromkeys(table["method"].astype(str)))
    metrics = list(dict.fromkeys(table["metric"].astype(str)))
    colors = {m: METHOD_COLORS[i % len(METHOD_COLORS)] for i, m in enumerate(methods)}

    n_cols = min(3, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    fig = Figure(figsize=(1.2 + 0.55 * len(methods) * n_cols + 0.8 * n_cols, 3.0 * n_rows), dpi=120)
    FigureCanvasAgg(fig)
    jitter = np.random.default_rng(0)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        rows = table[table["metric"].astype(str) == metric]
        for x, method in enumerate(methods):
            values = rows.loc[rows["method"].astype(str) == method, "value"].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
            ax.bar(x, median, width=0.7, color=colors[method], alpha=0.85)
            ax.errorbar(x, median, yerr=[[median - q25], [q75 - median]], color="black", capsize=3, linewidth=1)
            ax.scatter(x + jitter.uniform(-0.18, 0.18, values.size), values, s=6, color="black", alpha=0.5, zorder=3)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
        if metric == "seconds" and (rows["value"].to_numpy(dtype=float) > 0).all():
            ax.set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def pca_2d(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top-2 principal axes ``(2, d)`` of ``reference: (n, d)`` by numpy SVD.

    With one feature the second axis is zero (the cells are drawn on a line).
    """
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    axes = np.zeros((2, reference.shape[1]))
    axes[: min(2, vt.shape[0])] = vt[:2]
    return mean, axes


def plot_embedding(
    control: Any,
    predicted: Any,
    observed: Any,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Control, predicted and observed cells on the first two principal components.

    The PCA is fitted (numpy SVD) on the control and observed cells together, so the axes do
    not depend on any prediction and several methods share one view.

    Parameters
    ----------
    control
        ``(n, d)`` input (control) cells.
    predicted
        ``(n, d)`` predictions, or a mapping ``method -> (n, d)`` for one panel per method.
    observed
        ``(m, d)`` observed perturbed cells.
    path
        Output PNG, written atomically.
    title
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ctrl = as_array(control, "control")
    obs = as_array(observed, "observed")
    panels = dict(predicted) if isinstance(predicted, Mapping) else {"predicted": predicted}
    if not panels:
        raise InputError("predicted is an empty mapping; pass at least one method's predictions.")
    preds = {name: as_array(values, f"predicted[{name!r}]") for name, values in panels.items()}
    for name, arr in [("observed", obs), *((f"predicted[{k!r}]", v) for k, v in preds.items())]:
        if arr.shape[1] != ctrl.shape[1]:
            raise InputError(f"{name} has {arr.shape[1]} features but control has {ctrl.shape[1]}; use the same features.")

    mean, axes = pca_2d(np.vstack([ctrl, obs]))

    def project(a: np.ndarray) -> np.ndarray:
        return (a - mean) @ axes.T

    c2, o2 = project(ctrl), project(obs)

    n = len(preds)
    n_cols = min(3, n)
    n_rows = -(-n // n_cols)
    fig = Figure(figsize=(3.6 * n_cols, 3.4 * n_rows + (0.3 if title else 0)), dpi=120)
    FigureCanvasAgg(fig)
    first = None
    for i, (name, arr) in enumerate(preds.items()):
        ax = fig.add_subplot(n_rows, n_cols, i + 1, sharex=first, sharey=first)
        first = first or ax
        p2 = project(arr)
        ax.scatter(o2[:, 0], o2[:, 1], s=3, c=OBSERVED_COLOR, label="observed", zorder=1)
        ax.scatter(c2[:, 0], c2[:, 1], s=3, c=CONTROL_COLOR, alpha=0.5, label="control", zorder=2)
        ax.scatter(p2[:, 0], p2[:, 1], s=3, c=PREDICTED_COLOR, alpha=0.6, label="predicted", zorder=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("PC1", fontsize=8)
        ax.set_ylabel("PC2", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(loc="best", fontsize=7, markerscale=3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
