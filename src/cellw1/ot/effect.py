"""Is there a response to transport? A permutation test of the energy distance between two groups.

A map fitted to a perturbation without an effect learns the sampling noise between the two
groups of cells and moves cells by it (a knock-out whose guide did not work, a drug below its
active dose). Before fitting, the two groups are compared with the energy distance
(Székely & Rizzo 2004), ``2 E|X - Y| - E|X - X'| - E|Y - Y'|``, and its permutation p-value
(:func:`scipy.stats.permutation_test`): a perturbation whose cells cannot be told from the
controls at level ``alpha`` is predicted to leave cells where they are.

On a sample of at most ``max_cells`` cells of each group the pairwise distances are computed
once; a permutation only moves the group labels, so the statistics of a batch of
permutations are one matrix product ``-(W * (D @ W)).sum(0)`` with one column of weights
``1/n`` (group 1) and ``-1/m`` (group 2) per permutation.

A response that is detected can still be mostly noise: the observed mean shift ``d`` of two
groups of ``N`` and ``M`` cells has ``E|d|^2 = |delta|^2 + tr(S_1)/N + tr(S_2)/M``, with
``delta`` the true shift and ``S`` the groups' covariances. The test also reports the share of
the difference that the cells resolve (:func:`resolved_share`): ``|delta|^2 / E|d|^2``,
estimated as ``max(0, 1 - (tr(S_1)/N + tr(S_2)/M) / |d|^2)`` (positive-part James-Stein),
or, for a response that changes the cells' spread more than their mean, the same ratio of the
energy distance (its unbiased estimate against its expectation for groups of ``N`` and ``M``
cells), whichever is larger: near 1 for a strong response, near 0 for one at the level of the
sampling noise. With ``W1Config(shrink_response=True)`` predictions move cells by that share of
the map's displacement (:class:`~cellw1.tl.methods.W1`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import permutation_test

from ..errors import ConfigError
from .sampling import Cells

#: cells of each group compared (a seeded sample of larger groups)
MAX_CELLS = 1_500
#: label permutations of the test
RESAMPLES = 199


@dataclass(frozen=True)
class EffectTest:
    """The outcome of :func:`effect_test`.

    Attributes
    ----------
    energy
        Energy distance between the compared cells (V-statistic).
    p_value
        Permutation p-value of ``energy`` (one-sided: a larger distance is the effect).
    cells
        Cells of each group compared.
    resolved
        Share of the groups' difference (mean shift or energy distance) above sampling noise,
        in ``[0, 1]`` (:func:`resolved_share`).
    """

    energy: float
    p_value: float
    cells: tuple[int, int]
    resolved: float = 1.0

    def detected(self, alpha: float | None) -> bool:
        """Whether the groups differ at level ``alpha`` (``None``: always, no test)."""
        return alpha is None or self.p_value <= alpha

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (``cells`` as a list), as kept in a map's ``info``."""
        return {**asdict(self), "cells": list(self.cells)}


def check_effect_alpha(alpha: float | None) -> float | None:
    """``alpha`` itself when it is a level in ``(0, 1)`` or ``None`` (no test); else a ConfigError."""
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.floating) or not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"effect_alpha={alpha!r} must lie in (0, 1), or None to skip the test for a response.")
    return float(alpha)


def _sample(cells: Cells, size: int, rng: np.random.Generator) -> torch.Tensor:
    positions = np.arange(cells.n_cells)
    if cells.n_cells > size:
        positions = np.sort(rng.choice(cells.n_cells, size=size, replace=False))
    return cells.read(positions).detach().to("cpu", torch.float32)


def effect_test(
    source: Cells, target: Cells, *, max_cells: int = MAX_CELLS, resamples: int = RESAMPLES, seed: int = 0
) -> EffectTest:
    """Energy-distance permutation test of ``source`` against ``target`` cells.

    Parameters
    ----------
    source, target
        The two groups (:class:`~cellw1.ot.sampling.Cells`, in memory or streamed).
    max_cells
        Cells of each group compared: a seeded sample of larger groups.
    resamples
        Label permutations; the smallest p-value is ``1 / (resamples + 1)``.
    seed
        Seed of the samples and the permutations.
    """
    rng = np.random.default_rng(seed)
    x, y = _sample(source, max_cells, rng), _sample(target, max_cells, rng)
    n, m = len(x), len(y)
    distances = torch.cdist(torch.cat((x, y)), torch.cat((x, y)))
    resolved = resolved_share(x.double(), y.double(), source.n_cells, target.n_cells, distances)

    def statistic(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
        single = first.ndim == 1
        first, second = np.atleast_2d(first).astype(np.int64), np.atleast_2d(second).astype(np.int64)
        weights = np.empty((n + m, len(first)), dtype=np.float32)
        columns = np.arange(len(first))
        weights[first, columns[:, None]] = 1.0 / n
        weights[second, columns[:, None]] = -1.0 / m
        w = torch.from_numpy(weights)
        energy = (-(w * (distances @ w)).sum(0)).double().numpy()
        return energy[0] if single else energy

    result = permutation_test(
        (np.arange(n), np.arange(n, n + m)),
        statistic,
        permutation_type="independent",
        vectorized=True,
        n_resamples=resamples,
        alternative="greater",
        rng=rng,
    )
    return EffectTest(float(result.statistic), float(result.pvalue), (n, m), resolved)


def _share(signal: float, noise: float) -> float:
    return signal / (signal + noise) if signal > 0 else 0.0


def resolved_share(
    x: torch.Tensor, y: torch.Tensor, n_x: int, n_y: int, distances: torch.Tensor | None = None
) -> float:
    """Share of the difference of ``y`` from ``x`` above the sampling noise of groups of cells.

    The groups have ``n_x`` and ``n_y`` cells; the share is estimated on the samples
    ``x: (n, d)`` and ``y: (m, d)``.

    The mean shift's ``|delta|^2 / (|delta|^2 + tr(S_x)/n_x + tr(S_y)/n_y)``; with the pairwise
    ``distances`` of ``[x; y]``, the larger of it and the energy distance's
    ``D / (D + E|x - x'|/n_x + E|y - y'|/n_y)`` (``D`` unbiased; the second term is the bias of
    its V-statistic on the whole groups).
    """
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return 1.0  # no spread to measure the noise with
    shift = float(((y.mean(0) - x.mean(0)) ** 2).sum())
    spread_x, spread_y = float(x.var(0).sum()), float(y.var(0).sum())
    # |delta|^2, unbiased on the samples; the noise of the whole groups' means, which the map learns from
    share = _share(shift - spread_x / n - spread_y / m, spread_x / n_x + spread_y / n_y)
    if distances is not None:  # sums in float64, without a float64 copy of the matrix
        within_x = float(distances[:n, :n].sum(dtype=torch.float64)) / (n * (n - 1))
        within_y = float(distances[n:, n:].sum(dtype=torch.float64)) / (m * (m - 1))
        energy = 2 * float(distances[:n, n:].sum(dtype=torch.float64)) / (n * m) - within_x - within_y
        share = max(share, _share(energy, within_x / n_x + within_y / n_y))
    return share
