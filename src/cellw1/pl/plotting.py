"""Figures of fitted transport maps, in the style of Chen et al., Fig. 2."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_bytes
from ..errors import InputError

TARGET_COLOR = "#b0b0b0"
SOURCE_COLOR = "#1f77b4"
MOVED_COLOR = "#d62728"
LABEL_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Render a matplotlib figure to PNG and write it atomically to ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_transport(
    source: Any,
    transported: Any,
    target: Any,
    path: str | os.PathLike,
    *,
    title: str = "",
    n_rays: int = 200,
    seed: int = 0,
    source_labels: Any = None,
) -> Path:
    """Draw target (grey), source, transported points and transport rays; save a PNG.

    Parameters
    ----------
    source, transported
        ``(n, 2)`` source points and their images ``T(source)``, row for row.
    target
        ``(m, 2)`` target points.
    path
        Output PNG file; written atomically (a temporary file renamed over ``path``).
    title
        Figure title.
    n_rays
        Number of randomly chosen source points (``seed``) whose ray ``x -> T(x)`` is drawn.
    source_labels
        Optional ``(n,)`` integer labels colouring the source points and their rays.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    src, moved, tgt = (np.asarray(a, dtype=float) for a in (source, transported, target))
    for name, arr in (("source", src), ("transported", moved), ("target", tgt)):
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise InputError(f"{name} must have shape (n, 2) to be plotted, got {arr.shape}; project to 2-D first.")
    if src.shape != moved.shape:
        raise InputError(f"source {src.shape} and transported {moved.shape} must have the same shape.")
    colors: Any = SOURCE_COLOR
    if source_labels is not None:
        labels = np.asarray(source_labels).ravel()
        if len(labels) != len(src):
            raise InputError(f"source_labels has {len(labels)} entries but source has {len(src)} rows.")
        colors = np.array([LABEL_COLORS[int(v) % len(LABEL_COLORS)] for v in labels])

    fig = Figure(figsize=(5, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(tgt[:, 0], tgt[:, 1], s=4, c=TARGET_COLOR, label="target", zorder=1)
    rays = np.random.default_rng(seed).choice(len(src), min(max(n_rays, 0), len(src)), replace=False)
    ray_colors = colors[rays] if isinstance(colors, np.ndarray) else colors
    ax.add_collection(LineCollection(np.stack([src[rays], moved[rays]], axis=1), colors=ray_colors, linewidths=0.4, alpha=0.5, zorder=2))
    ax.scatter(src[:, 0], src[:, 1], s=4, c=colors, label="source", zorder=3)
    ax.scatter(moved[:, 0], moved[:, 1], s=4, c=MOVED_COLOR, label="transported", zorder=4)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=7, markerscale=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)
