"""What every figure of :mod:`cellw1.pl` shares: its axes, and how it is saved.

Figures are made with matplotlib's object API (``Figure`` on an Agg canvas), never through
``pyplot``: drawing changes no global backend, opens no window, leaves no figure open in
pyplot's registry and never calls ``plt.show()``. A caller who passes ``ax=`` draws into
their own figure, pyplot or not.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files.atomic import atomic_write_bytes

#: Resolution of a figure written with ``save=`` in a raster format (PNG).
SAVE_DPI = 120


def panel_axes(
    ax: Any, n_panels: int, *, figsize: tuple[float, float], n_cols: int = 3, share: bool = False
) -> tuple[Any, list[Any]]:
    """The figure and ``n_panels`` axes to draw into: ``ax`` itself, or a new figure's grid.

    Parameters
    ----------
    ax
        ``None`` (make a new figure), one matplotlib ``Axes`` (only for one panel) or a
        sequence of ``n_panels`` axes, one per panel.
    n_panels
        Number of panels the figure draws.
    figsize
        Size ``(width, height)`` in inches of one panel of a new figure.
    n_cols
        Panels per row of a new figure.
    share
        Share the x and y axes of the panels of a new figure.

    Returns
    -------
    tuple
        ``(figure, axes)``; the figure is the one holding the (first) given axes.
    """
    if ax is not None:
        given = list(np.asarray(ax, dtype=object).ravel()) if isinstance(ax, (Sequence, np.ndarray)) else [ax]
        if len(given) != n_panels or not all(hasattr(a, "scatter") and hasattr(a, "figure") for a in given):
            raise InputError(
                f"ax must be one matplotlib Axes per panel: this figure has {n_panels} panel(s), got "
                f"{len(given)} object(s) of type {type(given[0]).__name__ if given else 'none'}; "
                "pass ax=None to make a new figure, or select fewer panels."
            )
        return given[0].figure, given
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(1, min(n_cols, n_panels))
    rows = -(-n_panels // cols)
    fig = Figure(figsize=(figsize[0] * cols, figsize[1] * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes: list[Any] = []
    for i in range(n_panels):
        first = axes[0] if share and axes else None
        axes.append(fig.add_subplot(rows, cols, i + 1, sharex=first, sharey=first))
    return fig, axes


def finish(fig: Any, *, made: bool, save: str | os.PathLike | None, title: str = "") -> Any:
    """Title and lay out a figure this package made, write it to ``save`` if given; return it.

    A figure drawn into the caller's axes (``made=False``) keeps its own layout and title.
    """
    if made:
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    if save is not None:
        save_figure(fig, save)
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure to ``path`` atomically, in the format its suffix names.

    The figure is rendered into memory first and the file appears only complete (a
    temporary file renamed over ``path``); parent folders are created. A path without a
    suffix is written as PNG.

    Parameters
    ----------
    fig
        A matplotlib ``Figure`` (or ``SubFigure``: its whole figure is written).
    path
        Output file: ``.png``, ``.pdf``, ``.svg`` or any format matplotlib can write.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    root = fig.figure if getattr(fig, "figure", None) is not None else fig  # a SubFigure's root Figure
    supported = root.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise InputError(f"cannot save a figure as {path.name!r}: use one of the suffixes {sorted(supported)}.")
    buffer = io.BytesIO()
    root.savefig(buffer, format=fmt, dpi=SAVE_DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def method_panels(predicted: Any, name: str = "predicted") -> dict[str, Any]:
    """``predicted`` as ``{method: cells}``: a mapping as it is, one array as ``{"predicted": array}``."""
    panels = {str(k): v for k, v in predicted.items()} if isinstance(predicted, Mapping) else {name: predicted}
    if not panels:
        raise InputError(f"{name} is an empty mapping; pass at least one method's predictions.")
    return panels
