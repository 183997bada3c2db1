"""The figures of an evaluation report folder, drawn by the same functions as in a notebook."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._bars import metric_bars
from ._embedding import embedding
from ._genes import mean_change


def report_figures(result: Any, directory: str | os.PathLike) -> list[Path]:
    """Write ``metrics.png`` and, when cells were kept, ``embedding.png`` and ``mean_change.png``.

    ``metrics.png`` is :func:`cellw1.pl.metric_bars` of the whole table; the other two are
    :func:`cellw1.pl.embedding` and :func:`cellw1.pl.mean_change` of the kept perturbation's
    test cells (repeat 0, scored features), one panel per method. Each file is written
    atomically.

    Parameters
    ----------
    result
        The result of :func:`cellw1.evaluate`: a ``.table`` and an ``.embedding`` snapshot
        (``perturbation``, ``control``, ``observed``, ``predicted``) or ``None``.
    directory
        Report folder; created if missing.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    directory = Path(directory)
    written = [directory / "metrics.png"]
    metric_bars(result, save=written[0])
    snap = getattr(result, "embedding", None)
    if snap is not None:
        where = f"{snap.perturbation} (repeat 0, test cells)"
        written.append(directory / "embedding.png")
        embedding(snap.control, snap.predicted, snap.observed, title=where, save=written[-1])
        written.append(directory / "mean_change.png")
        mean_change(snap.control, snap.predicted, snap.observed, title=f"{where}, scored features", save=written[-1])
    return written
