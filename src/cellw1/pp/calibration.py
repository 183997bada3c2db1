"""Calibrated expression output: non-negative log1p values, real zeros, unbiased gene means.

A transport map moves cells continuously, so a gene that is 0 in most cells comes out as small
positive and negative values. Expression cannot be negative, and a measured 0 is an event of
its own (no molecule captured): differential expression tests (``cell-eval``, scanpy's
Wilcoxon) read such values as a response of the gene.

cellw1 keeps the map as it is (:class:`~cellw1.ot.transport.TransportMap` returns raw values in
any space) and calibrates where log-normalised expression is written out, gene by gene:

1. **Zeros.** Predicted values at or below a threshold ``t_g`` become 0; ``t_g`` is the
   quantile of the predicted training controls at the share of zeros of gene ``g`` among the
   training perturbed cells. The lowest predictions become the zeros (the order of cells
   along a gene is kept); values below 0 become 0 in any case.
2. **Means.** Making zeros moves a gene's mean, and a map fitted to whole cells leaves a small
   bias in each gene's mean. One offset per gene, added to the values left above 0, moves the
   predicted training controls' mean towards the training perturbed cells' mean, by the part
   of the gap the cells resolve: the gap is shrunk by ``max(0, 1 - se^2 / gap^2)``, with
   ``se`` the standard error of the difference (positive-part James-Stein), so a gene whose
   gap is sampling noise keeps about the map's mean. Closing the gap of a gene whose values
   are mostly 0 takes ``gap * n / kept`` on the ``kept`` values left: the bias the map leaves
   on cells predicted in that range of values.
3. **Ties.** An offset must not lift the mean of a gene's values left above 0 beyond the
   largest value of that gene among the training perturbed cells (a bound a shift of the
   whole distribution never meets). It would where the predicted controls are tied at the
   threshold (a mean shift moves every control cell with 0 counts to one value): step 1 then
   zeroes the whole tie, few cells keep a value, and the mean would need log1p values in the
   hundreds on them. For such a gene the threshold moves just below the
   tie, so the tied cells keep their value and the offset closes the gap on all of them; the
   gene then has fewer zeros than the perturbed cells (ties cannot be split by a value). The
   offset stays within the bound in any case.

4. **Beyond the training range.** That bias was measured on the range of values the training
   controls were predicted at, and nothing says it holds beyond. A value above the largest
   training prediction of its gene (cells unlike the training controls: a held-out cell type
   that expresses a gene the training cells mostly do not) gets at most the resolved gap
   itself, so such cells move a gene's mean by at most the training gap, not by the amplified
   offset that closed it on the few training values above 0.

Thresholds and offsets are values fitted on training cells, not shares applied to new ones:
cells unlike the training controls (a held-out cell type) get the zeros their own predicted
values call for. Genes constant in training keep their value (threshold and offset are void).
"""

from __future__ import annotations

import numpy as np

#: cells of each group the calibration is fitted on
SAMPLE_CELLS = 5_000
#: relative rounding of a float32 prediction made again (another chunk size sums a matrix product
#: in another order): a cutoff sits this far above the training prediction it is taken from, so
#: that prediction, made again, falls on the same side
ROUNDING = 1e-5


def _above(value: np.ndarray, following: np.ndarray | float) -> np.ndarray:
    """A cutoff just above ``value``: by its rounding margin, at most halfway to the ``following`` prediction."""
    value = np.asarray(value, dtype=np.float32)
    margin = ROUNDING * np.maximum(1.0, np.abs(value))
    return np.minimum(value + margin, value / 2 + np.asarray(following, dtype=np.float32) / 2).astype(np.float32)


