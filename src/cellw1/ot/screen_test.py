"""Response calls for a screen: one test per perturbation, p-values down to 1e-5 and far below.

Every perturbation is compared with the same fixed sample of control cells, the *reference*
(:class:`ControlReference`: a few thousand control cells drawn once, summarised by their mean,
covariance and a few cumulants in the fitted space, so memory does not grow with the screen).
The statistic is Hotelling's two-sample ``T^2`` of the perturbation's mean against the reference
mean, with the reference covariance ``S`` (``m`` cells, rank ``d``):
``T^2 = c (mean_y - mean_r)' S^-1 (mean_y - mean_r)`` with ``c = (1/n + 1/m)^-1``.

For Gaussian cells ``(m - d) / (d (m - 1)) T^2 ~ F(d, m - d)`` under no effect. Real cells are
not Gaussian, and the mean of a few of them is not yet: with whitened cells ``z``
(``E z z' = I``), ``T^2`` has mean ``d``, variance ``2d + c^2 (n^-3 + m^-3) k4`` and third
cumulant ``8d + 12 c^2 (n^-3 + m^-3) k4 + c^3 (n^-2 - m^-2)^2 (6 k3b + 4 k3a)
+ c^3 (n^-5 + m^-5) k6`` (:class:`Cumulants`: contractions of the cumulant tensors of ``z``,
all 0 for Gaussian cells, estimated once from the reference). These three cumulants are
matched by a shifted, scaled chi-square, ``T^2 ~ b + a chi2(nu)``, and ``(T^2 - b) / a`` takes
the place of ``T^2`` in the F test, whose denominator keeps the effect of estimating ``S`` from
``m`` cells (:func:`response_p_value`). Without excess cumulants ``a = 1``, ``b = 0``,
``nu = d``: the F test itself (the excess variance and third cumulant are floored at 0, so the
tail is never taken lighter than the Gaussian's). The p-value is analytic (:func:`scipy.stats.f`), as small as the
data allow, and costs ``O(n d)`` per perturbation; the reference's cumulants cost
``O(m^2 d)`` once. It assumes independent cells drawn like the reference's and neglects
cumulants of ``T^2`` beyond the third (a Pearson type III tail); ``benchmarks/screen.py``
checks it on null perturbations (random groups of control cells outside the reference). The
test sees a shift of the mean response; a perturbation that changes only the cells' spread is
not called (the energy distance of the table still shows it).

Benjamini and Hochberg's q-values across the screen come from
:func:`statsmodels.stats.multitest.multipletests`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

#: control cells of the shared reference sample
REFERENCE_CELLS = 5_000
#: cells of the reference used for the energy distance of the table
ENERGY_CELLS = 1_000
#: eigenvalues of the reference covariance below this share of the largest are left out
RANK_TOLERANCE = 1e-8
#: reference cells per block of the pairwise sums of :func:`cumulants`
PAIR_BLOCK = 512


@dataclass(frozen=True)
class Cumulants:
    """Contractions of the cumulant tensors of whitened cells ``z`` (``E z = 0``, ``E z z' = I``).

    All are 0 for Gaussian cells; they set the variance and skewness of ``T^2`` (module docstring).

    Attributes
    ----------
    third_cross
        ``k3a = sum_abc E[z_a z_b z_c]^2 = E[(z_1' z_2)^3]`` for independent cells 1, 2.
    third_trace
        ``k3b = |E[|z|^2 z]|^2``.
    fourth
        ``k4 = sum_ab kappa_aabb = E|z|^4 - d^2 - 2d``.
    sixth
        ``k6 = sum_abc kappa_aabbcc = E|z|^6 - d(d+2)(d+4) - (3d+12) k4 - 6 k3b - 4 k3a``.
    """

    third_cross: float
    third_trace: float
    fourth: float
    sixth: float


def cumulants(z: np.ndarray) -> Cumulants:
    """The :class:`Cumulants` of whitened cells ``z: (m, d)``; the pairwise ones as U-statistics, by blocks."""
    m, d = z.shape
    s = np.einsum("ij,ij->i", z, z)
    cross = trace = 0.0
    for start in range(0, m, PAIR_BLOCK):
        gram = z[start : start + PAIR_BLOCK] @ z.T
        rows = np.arange(len(gram))
        gram[rows, start + rows] = 0.0  # pairs of distinct cells only
        cross += float(np.sum(gram**3))
        trace += float(s[start : start + PAIR_BLOCK] @ gram @ s)
    pairs = m * (m - 1)
    third_cross, third_trace = cross / pairs, trace / pairs
    fourth = float(np.mean(s**2)) - d * d - 2 * d
    sixth = float(np.mean(s**3)) - d * (d + 2) * (d + 4) - (3 * d + 12) * fourth - 6 * third_trace - 4 * third_cross
    return Cumulants(third_cross, third_trace, fourth, sixth)


@dataclass(frozen=True)
class ResponseTest:
    """The outcome of :func:`response_test` for one perturbation.

    Attributes
    ----------
    statistic
        Hotelling's ``T^2`` of the perturbation's mean against the reference.
    p_value
        Its p-value (:func:`response_p_value`).
    energy
        Energy distance (unbiased: within-group means over distinct pairs) between the
        perturbation's cells and the reference's
        first ``ENERGY_CELLS`` cells: a size of the response that also sees a change of spread.
    cells
        Cells of the perturbation.
    """

    statistic: float
    p_value: float
    energy: float
    cells: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class ControlReference:
    """The fixed sample of control cells every perturbation is tested against.

    Parameters
    ----------
    cells
        Control cells ``(m, d)`` in the space the tests are run in.
    """

    def __init__(self, cells: torch.Tensor | np.ndarray) -> None:
        x = np.asarray(cells, dtype=np.float64)
        if x.ndim != 2 or len(x) <= x.shape[1] + 1:
            raise ValueError(f"the reference needs more cells than dimensions + 1; got shape {x.shape}.")
        self.n_cells = len(x)
        self.mean = x.mean(0)
        values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
        keep = values > RANK_TOLERANCE * values.max()
        #: whitening ``(d, rank)``: ``(x - mean) @ whiten`` has identity covariance on the reference
        self.whiten = vectors[:, keep] / np.sqrt(values[keep])
        self.rank = int(keep.sum())
        #: cumulants of the whitened reference cells, for the p-values of small perturbations
        self.cumulants = cumulants((x - self.mean) @ self.whiten)
        self.energy_cells = torch.as_tensor(x[:ENERGY_CELLS], dtype=torch.float32)
        self._within = _within(self.energy_cells)

    def energy(self, y: torch.Tensor | np.ndarray) -> float:
        """Energy distance of cells ``y: (n, d)`` from the reference's energy cells.

        Unbiased within terms: about 0 without effect, whatever the number of cells.
        """
        y = torch.as_tensor(np.asarray(y, dtype=np.float32))
        cross = float(torch.cdist(y, self.energy_cells).mean(dtype=torch.float64))
        return 2 * cross - _within(y) - self._within


def _within(x: torch.Tensor) -> float:
    """Mean distance between distinct cells of ``x``."""
    n = len(x)
    return float(torch.cdist(x, x).sum(dtype=torch.float64)) / max(n * (n - 1), 1)


def response_test(reference: ControlReference, y: torch.Tensor | np.ndarray) -> ResponseTest:
    """Hotelling's ``T^2`` test of a perturbation's cells ``y: (n, d)`` against the reference.

    Parameters
    ----------
    reference
        The shared :class:`ControlReference`.
    y
        The perturbation's cells, in the reference's space (``n >= 2``).
    """
    y = np.asarray(y, dtype=np.float64)
    n, m = len(y), reference.n_cells
    if n < 2:
        raise ValueError("a perturbation needs at least 2 cells to be tested.")
    w = (y.mean(0) - reference.mean) @ reference.whiten
    t2 = float(w @ w) / (1.0 / n + 1.0 / m)
    return ResponseTest(t2, float(response_p_value(reference, t2, n)), reference.energy(y), n)


def response_p_value(reference: ControlReference, statistic: Any, cells: Any) -> np.ndarray:
    """P-values of Hotelling's ``T^2`` ``statistic`` for perturbations of ``cells`` cells (arrays broadcast).

    The three-cumulant chi-square ``b + a chi2(nu)`` of the module docstring, in the F test's
    numerator: ``p = P(F(nu, m - d) >= (m - d) / (nu (m - 1)) (T^2 - b) / a)``.
    """
    t2, n = np.asarray(statistic, dtype=np.float64), np.asarray(cells, dtype=np.float64)
    m, d, k = reference.n_cells, reference.rank, reference.cumulants
    c = 1.0 / (1.0 / n + 1.0 / m)
    fourth = c**2 * (n**-3.0 + m**-3.0) * k.fourth
    third = c**3 * (n**-2.0 - m**-2.0) ** 2 * (6 * k.third_trace + 4 * k.third_cross)
    sixth = c**3 * (n**-5.0 + m**-5.0) * k.sixth
    k2 = 2 * d + np.maximum(fourth, 0.0)  # never lighter than the Gaussian's
    k3 = np.maximum(8 * d + 12 * fourth + third + sixth, 8 * d)
    a, nu = k3 / (4 * k2), 8 * k2**3 / k3**2
    b = d - a * nu
    return stats.f.sf((m - d) / (nu * (m - 1)) * (t2 - b) / a, nu, m - d)


def q_values(p_values: Any) -> np.ndarray:
    """Benjamini-Hochberg q-values of ``p_values`` (:func:`statsmodels.stats.multitest.multipletests`)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    return multipletests(p, method="fdr_bh")[1]
