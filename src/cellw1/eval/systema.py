"""Metrics measured from the centroid of all perturbed cells (Systema, Vinas Torne et al. 2025).

A change measured from the control rewards a method for the shift that every perturbation of a
screen shares (systematic variation): predicting the average perturbed cell already scores
well. Systema measures each perturbation's change from the **centroid of all perturbed
cells** instead, so only what is specific to the perturbation counts.

- :func:`pearson_delta`: Pearson correlation of the predicted and the observed change of the
  mean, both measured from a reference (the perturbed centroid); 1 when the predicted mean is
  the observed one, about 0 for the centroid itself.
- :func:`centroid_accuracy`: 1 when the predicted centroid is nearer to its own perturbation's
  observed centroid than to any other perturbation's, else 0 (Systema's centroid accuracy is
  the mean of it over perturbations).

In :func:`cellw1.evaluate` the perturbed centroid is the mean of the training cells of every
evaluated perturbation (pooled over cells) and the observed centroids are the held-out cells'
means, all in the split's log-normalised expression (:mod:`cellw1.eval.context`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..checks import as_array
from ..errors import InputError

logger = logging.getLogger(__name__)


def _mean(x: Any, name: str) -> np.ndarray:
    return as_array(x, name).mean(axis=0)


def pearson_delta(pred: Any, obs: Any, reference: Any) -> float:
    """Pearson correlation of ``mean(pred) - reference`` and ``mean(obs) - reference``.

    Parameters
    ----------
    pred, obs
        Predicted ``(n, d)`` and observed ``(m, d)`` cells.
    reference
        ``(d,)`` the point changes are measured from (the centroid of all perturbed cells).

    Returns
    -------
    float
        In [-1, 1]; ``nan`` (logged) when either change is constant across features.
    """
    p, o = _mean(pred, "pred"), _mean(obs, "obs")
    ref = np.asarray(reference, dtype=np.float64).ravel()
    if not (p.size == o.size == ref.size):
        raise InputError(f"pred, obs and reference have {p.size}, {o.size} and {ref.size} features; they must agree.")
    dp, do = p - ref, o - ref
    dp, do = dp - dp.mean(), do - do.mean()
    norm = float(np.linalg.norm(dp) * np.linalg.norm(do))
    if norm == 0.0 or not np.isfinite(norm):
        logger.warning("pearson_delta is undefined: a change from the reference is constant; returning nan.")
        return float("nan")
    return float(np.clip(np.dot(dp, do) / norm, -1.0, 1.0))


def centroid_accuracy(pred: Any, observed_centroids: Any, own: int) -> float:
    """1.0 when ``mean(pred)`` is nearest (Euclidean) to ``observed_centroids[own]``, else 0.0.

    Parameters
    ----------
    pred
        Predicted cells ``(n, d)`` of one perturbation.
    observed_centroids
        ``(k, d)`` observed centroid of every evaluated perturbation, ``k >= 2``.
    own
        Row of ``observed_centroids`` holding this perturbation's.
    """
    centroids = np.asarray(observed_centroids, dtype=np.float64)
    if centroids.ndim != 2 or centroids.shape[0] < 2 or not 0 <= own < centroids.shape[0]:
        raise InputError(
            f"observed_centroids must be (k >= 2, d) with own in range; got shape {centroids.shape}, own={own}."
        )
    distances = np.linalg.norm(centroids - _mean(pred, "pred"), axis=1)
    return float(np.argmin(distances) == own)