def _resolved(gap: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Share of each gene's gap the cells resolve: ``max(0, 1 - se^2 / gap^2)`` (positive-part James-Stein)."""
    return np.clip(1.0 - noise / np.maximum(gap**2, 1e-30), 0.0, 1.0)


def calibration_target(control: np.ndarray, perturbed: np.ndarray, share: float, moves: bool, seed: int) -> np.ndarray:
    """The cells a method's predicted controls are calibrated against.

    The perturbed cells; the controls for a method without a response; for a W1 map that
    applies a share ``s < 1`` of its response (:mod:`cellw1.ot.effect`), a seeded mixture of
    ``len(perturbed)`` cells, ``s`` of them perturbed and the rest controls, whose zero shares
    and gene means lie ``s`` of the way from the controls' to the perturbed cells'.
    """
    if not moves:
        return control
    if share >= 1.0:
        return perturbed
    rng = np.random.default_rng(seed)
    n = len(perturbed)
    k = int(round(max(share, 0.0) * n))
    chosen = np.sort(rng.choice(n, size=k, replace=False))
    others = np.sort(rng.choice(len(control), size=n - k, replace=len(control) < n - k))
    return np.concatenate((perturbed[chosen], control[others]))


def fit_calibration(predicted: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Per-gene zero thresholds and offsets that make ``predicted`` look like ``perturbed``.

    Parameters
    ----------
    predicted
        Raw predicted log expression of training control cells, ``(n, genes)``.
    perturbed
        Log expression of training perturbed cells, ``(m, genes)``.

    Returns
    -------
    numpy.ndarray
        ``(4, genes)`` float32: the thresholds (``-inf`` for genes never 0 among the perturbed
        cells), the offsets added to the values left above 0, the resolved gaps (the most an
        offset adds beyond the training range) and the largest training predictions (that range).
    """
    perturbed = np.asarray(perturbed, dtype=np.float64)
    ordered = np.sort(np.asarray(predicted, dtype=np.float32), axis=0)
    n = len(ordered)
    # the k smallest of n predictions become 0, with k / n the perturbed cells' share of zeros
    k = np.rint((perturbed <= 0).mean(axis=0) * n).astype(np.int64)
    thresholds = np.full(ordered.shape[1], -np.inf, dtype=np.float32)
    some = k > 0
    columns = np.flatnonzero(some)
    following = np.where(k[some] < n, ordered[np.minimum(k[some], n - 1), columns], np.inf)
    thresholds[some] = _above(ordered[k[some] - 1, columns], following)
    needed, room, closed = _offsets(ordered, thresholds, perturbed)
    tied = np.flatnonzero(needed > room)  # step 3: the mean cannot be met within the data's range
    for g in tied:  # keep the tied predictions instead: zero only those strictly below the tie
        tie = ordered[:, g][ordered[:, g] <= thresholds[g]][-1]
        below = ordered[:, g][ordered[:, g] < tie]
        thresholds[g] = _above(below[-1], tie) if below.size else -np.inf
    if tied.size:
        needed[tied], room[tied], closed[tied] = _offsets(ordered[:, tied], thresholds[tied], perturbed[:, tied])
    offsets = np.minimum(needed, room)
    return np.stack((thresholds, offsets, closed, _above(ordered[-1], np.inf))).astype(np.float32)


def _offsets(
    ordered: np.ndarray, thresholds: np.ndarray, perturbed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets after zeroing at ``thresholds``, each ``(genes,)``.

    The offset on the values left above 0 that would close the resolved gap of the mean, step 3's
    room for it, and the resolved gap itself.
    """
    n, m = len(ordered), max(len(perturbed), 1)
    made = calibrate(ordered, np.stack((thresholds, np.zeros_like(thresholds))))
    kept = (made > 0).sum(axis=0)
    gap = perturbed.mean(axis=0) - made.mean(axis=0, dtype=np.float64)
    noise = perturbed.var(axis=0) / m + made.var(axis=0, dtype=np.float64) / n
    closed = np.where(kept > 0, _resolved(gap, noise) * gap, 0.0)
    kept_mean = np.where(kept > 0, made.sum(axis=0, dtype=np.float64) / np.maximum(kept, 1), 0.0)
    return closed * n / np.maximum(kept, 1), np.maximum(perturbed.max(axis=0, initial=0.0) - kept_mean, 0.0), closed


def calibrate(predicted: np.ndarray, calibration: np.ndarray | None) -> np.ndarray:
    """Non-negative expression: zeros at or below each gene's threshold, offsets on the rest.

    ``calibration`` is :func:`fit_calibration`'s output (models saved before step 4 hold its first
    two rows only, and keep their offsets everywhere); ``None`` only clips at 0.
    """
    out = np.maximum(predicted, 0.0)
    if calibration is not None:
        thresholds, offsets = calibration[0], calibration[1]
        zero = (predicted <= thresholds) | (out <= 0)
        if len(calibration) > 2:  # step 4: beyond the training range, at most the resolved gap
            gaps, highest = np.abs(calibration[2]), calibration[3]
            offsets = np.where(predicted > highest, np.clip(offsets, -gaps, gaps), offsets)
        out = np.maximum(out + offsets, 0.0)
        out[zero] = 0.0
    return out
