"""Evaluation metrics of the paper (Sec. 4.4): predicted cells against observed cells.

Every metric is a pure function ``metric(pred, obs) -> float`` of two samples of cells,
``pred: (n, d)`` and ``obs: (m, d)`` in the same feature space (numpy arrays, scipy sparse
matrices or torch tensors; nothing is modified). They are listed in one registry,
:data:`METRICS`, that the CLI and the benchmarks both read; :func:`compute_metrics` runs
any subset of it.

- ``r2``: squared Pearson correlation of the feature means (higher is better).
- ``l2``: Euclidean distance between the feature means.
- ``mmd``: squared maximum mean discrepancy, RBF kernels averaged over 50 bandwidths, as
  in CellOT.
- ``energy``: energy distance.
- ``w1``: exact Wasserstein-1 distance (POT's network simplex) on a seeded subsample.

The pairwise metrics (``mmd``, ``energy``) never hold an ``n x m`` matrix: squared distances
are computed once per block of rows and reduced at once, and the within-sample blocks use
symmetry (upper triangle only), so memory stays bounded for any number of cells.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from ..checks import as_array
from ..errors import ConfigError, InputError
from ..ot.energy import energy_distance as ot_energy_distance
from ..ot.energy import pair_sums

logger = logging.getLogger(__name__)

#: The 50 RBF bandwidths ``gamma`` that CellOT averages its MMD over (10 down to 0.001).
DEFAULT_GAMMAS: np.ndarray = np.logspace(1, -3, 50)
#: Largest number of entries of a distance block held at once (2^16 doubles = 512 KiB,
#: small enough to stay in cache while the 50 kernels are evaluated on it).
CHUNK_ELEMENTS = 1 << 16
#: Kernel arguments are clipped here (exp(-700) ~ 1e-304) to stay off exp's slow underflow path.
_EXP_FLOOR = -700.0
#: Beyond this, exp(-x) rounds to exactly 0.0 in float64 (the smallest subnormal is exp(-745.1)).
_EXP_ZERO = 746.0
#: Default per-sample subsample size of :func:`wasserstein1` (exact OT is cubic in it).
W1_MAX_POINTS = 2000


# -- input handling -----------------------------------------------------------------------------
def as_cell_pair(pred: Any, obs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as float64 arrays (:func:`cellw1.checks.as_array`), checked to share the feature space."""
    p, o = as_array(pred, "pred"), as_array(obs, "obs")
    if p.shape[1] != o.shape[1]:
        raise InputError(
            f"pred has {p.shape[1]} features but obs has {o.shape[1]}; "
            "both must be measured on the same features in the same order."
        )
    return p, o


