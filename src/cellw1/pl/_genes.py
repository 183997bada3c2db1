"""Per-gene mean change: predicted against observed, with the identity line and correlation."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..checks import as_array
from ..errors import InputError
from ._figure import finish, method_panels, panel_axes

POINT_COLOR = "#d62728"


def column_means(x: Any, name: str) -> np.ndarray:
    """Mean of each column of a dense or sparse ``(n_cells, n_genes)`` matrix, checked."""
    return np.asarray(as_array(x, name, sparse=True).mean(axis=0), dtype=float).ravel()


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two vectors; NaN when either is constant."""
    xc, yc = x - x.mean(), y - y.mean()
    denom = float(np.sqrt((xc @ xc) * (yc @ yc)))
    return float(xc @ yc) / denom if denom > 0 else float("nan")


def mean_change(
    control: Any,
    predicted: Any,
    observed: Any,
    *,
    gene_names: Any = None,
    n_labels: int = 5,
    title: str = "",
    ax: Any = None,
    save: str | os.PathLike | None = None,
) -> Any:
    """Each gene's predicted against observed change of the mean expression from control.

    A point is one gene: ``x = mean(observed) - mean(control)``, ``y = mean(predicted) -
    mean(control)``. A perfect prediction lies on the dashed identity line; a prediction
    of no response lies on ``y = 0``. Each panel states the Pearson correlation ``r`` of
    the two changes across genes (the ``pearson_delta`` of perturbation benchmarks).

    Parameters
    ----------
    control
        ``(n, g)`` control cells (dense or sparse), on the same scale as the others.
    predicted
        ``(n, g)`` predicted cells, or a mapping ``method -> (n, g)`` for one panel per method.
    observed
        ``(m, g)`` observed perturbed cells.
    gene_names
        Optional ``(g,)`` names; the ``n_labels`` genes with the largest observed change
        are labelled.
    n_labels
        Number of genes labelled when ``gene_names`` is given.
    title
        Figure title (only for a new figure).
    ax
        One matplotlib ``Axes`` per method; by default a new figure.
    save
        File to write the figure to (format from the suffix), atomically.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into (the one holding ``ax`` when given).
    """
    base = column_means(control, "control")
    observed_change = column_means(observed, "observed")
    if observed_change.size != base.size:
        raise InputError(f"observed has {observed_change.size} genes but control has {base.size}; use the same genes.")
    observed_change = observed_change - base
    changes = {}
    for name, values in method_panels(predicted).items():
        means = column_means(values, f"predicted[{name!r}]")
        if means.size != base.size:
            raise InputError(
                f"predicted[{name!r}] has {means.size} genes but control has {base.size}; use the same genes."
            )
        changes[name] = means - base
    labelled: list[tuple[int, str]] = []  # (gene, name) of the genes whose name is shown
    if gene_names is not None:
        names = np.asarray(gene_names, dtype=str).ravel()
        if names.size != base.size:
            raise InputError(f"gene_names has {names.size} entries but the cells have {base.size} genes.")
        top = np.argsort(-np.abs(observed_change), kind="stable")[: max(int(n_labels), 0)]
        labelled = [(int(i), str(names[i])) for i in top]

    fig, axes = panel_axes(ax, len(changes), figsize=(3.6, 3.4), share=True)
    for panel, (name, change) in zip(axes, changes.items(), strict=False):
        lo = float(min(observed_change.min(), change.min(), 0.0))
        hi = float(max(observed_change.max(), change.max(), 0.0))
        pad = 0.05 * (hi - lo) or 0.05
        panel.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", lw=0.8, c="black", label="identity", zorder=1)
        panel.axhline(0.0, lw=0.5, c="#b0b0b0", zorder=0)
        panel.axvline(0.0, lw=0.5, c="#b0b0b0", zorder=0)
        panel.scatter(observed_change, change, s=5, c=POINT_COLOR, alpha=0.6, zorder=2)
        for i, label in labelled:
            panel.annotate(
                label, (observed_change[i], change[i]), fontsize=6, xytext=(2, 2), textcoords="offset points"
            )
        r = pearson(observed_change, change)
        panel.text(
            0.03, 0.97, f"r = {r:.3f}" if np.isfinite(r) else "r = n/a", transform=panel.transAxes, va="top", fontsize=8
        )
        panel.set_title(name, fontsize=10)
        panel.set_xlabel("observed mean change", fontsize=8)
        panel.set_ylabel("predicted mean change", fontsize=8)
        panel.tick_params(labelsize=7)
    return finish(fig, made=ax is None, save=save, title=title)
