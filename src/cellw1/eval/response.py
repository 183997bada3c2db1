"""How cells spread in their response: scores along a perturbation's observed response axis.

A mean shift moves every control cell by the same vector, so its predicted cells spread along
the response as much as the controls do; real perturbed cells often spread far more (some
respond strongly, some escape). These metrics look at that spread, in one dimension:

- **Response axis** (:class:`ResponseAxis`): from the mean of the training control cells
  ``mu_c`` to the mean of the training perturbed cells ``mu_p``. A cell's **response score**
  is its position along that axis in units of the mean response,
  ``s(x) = (x - mu_c) . (mu_p - mu_c) / |mu_p - mu_c|^2``: about 0 for a control cell, 1 on
  average for a perturbed training cell.
- :func:`response_distance`: the 1-D Wasserstein distance between the predicted and the
  observed held-out cells' scores (:func:`scipy.stats.wasserstein_distance`), in units of the
  mean response. 0 for identical samples; ``|t|`` when one sample is the other moved by ``t``.
- :func:`responder_share`: the share of cells whose score is above
  :data:`RESPONDER_THRESHOLD` (half the mean response); the rest are escapers.

They are blind to everything off the axis (a wrong direction that keeps the right spread along
it scores well) and, for a perturbation without a response, the axis is sampling noise and the
scores mean nothing (:mod:`cellw1.ot.effect` tests for a response).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import wasserstein_distance

from ..checks import as_array
from ..errors import InputError

#: a responder's score is above this share of the mean training response
RESPONDER_THRESHOLD = 0.5


@dataclass(frozen=True)
class ResponseAxis:
    """The observed response of one perturbation: ``control_mean: (d,)`` to ``perturbed_mean: (d,)``."""

    control_mean: np.ndarray
    perturbed_mean: np.ndarray

    @classmethod
    def fit(cls, control: Any, perturbed: Any) -> ResponseAxis:
        """The axis from training control cells ``(n, d)`` to training perturbed cells ``(m, d)``."""
        c, p = as_array(control, "control"), as_array(perturbed, "perturbed")
        if c.shape[1] != p.shape[1]:
            raise InputError(f"control has {c.shape[1]} features but perturbed has {p.shape[1]}; they must agree.")
        return cls(c.mean(axis=0), p.mean(axis=0))

    @property
    def length(self) -> float:
        """``|mu_p - mu_c|``, the size of the mean response."""
        return float(np.linalg.norm(self.perturbed_mean - self.control_mean))

    def scores(self, x: Any) -> np.ndarray:
        """Response score ``s(x)`` of each cell of ``x: (n, d)``; ``(n,)``, 0 at the control mean, 1 at the perturbed mean."""
        cells = as_array(x, "x")
        if cells.shape[1] != self.control_mean.size:
            raise InputError(f"x has {cells.shape[1]} features but the axis has {self.control_mean.size}.")
        direction = self.perturbed_mean - self.control_mean
        squared = float(direction @ direction)
        if squared == 0.0:
            raise InputError("the response axis has length 0: the control and perturbed means are equal.")
        return (cells - self.control_mean) @ direction / squared


def response_distance(pred_scores: Any, obs_scores: Any) -> float:
    """1-D Wasserstein distance between two samples of response scores (any sizes)."""
    p, o = np.asarray(pred_scores, dtype=np.float64).ravel(), np.asarray(obs_scores, dtype=np.float64).ravel()
    if p.size == 0 or o.size == 0:
        raise InputError("response_distance needs at least one score on each side.")
    return float(wasserstein_distance(p, o))


def responder_share(scores: Any, threshold: float = RESPONDER_THRESHOLD) -> float:
    """Share of cells whose response score is above ``threshold`` (half the mean response by default)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise InputError("responder_share needs at least one score.")
    return float(np.mean(s > threshold))
