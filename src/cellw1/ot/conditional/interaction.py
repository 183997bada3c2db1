"""Do a combination's responses add up? A test of a pair's mean shift against the sum of its members'.

A combination ``A+B`` is predicted by adding its members' per-cell displacements
(:meth:`cellw1.tl.conditional.model.ConditionalModel.composed`); a learned interaction is used
only where the pair was trained on and its cells say the sum is wrong. With the mean of the
control cells ``m_0``, of each member ``m_k`` and of the pair ``m_p``, the interaction of the
means is

``r = (m_p - m_0) - sum_k (m_k - m_0)``.

Under additivity ``r`` is sampling noise alone, ``r ~ N(0, S)`` with
``S = S_p / n_p + sum_k S_k / n_k + (K - 1)^2 S_0 / n_0`` (``S_g`` each group's covariance,
``K`` members). ``|r|^2`` is then a weighted sum of chi-squares, approximated by
``g chi2_h`` with the same mean and variance (Satterthwaite: ``g = tr(S^2) / tr(S)``,
``h = tr(S)^2 / tr(S^2)``), which gives the p-value.

A trained pair's mean shift then has two estimates: its own cells' (noise
``v_p = tr(S_p) / n_p``) and the sum of its members' (noise ``v_s = tr(S) - v_p``, and a bias:
the interaction, ``b^2 = max(0, |r|^2 - tr S)``). :meth:`InteractionTest.weight` is the
weight of the pair's own estimate that minimises the expected squared error of their blend,
``(v_s + b^2) / (v_s + b^2 + v_p)``: near 1 for a strong interaction or a well-sampled pair,
lower where the pair has few cells and no detected interaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2

from ...errors import InputError


@dataclass(frozen=True)
class InteractionTest:
    """The outcome of :func:`interaction_test`.

    Attributes
    ----------
    distance
        ``|r|``: how far the pair's mean shift is from the sum of its members'.
    noise
        ``sqrt(tr S)``: the distance sampling noise alone gives on average.
    p_value
        P-value of ``|r|^2`` under additivity.
    share
        Share of ``|r|^2`` above the noise, in ``[0, 1]``.
    pair_noise
        ``v_p = tr(S_p) / n_p``: the noise of the pair's own mean shift (squared).
    """

    distance: float
    noise: float
    p_value: float
    share: float
    pair_noise: float = 0.0

    def weight(self) -> float:
        """Weight of the pair's own estimate in its blend with the members' sum, in ``[0, 1]``."""
        total = self.noise**2
        bias = max(0.0, self.distance**2 - total)
        members = max(total - self.pair_noise, 0.0) + bias
        return members / (members + self.pair_noise) if members + self.pair_noise > 0 else 1.0

    def detected(self, alpha: float | None) -> bool:
        """Whether the pair departs from additivity at level ``alpha`` (``None``: always)."""
        return alpha is None or self.p_value <= alpha

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers, for a model file's header."""
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> InteractionTest:
        """Read what :meth:`to_dict` wrote."""
        return cls(**{k: float(value[k]) for k in ("distance", "noise", "p_value", "share", "pair_noise")})


def _mean_and_noise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"each group needs at least 2 cells (n, d) to test an interaction; got shape {x.shape}.")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False)) / len(x)


def interaction_test(control: np.ndarray, members: Sequence[np.ndarray], pair: np.ndarray) -> InteractionTest:
    """Test whether ``pair``'s mean shift from ``control`` is the sum of the ``members``' shifts.

    Parameters
    ----------
    control, pair
        Cells ``(n, d)`` of the control group and of the combination.
    members
        Cells of each member applied alone (at least two groups).
    """
    if len(members) < 2:
        raise InputError("an interaction needs a combination of at least two members.")
    m0, s0 = _mean_and_noise(control)
    mp, noise = _mean_and_noise(pair)
    pair_noise = float(np.trace(noise))
    r = mp - m0
    for cells in members:
        mk, sk = _mean_and_noise(cells)
        r = r - (mk - m0)
        noise = noise + sk
    noise = noise + (len(members) - 1) ** 2 * s0
    trace, trace2 = float(np.trace(noise)), float((noise * noise).sum())
    stat = float(r @ r)
    if trace <= 0 or trace2 <= 0:  # no spread at all: any departure is an interaction
        return InteractionTest(float(np.sqrt(stat)), 0.0, 0.0 if stat > 0 else 1.0, 1.0 if stat > 0 else 0.0, 0.0)
    scale, dof = trace2 / trace, trace**2 / trace2
    share = max(0.0, stat - trace) / stat if stat > 0 else 0.0
    p_value = float(chi2.sf(stat / scale, dof))
    return InteractionTest(float(np.sqrt(stat)), float(np.sqrt(trace)), p_value, share, pair_noise)
