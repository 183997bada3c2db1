"""Figures of a screen (:func:`cellw1.screen`): effects ranked with their q-values, and the map of perturbations."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InputError
from ._figure import finish, panel_axes


def _table(result: Any, columns: tuple[str, ...]) -> Any:
    table = getattr(result, "table", result)
    missing = set(columns) - set(getattr(table, "columns", []))
    if missing:
        raise InputError(
            f"the screen table lacks the columns {sorted(missing)}; pass cellw1.screen's result or its `.table`."
        )
    if len(table) == 0:
        raise InputError("the screen table has no rows; there is nothing to plot.")
    return table


def screen_effects(
    result: Any,
    *,
    effect: str = "energy",
    fdr: float = 0.05,
    label: int = 10,
    ax: Any = None,
    save: str | os.PathLike | None = None,
) -> Any:
    """Perturbations ranked by their effect, coloured by their q-value (grey: not called).

    Parameters
    ----------
    result
        :func:`cellw1.screen`'s result or its ``.table`` (columns ``effect`` and ``q_value``).
    effect
        The column ranked: ``"energy"`` (default, the energy distance to the control reference)
        or ``"w1"`` (the potential's dual, drawn with its 95% interval ``w1_low``-``w1_high``).
    fdr
        Calls (``q <= fdr``) are drawn in colour, the others in grey.
    label
        Name the ``label`` largest effects.
    ax, save
        A matplotlib ``Axes`` to draw into (default: a new figure), and a file to write.
    """
    table = _table(result, (effect, "q_value"))
    ordered = table.sort_values(effect, ascending=False)
    fig, (axis,) = panel_axes(ax, 1, figsize=(6.0, 3.5))
    rank = np.arange(len(ordered))
    values = ordered[effect].to_numpy(dtype=float)
    called = ordered["q_value"].to_numpy() <= fdr
    if {f"{effect}_low", f"{effect}_high"} <= set(ordered.columns):
        err = np.stack([values - ordered[f"{effect}_low"], ordered[f"{effect}_high"] - values])
        axis.errorbar(rank, values, yerr=err, fmt="none", ecolor="#cccccc", lw=0.6, zorder=1)
    q = np.clip(ordered["q_value"].to_numpy(dtype=float), 1e-300, 1)
    points = axis.scatter(rank[called], values[called], c=-np.log10(q[called]), s=10, cmap="viridis", zorder=2)
    axis.scatter(rank[~called], values[~called], c="#9e9e9e", s=6, zorder=2, label=f"q > {fdr:g}")
    if called.any():
        fig.colorbar(points, ax=axis, label="-log10 q")
    for i, name in enumerate(ordered.index[:label]):
        axis.annotate(str(name), (i, values[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("perturbation (ranked)")
    axis.set_ylabel({"energy": "energy distance to controls", "w1": "W1 to controls (dual)"}.get(effect, effect))
    axis.legend(loc="upper right", fontsize=8)
    return finish(fig, made=ax is None, save=save, title="screen: effects")


def screen_map(result: Any, *, label: bool = True, ax: Any = None, save: str | os.PathLike | None = None) -> Any:
    """The called perturbations on the 2-D map of their predicted responses, coloured by cluster.

    Parameters
    ----------
    result
        :func:`cellw1.screen`'s result or its ``.table`` (columns ``map_1``, ``map_2``, ``cluster``).
    label
        Write the perturbations' names.
    ax, save
        A matplotlib ``Axes`` to draw into (default: a new figure), and a file to write.
    """
    table = _table(result, ("map_1", "map_2", "cluster"))
    shown = table[table["cluster"] >= 0]
    fig, (axis,) = panel_axes(ax, 1, figsize=(4.5, 4.0))
    axis.scatter(shown["map_1"], shown["map_2"], c=shown["cluster"], cmap="tab20", s=18)
    if label and len(shown) <= 60:
        for name, row in shown.iterrows():
            axis.annotate(
                str(name), (row["map_1"], row["map_2"]), fontsize=7, xytext=(2, 2), textcoords="offset points"
            )
    axis.set_xlabel("response map 1")
    axis.set_ylabel("response map 2")
    axis.set_title(f"{len(shown)} called perturbations, {shown['cluster'].nunique()} clusters", fontsize=9)
    return finish(fig, made=ax is None, save=save, title="screen: perturbations by response")
