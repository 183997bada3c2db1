"""Response calls for a screen: one test per perturbation, p-values down to 1e-5 and far below.

Every perturbation is compared with the same fixed sample of control cells, the *reference*
(:class:`ControlReference`: a few thousand control cells drawn once, summarised by their mean
and covariance in the fitted space, so memory does not grow with the screen). The test is
Hotelling's two-sample ``T^2`` of the perturbation's mean against the reference mean, with
the reference covariance ``S`` (``m`` cells, rank ``d``):
``T^2 = (1/n + 1/m)^-1 (mean_y - mean_r)' S^-1 (mean_y - mean_r)`` and
``(m - d) / (d (m - 1)) T^2 ~ F(d, m - d)`` under no effect, so its p-value is analytic
(:func:`scipy.stats.f`), as small as the data allow, and costs ``O(n d)`` per perturbation.
The F distribution is exact for Gaussian cells; for real cells it is an approximation that
``benchmarks/screen.py`` checks on null perturbations (uniform p-values, the rate of p-values
below 1e-3 and 1e-4 on random groups of control cells). The test sees a shift of the mean
response; a perturbation that changes only the cells' spread is not called (the energy
distance of the table still shows it).

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


@dataclass(frozen=True)
class ResponseTest:
    """The outcome of :func:`response_test` for one perturbation.

    Attributes
    ----------
    statistic
        Hotelling's ``T^2`` of the perturbation's mean against the reference.
    p_value
        Its p-value (``F(d, m - d)`` after scaling).
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
    n, m, d = len(y), reference.n_cells, reference.rank
    if n < 2:
        raise ValueError("a perturbation needs at least 2 cells to be tested.")
    w = (y.mean(0) - reference.mean) @ reference.whiten
    t2 = float(w @ w) / (1.0 / n + 1.0 / m)
    f = (m - d) / (d * (m - 1)) * t2
    return ResponseTest(t2, float(stats.f.sf(f, d, m - d)), reference.energy(y), n)


def q_values(p_values: Any) -> np.ndarray:
    """Benjamini-Hochberg q-values of ``p_values`` (:func:`statsmodels.stats.multitest.multipletests`)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    return multipletests(p, method="fdr_bh")[1]