def subsample_rows(x: np.ndarray, max_points: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_points`` rows of ``x`` drawn without replacement (order kept).

    ``x`` itself is returned when it has no more rows than ``max_points`` (or it is None),
    and then ``rng`` is not advanced.
    """
    if max_points is None or x.shape[0] <= max_points:
        return x
    keep = np.sort(rng.choice(x.shape[0], size=max_points, replace=False))
    return x[keep]


def _check_max_points(max_points: int | None) -> None:
    if max_points is None:
        return
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ConfigError(f"max_points must be a positive integer or None, got {max_points!r}.")


def _subsample_pair(pred: Any, obs: Any, max_points: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate, then subsample ``pred`` and ``obs`` independently from one seeded stream."""
    _check_max_points(max_points)
    p, o = as_cell_pair(pred, obs)
    rng = np.random.default_rng(seed)
    return subsample_rows(p, max_points, rng), subsample_rows(o, max_points, rng)


# -- pairwise sums over a squared-distance matrix --------------------------------------------------
def _rbf_sums(gammas: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Reducer: ``[sum(exp(-gamma_k * d)) for k]`` reusing one buffer for all bandwidths.

    ``exp`` of arguments below about -708 (results that underflow) takes a slow path, many
    times slower than the normal one (docs/speed.md), and with ``gamma = 10`` most pairs
    land there. So a bandwidth whose every value underflows to exactly 0 is skipped, and where
    only some do, arguments are clipped at :data:`_EXP_FLOOR` (each such kernel value
    becomes 1e-304 instead of a value below it: an absolute change < 1e-300 in the result).
    """

    def reduce(d: np.ndarray) -> np.ndarray:
        out = np.zeros(gammas.size)
        if d.size == 0:
            return out
        d_min, d_max = float(d.min()), float(d.max())
        buf = np.empty_like(d)
        for k, g in enumerate(gammas):
            if g * d_min > _EXP_ZERO:
                continue  # exp(-g d) == 0.0 exactly for every entry
            np.multiply(d, -g, out=buf)
            if g * d_max > -_EXP_FLOOR:
                np.maximum(buf, _EXP_FLOOR, out=buf)
            np.exp(buf, out=buf)
            out[k] = buf.sum()
        return out

    return reduce


def _check_gammas(gammas: Iterable[float] | np.ndarray) -> np.ndarray:
    g = np.asarray(gammas, dtype=np.float64).ravel()
    if g.size == 0 or not np.all(np.isfinite(g)) or np.any(g <= 0):
        raise ConfigError(f"gammas must be a non-empty list of positive, finite bandwidths; got {gammas!r}.")
    return g


# -- the metrics ------------------------------------------------------------------------------------
def r2(pred: Any, obs: Any) -> float:
    """Squared Pearson correlation between the feature means of ``pred`` and ``obs``.

    With ``mu_p, mu_o: (d,)`` the feature means, returns ``corr(mu_p, mu_o) ** 2`` in [0, 1].
    It is invariant to affine maps of either mean vector, so it measures whether the
    *pattern* of mean changes is right, not its size (see :func:`l2` for that).

    Notes
    -----
    This is the **squared** correlation. CellOT reports the unsquared Pearson r under the
    name ``r2``; square its numbers (or take the square root of ours) before comparing.
    When either mean vector is constant (including ``d == 1``) the correlation is undefined:
    the function logs a warning and returns ``nan`` rather than raising.
    """
    p, o = as_cell_pair(pred, obs)
    centred = []
    for mu in (p.mean(axis=0), o.mean(axis=0)):
        c = mu - mu.mean()
        # Below this norm the spread of the means is round-off of the centring, not signal.
        if np.linalg.norm(c) <= 16 * np.finfo(float).eps * np.sqrt(mu.size) * np.abs(mu).max():
            logger.warning(
                "r2 is undefined: the feature means of pred or obs are constant (%d features); returning nan.", mu.size
            )
            return float("nan")
        centred.append(c / np.linalg.norm(c))
    r = float(np.dot(centred[0], centred[1]))
    return min(1.0, r * r)


def l2(pred: Any, obs: Any) -> float:
    """Euclidean distance ``|mean(pred) - mean(obs)|`` between the feature means."""
    p, o = as_cell_pair(pred, obs)
    return float(np.linalg.norm(p.mean(axis=0) - o.mean(axis=0)))


def mmd(
    pred: Any,
    obs: Any,
    gammas: Iterable[float] | np.ndarray = DEFAULT_GAMMAS,
    max_points: int | None = None,
    seed: int = 0,
) -> float:
    """Squared maximum mean discrepancy with RBF kernels, averaged over bandwidths (CellOT's).

    With ``K_g(a, b) = exp(-g |a - b|^2)``, ``x = pred: (n, d)`` and ``y = obs: (m, d)``::

        MMD = mean_g [ mean_ij K_g(x_i, x_j) + mean_ij K_g(y_i, y_j) - 2 mean_ij K_g(x_i, y_j) ]

    This is the **biased** (V-statistic) estimate of MMD^2 -- the diagonal terms ``K(x_i, x_i)``
    are included -- exactly the quantity CellOT reports as "mmd". It is >= 0 (tiny negative
    round-off is clipped to 0) and equals 0 for identical samples.

    Parameters
    ----------
    pred, obs
        Predicted ``(n, d)`` and observed ``(m, d)`` cells.
    gammas
        RBF bandwidths; the default is CellOT's ``np.logspace(1, -3, 50)``.
    max_points
        If set, each sample is first reduced to at most this many cells by a seeded draw
        without replacement. ``None`` (default) uses every cell, as CellOT does.
    seed
        Seed of that draw.

    Notes
    -----
    Cost: each squared distance is computed once (not once per bandwidth) and the
    within-sample blocks use symmetry, so the work is about ``(n^2/2 + m^2/2 + n m)``
    distances plus that many exponentials per bandwidth; memory is bounded by blocks of
    :data:`CHUNK_ELEMENTS` entries.
    """
    g = _check_gammas(gammas)
    x, y = _subsample_pair(pred, obs, max_points, seed)
    reduce = _rbf_sums(g)
    n, m = x.shape[0], y.shape[0]
    xx = pair_sums(x, None, reduce, block_elements=CHUNK_ELEMENTS) / (n * n)
    yy = pair_sums(y, None, reduce, block_elements=CHUNK_ELEMENTS) / (m * m)
    xy = pair_sums(x, y, reduce, block_elements=CHUNK_ELEMENTS) / (n * m)
    return max(0.0, float(np.mean(xx + yy - 2.0 * xy)))


def energy_distance(pred: Any, obs: Any, max_points: int | None = None, seed: int = 0) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (V-statistic, not square-rooted).

    The expectations are plain means over all pairs, diagonal included, so the value is
    0 for identical samples and >= 0 otherwise (round-off clipped). It is the squared-MMD
    of the distance kernel, and it is what the solver uses to pick its step-size checkpoint:
    both call :func:`cellw1.ot.energy.energy_distance` (here in float64, by blocks of rows).

    Parameters
    ----------
    pred, obs
        Predicted ``(n, d)`` and observed ``(m, d)`` cells.
    max_points
        If set, a seeded subsample of at most this many cells per sample; ``None`` uses all.
    seed
        Seed of that draw.
    """
    x, y = _subsample_pair(pred, obs, max_points, seed)
    return max(0.0, ot_energy_distance(x, y, block_elements=CHUNK_ELEMENTS))


def wasserstein1(pred: Any, obs: Any, max_points: int | None = W1_MAX_POINTS, seed: int = 0) -> float:
    """Exact Wasserstein-1 distance with Euclidean cost between the two empirical measures.

    Solves the discrete OT problem ``min_P sum_ij P_ij |x_i - y_j|`` with uniform weights
    by POT's network simplex (``ot.emd2``). Exact OT costs about cubic time in the number of
    cells, so each sample is first reduced to at most ``max_points`` cells by a seeded draw
    without replacement (``None`` disables this; beware the cost).
    """
    import ot  # POT only when an exact W1 is asked for (see ot_step_targets)

    x, y = _subsample_pair(pred, obs, max_points, seed)
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    cost = cdist(x, y, "euclidean")
    value, log = ot.emd2(a, b, cost, numItermax=max(100_000, 50 * cost.size), log=True)
    if log.get("warning"):
        logger.warning("wasserstein1: the exact OT solver reports %r; the value may be inexact.", log["warning"])
    return float(value)


# -- registry ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """One evaluation metric: ``fn(pred, obs) -> float`` and how to read it."""

    name: str
    fn: Callable[[Any, Any], float]
    higher_is_better: bool
    description: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("r2", r2, True, "squared Pearson correlation of the feature means (CellOT's r2 is unsquared)"),
        Metric("l2", l2, False, "Euclidean distance between the feature means"),
        Metric("mmd", mmd, False, "biased MMD^2, RBF kernels averaged over gammas = logspace(1, -3, 50) (as CellOT)"),
        Metric("energy", energy_distance, False, "energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'|"),
        Metric("w1", wasserstein1, False, f"exact Wasserstein-1 (Euclidean cost) on <= {W1_MAX_POINTS} cells per side"),
    )
}


def compute_metrics(pred: Any, obs: Any, names: Iterable[str] | str | None = None) -> dict[str, float]:
    """Evaluate metrics from :data:`METRICS` on ``pred: (n, d)`` against ``obs: (m, d)``.

    Parameters
    ----------
    pred, obs
        Predicted and observed cells (numpy, scipy sparse or torch), same features.
    names
        Metric names (keys of :data:`METRICS`); ``None`` runs all of them in registry order.

    Returns
    -------
    dict
        ``{name: value}`` in the order asked.

    Raises
    ------
    InputError
        For an unknown metric name (the message lists the available ones) or bad data.
    """
    chosen = list(METRICS) if names is None else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in chosen if n not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {unknown}; available: {', '.join(METRICS)}.")
    p, o = as_cell_pair(pred, obs)
    return {name: METRICS[name].fn(p, o) for name in chosen}
