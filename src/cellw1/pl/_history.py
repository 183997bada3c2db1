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
BEST_KEY = "best_step"
TRAIN_COLOR = "#7f7f7f"
VAL_COLOR = "#d62728"


def training_history(fitted: Any) -> Mapping[str, Any]:
    """The history of ``fitted``: a mapping itself, its ``.history``, its ``.info["history"]`` or its map's.

    A conditional model keeps the history on its map (``.map.history``); a collection of models
    (a mapping of fitted models) has one per model, so it is refused with a message saying so.
    """
    if isinstance(fitted, Mapping):
        if fitted and all(hasattr(value, "predict") for value in fitted.values()):
            raise InputError(
                f"{type(fitted).__name__} holds one fitted model per perturbation, each with its own history; "
                f"pass one of them, e.g. collection[{next(iter(fitted))!r}]."
            )
        return fitted
    found = getattr(fitted, "history", None)
    if found is None:
        info = getattr(fitted, "info", None)
        found = info.get("history") if isinstance(info, Mapping) else None
    if found is None:  # a conditional model: the history of its map
        found = getattr(getattr(fitted, "map", None), "history", None)
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


def history_groups(history: Mapping[str, Any]) -> dict[str, dict[str, tuple[str, Any]]]:
    """The phases of a history: ``{phase: {key: (full key, values)}}``; ``""`` is the top level.

    A phase is a nested dict (``{"potential": {"step": ...}}``, full keys
    ``"potential.step"``) or a prefix of flat keys that has its own step list
    (``"potential_step"``, ``"potential_val_dual"``: the keys of a combined history).
    """
    groups: dict[str, dict[str, tuple[str, Any]]] = {}
    tail = f"_{X_KEY}"
    prefixes = sorted(
        (str(k)[: -len(tail)] for k in history if str(k).endswith(tail) and not str(k).endswith(BEST_KEY)),
        key=len,
        reverse=True,
    )
    for key, values in history.items():
        key = str(key)
        if isinstance(values, Mapping):
            groups.setdefault(key, {}).update({str(k): (f"{key}.{k}", v) for k, v in values.items()})
            continue
        prefix = next((p for p in prefixes if key.startswith(f"{p}_")), "")
        groups.setdefault(prefix, {})[key[len(prefix) + 1 :] if prefix else key] = (key, values)
    return {name: entries for name, entries in groups.items() if entries}


def history_panels(history: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The panels of a history: ``{title: {"lines": {full key: (label, x, y)}, "stop": .., "best": ..}}``.

    Each phase (:func:`history_groups`) has its own panels. In a phase, ``train_X`` and
    ``val_X`` share the panel ``X``; each other series has a panel of its own. A series as
    long as the phase's ``step`` list is drawn against it, any other against its record
    number (one record per training step).
    """
    panels: dict[str, dict[str, Any]] = {}
    for group, entries in history_groups(history).items():
        steps = _series(entries.get(X_KEY, ("", None))[1])
        marks = {
            mark: _series(entries.get(key, ("", None))[1]) for mark, key in (("stop", STOP_KEY), ("best", BEST_KEY))
        }
        for key, (full_key, values) in entries.items():
            y = _series(values)
            if key in (X_KEY, STOP_KEY, BEST_KEY) or y is None:
                continue
            x = steps if steps is not None and steps.size == y.size else np.arange(1, y.size + 1, dtype=float)
            quantity = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
            name = f"{group.replace('_', ' ')} {quantity}".strip()
            panel = panels.setdefault(name, {"lines": {}, "stop": None, "best": None})
            panel["lines"][full_key] = (key, x, y)
            for mark, at in marks.items():
                if at is not None:
                    panel[mark] = float(at[-1])
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
    panel; a dashed line marks the step whose state was kept (``best_step``) and a dotted
    one where training ended (``stopped_at``). The keys drawn are those the history has, so
    the W1 map's potential and step-size phases and the W2 baseline all work.

    Parameters
    ----------
    fitted
        A fitted model or map with a ``.history`` dict (or ``.info["history"]``), or the
        dict itself: lists of floats under keys such as ``step``, ``val_dual``,
        ``train_dual``, ``val_energy`` and ``loss``; a fit of several phases has one dict
        per phase or one prefix per phase (``potential_step``, ``potential_val_dual``...).
    keys
        Series to draw, by their keys in the history (``"val_dual"``,
        ``"potential_val_dual"``; ``"phase.key"`` in a nested history); default all.
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
        panels = {
            name: {**p, "lines": {k: v for k, v in p["lines"].items() if k in wanted}}
            for name, p in panels.items()
            if any(k in wanted for k in p["lines"])
        }
    if not panels:
        raise InputError("the history holds no series of numbers to plot (lists under keys such as 'val_dual').")

    fig, axes = panel_axes(ax, len(panels), figsize=(3.6, 2.8))
    for panel, (name, content) in zip(axes, panels.items(), strict=False):
        for label, x, y in content["lines"].values():
            color = TRAIN_COLOR if label.startswith("train_") else VAL_COLOR if label.startswith("val_") else None
            panel.plot(x, y, lw=1.0, color=color, label=label, marker="o" if y.size < 30 else None, ms=3)
        if content["best"] is not None:
            panel.axvline(content["best"], ls="--", lw=1.0, c="#2ca02c", label="best (kept)")
        if content["stop"] is not None:
            panel.axvline(content["stop"], ls=":", lw=1.0, c="black", label="stopped")
        panel.set_title(name, fontsize=10)
        panel.set_xlabel("step", fontsize=8)
        panel.tick_params(labelsize=7)
        panel.legend(loc="best", fontsize=7)
    return finish(fig, made=ax is None, save=save, title=title)
