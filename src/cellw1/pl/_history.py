"""Training history of a fit: validation dual, step-size loss, energy, where it stopped."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ._figure import finish, panel_axes

#: keys that are the x axis or a marker of a history, not a series of their own
X_KEY = "step"
STOP_KEY = "stopped_at"
TRAIN_COLOR = "#7f7f7f"
VAL_COLOR = "#d62728"


def training_history(fitted: Any) -> Mapping[str, Any]:
    """The history of ``fitted``: a mapping itself, its ``.history`` or its ``.info["history"]``."""
    if isinstance(fitted, Mapping):
        return fitted
    found = getattr(fitted, "history", None)
    if found is None:
        info = getattr(fitted, "info", None)
        found = info.get("history") if isinstance(info, Mapping) else None
    if not isinstance(found, Mapping) or not found:
        raise InputError(
            f"{type(fitted).__name__} has no training history; pass a fitted model or map with a "
            "`.history` dict, or the dict itself (lists of floats such as 'step', 'val_dual', 'loss')."
        )
    return found


def _series(values: Any) -> np.ndarray | None:
    """``values`` as a 1-D float array, or None when it is not a list of numbers."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence, np.ndarray)):
        return None
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.ndim == 1 and arr.size else None


def history_panels(history: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The panels of a history: ``{title: {"lines": {key: (x, y)}, "stop": step or None}}``.

    A nested history (``{"potential": {...}, "step_size": {...}}``) gives one group of
    panels per phase. In a group, ``train_X`` and ``val_X`` share the panel ``X``; each other
    series has a panel of its own. A series as long as the group's ``step`` list is drawn
    against it, any other against its record number (one record per training step).
    """
    groups = {str(k): v for k, v in history.items() if isinstance(v, Mapping)}
    flat = {k: v for k, v in history.items() if not isinstance(v, Mapping)}
    if flat:
        groups = {"": flat, **groups}
    panels: dict[str, dict[str, Any]] = {}
    for group, entries in groups.items():
        steps = _series(entries.get(X_KEY))
        stop = _series(entries.get(STOP_KEY))
        for key, values in entries.items():
            y = _series(values)
            if key in (X_KEY, STOP_KEY) or y is None:
                continue
            x = steps if steps is not None and steps.size == y.size else np.arange(1, y.size + 1, dtype=float)
            quantity = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
            name = f"{group} {quantity}".strip()
            panel = panels.setdefault(name, {"lines": {}, "stop": None})
            panel["lines"][f"{group}.{key}" if group else str(key)] = (x, y)
            if stop is not None:
                panel["stop"] = float(stop[-1])
    return panels


def history(
    fitted: Any,
    *,
    keys: Sequence[str] | None = None,
    title: str = "",
    ax: Any = None,
    save: str | os.PathLike | None = None,
) -> Any:
    """The training curves of a fit, one panel per quantity, against the training step.

    Training and validation values of one quantity (``train_dual`` and ``val_dual``) share a
    panel; a dotted line marks the step where early stopping ended the fit
    (``stopped_at``). The keys drawn are those the history has, so the W1 map's potential
    and step-size phases and the W2 baseline all work.

    Parameters
    ----------
    fitted
        A fitted model or map with a ``.history`` dict (or ``.info["history"]``), or the
        dict itself: lists of floats under keys such as ``step``, ``val_dual``,
        ``train_dual``, ``val_energy`` and ``loss``, optionally one dict per phase.
    keys
        Series to draw (``"val_dual"``; ``"phase.key"`` in a nested history); default all.
    title
        Figure title (only for a new figure).
    ax
        One matplotlib ``Axes`` per panel; by default a new figure.
    save
        File to write the figure to (format from the suffix), atomically.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into (the one holding ``ax`` when given).
    """
    panels = history_panels(training_history(fitted))
    if keys is not None:
        wanted = [keys] if isinstance(keys, str) else list(keys)
        present = [k for p in panels.values() for k in p["lines"]]
        unknown = [k for k in wanted if k not in present]
        if unknown or not wanted:
            raise InputError(f"keys {unknown or wanted} not in the history; choose among {present}.")
        panels = {name: {"lines": {k: v for k, v in p["lines"].items() if k in wanted}, "stop": p["stop"]}
                  for name, p in panels.items() if any(k in wanted for k in p["lines"])}
    if not panels:
        raise InputError("the history holds no series of numbers to plot (lists under keys such as 'val_dual').")

    fig, axes = panel_axes(ax, len(panels), figsize=(3.6, 2.8))
    for panel, (name, content) in zip(axes, panels.items()):
        for key, (x, y) in content["lines"].items():
            short = key.rsplit(".", 1)[-1]
            color = TRAIN_COLOR if short.startswith("train_") else VAL_COLOR if short.startswith("val_") else None
            panel.plot(x, y, lw=1.0, color=color, label=short, marker="o" if y.size < 30 else None, ms=3)
        if content["stop"] is not None:
            panel.axvline(content["stop"], ls=":", lw=1.0, c="black", label="stopped")
        panel.set_title(name, fontsize=10)
        panel.set_xlabel("step", fontsize=8)
        panel.tick_params(labelsize=7)
        panel.legend(loc="best", fontsize=7)
    return finish(fig, made=ax is None, save=save, title=title)
