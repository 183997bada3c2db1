"""Control, observed and predicted cells on the first two principal components."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..checks import as_array
from ..errors import InputError
from ._figure import finish, method_panels, panel_axes

CONTROL_COLOR = "#1f77b4"
OBSERVED_COLOR = "#b0b0b0"
PREDICTED_COLOR = "#d62728"


def pca_2d(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and top-2 principal axes ``(2, d)`` of ``reference: (n, d)`` by numpy SVD.

    With one feature the second axis is zero (the cells are drawn on a line).
    """
    mean = reference.mean(axis=0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    axes = np.zeros((2, reference.shape[1]))
    axes[: min(2, vt.shape[0])] = vt[:2]
    return mean, axes


def embedding(
    control: Any,
    predicted: Any,
    observed: Any,
    *,
    title: str = "",
    ax: Any = None,
    save: str | os.PathLike | None = None,
) -> Any:
    """Control, predicted and observed cells on the first two principal components.

    The PCA is fitted (numpy SVD) on the control and observed cells together, so the axes do
    not depend on any prediction and several methods share one view: a good prediction
    lies over the observed cells, not over the control cells.

    Parameters
    ----------
    control
        ``(n, d)`` input (control) cells.
    predicted
        ``(n, d)`` predictions, or a mapping ``method -> (n, d)`` for one panel per method.
    observed
        ``(m, d)`` observed perturbed cells.
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
    ctrl = as_array(control, "control")
    obs = as_array(observed, "observed")
    preds = {name: as_array(values, f"predicted[{name!r}]") for name, values in method_panels(predicted).items()}
    for name, arr in [("observed", obs), *((f"predicted[{k!r}]", v) for k, v in preds.items())]:
        if arr.shape[1] != ctrl.shape[1]:
            raise InputError(
                f"{name} has {arr.shape[1]} features but control has {ctrl.shape[1]}; use the same features."
            )

    mean, pcs = pca_2d(np.vstack([ctrl, obs]))

    def project(a: np.ndarray) -> np.ndarray:
        return (a - mean) @ pcs.T

    c2, o2 = project(ctrl), project(obs)
    fig, axes = panel_axes(ax, len(preds), figsize=(3.6, 3.4), share=True)
    for i, (panel, (name, arr)) in enumerate(zip(axes, preds.items(), strict=False)):
        p2 = project(arr)
        panel.scatter(o2[:, 0], o2[:, 1], s=3, c=OBSERVED_COLOR, label="observed", zorder=1)
        panel.scatter(c2[:, 0], c2[:, 1], s=3, c=CONTROL_COLOR, alpha=0.5, label="control", zorder=2)
        panel.scatter(p2[:, 0], p2[:, 1], s=3, c=PREDICTED_COLOR, alpha=0.6, label="predicted", zorder=3)
        panel.set_title(name, fontsize=10)
        panel.set_xlabel("PC1", fontsize=8)
        panel.set_ylabel("PC2", fontsize=8)
        panel.tick_params(labelsize=7)
        if i == 0:
            panel.legend(loc="best", fontsize=7, markerscale=3)
    return finish(fig, made=ax is None, save=save, title=title)
