"""Transport rays of a fitted map on 2-D points, in the style of Chen et al., Fig. 2."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..checks import as_array
from ..errors import InputError
from ._figure import finish, panel_axes

TARGET_COLOR = "#b0b0b0"
SOURCE_COLOR = "#1f77b4"
MOVED_COLOR = "#d62728"
LABEL_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def transport(
    source: Any,
    transported: Any,
    target: Any,
    *,
    title: str = "",
    n_rays: int = 200,
    seed: int = 0,
    source_labels: Any = None,
    ax: Any = None,
    save: str | os.PathLike | None = None,
) -> Any:
    """Target (grey), source and transported points, and the rays ``x -> T(x)`` between them.

    Parameters
    ----------
    source, transported
        ``(n, 2)`` source points and their images ``T(source)``, row for row.
    target
        ``(m, 2)`` target points.
    title
        Axes title.
    n_rays
        Number of randomly chosen source points (``seed``) whose ray is drawn.
    seed
        Seed of the choice of rays.
    source_labels
        Optional ``(n,)`` integer labels colouring the source points and their rays.
    ax
        Matplotlib ``Axes`` to draw into; by default a new figure.
    save
        File to write the figure to (format from the suffix), atomically.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into (the one holding ``ax`` when given).
    """
    from matplotlib.collections import LineCollection

    src, moved, tgt = (
        as_array(a, name) for a, name in ((source, "source"), (transported, "transported"), (target, "target"))
    )
    for name, arr in (("source", src), ("transported", moved), ("target", tgt)):
        if arr.shape[1] != 2:
            raise InputError(f"{name} must have shape (n, 2) to be plotted, got {arr.shape}; project to 2-D first.")
    if src.shape != moved.shape:
        raise InputError(f"source {src.shape} and transported {moved.shape} must have the same shape.")
    colors: Any = SOURCE_COLOR
    if source_labels is not None:
        labels = np.asarray(source_labels).ravel()
        if len(labels) != len(src):
            raise InputError(f"source_labels has {len(labels)} entries but source has {len(src)} rows.")
        colors = np.array([LABEL_COLORS[int(v) % len(LABEL_COLORS)] for v in labels])

    fig, (axes,) = panel_axes(ax, 1, figsize=(5.0, 5.0))
    axes.scatter(tgt[:, 0], tgt[:, 1], s=4, c=TARGET_COLOR, label="target", zorder=1)
    rays = np.random.default_rng(seed).choice(len(src), min(max(n_rays, 0), len(src)), replace=False)
    ray_colors = colors[rays] if isinstance(colors, np.ndarray) else colors
    axes.add_collection(
        LineCollection(
            list(np.stack([src[rays], moved[rays]], axis=1)), colors=ray_colors, linewidths=0.4, alpha=0.5, zorder=2
        )
    )
    axes.scatter(src[:, 0], src[:, 1], s=4, c=colors, label="source", zorder=3)
    axes.scatter(moved[:, 0], moved[:, 1], s=4, c=MOVED_COLOR, label="transported", zorder=4)
    axes.set_aspect("equal", adjustable="datalim")
    axes.legend(loc="best", fontsize=7, markerscale=2)
    if title:
        axes.set_title(title)
    return finish(fig, made=ax is None, save=save)
