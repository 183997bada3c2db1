"""Where an unseen dose lies on a perturbation's response: one direction, scaled by a dose curve.

A dose between two training doses could be predicted from those two alone, but each is
estimated from a few hundred cells and their noise carries over. Across doses a drug's
response usually keeps its direction and changes its size along a sigmoid in log dose (the
Hill curve; CPA scales a drug's latent shift by such a curve too). When the training doses
agree with that, every one of them informs an unseen dose:

* the response magnitudes: each dose's mean shift ``d_k`` from the controls, projected on the
  largest one's, ``m_k = <d_k, d_top> / |d_top|^2``;
* one direction, tested: the residual ``sum_k |d_k - m_k d_top|^2`` against what sampling
  noise alone leaves (``tr(S_k)/n_k + tr(S_0)/n_0`` a dose), at most ``RANK_ONE_LIMIT`` times;
* a curve ``r(dose)``: a Hill curve ``top * d^n / (d^n + ec50^n)`` fitted to the magnitudes if
  it fits them within their noise, else their linear interpolation in ``log1p(dose)``;
* a cell's displacement at an unseen dose ``d*`` is then ``r(d*) p(x)``, with the cell's
  profile ``p(x)`` the least-squares fit ``sum_k r_k D_k(x) / sum_k r_k^2`` of its
  displacements ``D_k(x)`` at the training doses: weights :meth:`DoseResponse.weights`.

Perturbations with fewer than ``MIN_DOSES`` doses, or whose doses fail the test, get no curve
(the caller falls back to the network at the dose's code).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

logger = logging.getLogger(__name__)

#: training doses a perturbation needs for a curve (a Hill curve has 3 parameters)
MIN_DOSES = 3
#: largest ratio of a residual to its expected sampling noise that the doses may leave (the
#: one-direction test, and the Hill curve's fit to the magnitudes)
RANK_ONE_LIMIT = 3.0
#: smallest ratio of the largest dose's squared shift to its expected sampling noise: below it
#: the doses show no response worth a curve (half of the shift is noise)
MIN_SIGNAL = 2.0
#: bounds of the Hill slope
SLOPES = (0.5, 4.0)


@dataclass(frozen=True)
class DoseResponse:
    """A perturbation's response across its training doses.

    Attributes
    ----------
    doses
        Training doses, ascending.
    magnitudes
        Each dose's mean shift projected on the largest one's (that one is 1).
    hill
        ``(top, ec50, slope)`` of the fitted Hill curve, or ``None``: the magnitudes are
        interpolated linearly in ``log1p(dose)``.
    residual
        The one-direction residual over its expected sampling noise (at most ``RANK_ONE_LIMIT``).
    """

    doses: tuple[float, ...]
    magnitudes: tuple[float, ...]
    hill: tuple[float, float, float] | None
    residual: float

    def magnitude(self, dose: float | np.ndarray) -> np.ndarray:
        """Evaluate the curve ``r(dose)``."""
        d = np.asarray(dose, dtype=np.float64)
        if self.hill is None:
            return np.interp(np.log1p(d), np.log1p(self.doses), self.magnitudes)
        return _hill(d, *self.hill)

    def covers(self, dose: float) -> bool:
        """Whether ``dose`` lies within the training doses."""
        return self.doses[0] <= dose <= self.doses[-1]

    def weights(self, dose: float) -> np.ndarray:
        """Weights ``a_k`` of the training doses' displacements at ``dose``: ``r(d*) r_k / sum r_k^2``."""
        r = self.magnitude(np.asarray(self.doses))
        return float(self.magnitude(dose)) * r / float(r @ r)

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers and lists, for a model file's header."""
        return {
            "doses": list(self.doses),
            "magnitudes": list(self.magnitudes),
            "hill": None if self.hill is None else list(self.hill),
            "residual": self.residual,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DoseResponse:
        """Read what :meth:`to_dict` wrote."""
        hill = data.get("hill")
        return cls(
            tuple(float(d) for d in data["doses"]),
            tuple(float(m) for m in data["magnitudes"]),
            None if hill is None else (float(hill[0]), float(hill[1]), float(hill[2])),
            float(data["residual"]),
        )


def _hill(d: np.ndarray, top: float, ec50: float, slope: float) -> np.ndarray:
    d = np.maximum(np.asarray(d, dtype=np.float64), 0.0)
    return top * d**slope / (d**slope + ec50**slope)


def _noise(cells: np.ndarray) -> float:
    """``tr(S) / n``: the expected squared length of the sampling error of the cells' mean."""
    return float(cells.var(axis=0, ddof=1).sum() / len(cells))


def fit_dose_response(
    doses: Sequence[float], control: np.ndarray, groups: Sequence[np.ndarray], *, name: str = "the perturbation"
) -> DoseResponse | None:
    """Fit the :class:`DoseResponse` of cells ``groups[k]`` at ``doses[k]`` against ``control``, or ``None``.

    ``None`` when there are fewer than ``MIN_DOSES`` doses, when the largest shift is at the
    level of the sampling noise (``MIN_SIGNAL``), or when the doses do not share one direction
    (logged).
    """
    if len(doses) < MIN_DOSES:
        return None
    order = np.argsort(doses)
    doses = [float(doses[k]) for k in order]
    groups = [np.asarray(groups[k], dtype=np.float64) for k in order]
    control = np.asarray(control, dtype=np.float64)
    base, base_noise = control.mean(axis=0), _noise(control)
    shifts = [g.mean(axis=0) - base for g in groups]
    noise = np.array([_noise(g) + base_noise for g in groups])
    top = int(np.argmax([s @ s for s in shifts]))
    scale = float(shifts[top] @ shifts[top])
    if scale < MIN_SIGNAL * noise[top]:
        return None
    m = np.array([s @ shifts[top] / scale for s in shifts])
    # expected residual under one direction: each dose's noise, plus the top's carried by m_k, less
    # the top dose's own (its residual is 0 by construction)
    expected = float(np.sum(noise + m**2 * noise[top]) - 2.0 * noise[top])
    residual = float(sum(np.sum((s - mk * shifts[top]) ** 2) for s, mk in zip(shifts, m, strict=True)))
    ratio = residual / max(expected, 1e-12)
    if ratio > RANK_ONE_LIMIT:
        logger.info(
            "the doses of %s do not share one response direction (residual %.1fx its sampling noise); an unseen "
            "dose is predicted at its code.",
            name,
            ratio,
        )
        return None
    hill = _fit_hill(np.array(doses), m, np.sqrt(noise / scale))
    return DoseResponse(tuple(doses), tuple(float(v) for v in m), hill, ratio)


def _fit_hill(doses: np.ndarray, m: np.ndarray, sd: np.ndarray) -> tuple[float, float, float] | None:
    """Fit a least-squares Hill curve through the magnitudes ``m`` (several starts).

    ``None`` unless it fits them within ``RANK_ONE_LIMIT`` times their noise ``sd`` on
    average, or if there is no positive dose.
    """
    positive = doses[doses > 0]
    if len(positive) < MIN_DOSES or m.max() <= 0:
        return None
    low, high = float(positive.min()), float(positive.max())
    lower = [0.05 * m.max(), np.log(low / 10.0), SLOPES[0]]
    upper = [3.0 * m.max(), np.log(high * 10.0), SLOPES[1]]

    def residuals(q: np.ndarray) -> np.ndarray:
        return _hill(doses, q[0], np.exp(q[1]), q[2]) - m

    starts = np.linspace(np.log(low), np.log(high), 5)
    fits = [least_squares(residuals, [m.max(), s, 1.5], bounds=(lower, upper)) for s in starts]
    best = min(fits, key=lambda f: f.cost)
    if np.mean((best.fun / np.maximum(sd, 1e-12)) ** 2) > RANK_ONE_LIMIT:
        return None
    top, log_ec50, slope = best.x
    return float(top), float(np.exp(log_ec50)), float(slope)
