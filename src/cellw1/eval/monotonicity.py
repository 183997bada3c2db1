"""Measures of how a transport map behaves on the toy problems (Chen et al., Fig. 2).

W1 optimal maps are not unique: along each transport ray any order-reversing rearrangement
has the same cost. The *monotone* map keeps the order of points along each ray. These pure
functions measure that (:func:`bookshelf_spearman`, :func:`label_preservation`) and how
well the transported cloud matches the target (:func:`cellw1.eval.metrics.energy_distance`, :func:`exact_w1`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

from ..checks import as_array
from ..errors import InputError
from . import metrics

if TYPE_CHECKING:
    from ..datasets.toys import Toy


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise InputError(
            f"{names} must have the same shape, got {a.shape} and {b.shape}; pass transported = T(source)."
        )


def bookshelf_spearman(source: Any, transported: Any) -> float:
    """Spearman rank correlation of the x coordinates before and after transport.

    Parameters
    ----------
    source, transported
        ``(n, d)`` points and their images ``T(source)``, row for row.

    Returns
    -------
    float
        ``+1`` when the order along x is kept (the monotone map), ``-1`` when reversed.
    """
    src, moved = as_array(source, "source"), as_array(transported, "transported")
    _same_shape(src, moved, "source and transported")
    return float(spearmanr(src[:, 0], moved[:, 0]).statistic)


def label_preservation(
    source_labels: Any,
    transported: Any,
    target: Any,
    target_labels: Any,
    label: int | None = None,
) -> float:
    """Share of points whose image lands nearest a target point of their own label.

    Parameters
    ----------
    source_labels
        ``(n,)`` label of each source point.
    transported
        ``(n, d)`` images ``T(source)``.
    target, target_labels
        ``(m, d)`` target points and their ``(m,)`` labels.
    label
        Only count source points with this label (``None``: all of them).

    Returns
    -------
    float
        In ``[0, 1]``; for circles with ``label=0`` the inner -> inner fraction.
    """
    moved, tgt = as_array(transported, "transported"), as_array(target, "target")
    src_lab, tgt_lab = np.asarray(source_labels).ravel(), np.asarray(target_labels).ravel()
    if len(src_lab) != len(moved):
        raise InputError(f"source_labels has {len(src_lab)} entries but transported has {len(moved)} rows.")
    if len(tgt_lab) != len(tgt):
        raise InputError(f"target_labels has {len(tgt_lab)} entries but target has {len(tgt)} rows.")
    if moved.shape[1] != tgt.shape[1]:
        raise InputError(f"transported has {moved.shape[1]} features but target has {tgt.shape[1]}.")
    keep = np.ones(len(src_lab), dtype=bool) if label is None else src_lab == label
    if not keep.any():
        raise InputError(f"no source point has label {label!r}; labels present: {sorted(set(src_lab.tolist()))}.")
    _, nearest = cKDTree(tgt).query(moved[keep])
    return float(np.mean(tgt_lab[nearest] == src_lab[keep]))


def circles_inner_to_inner(toy: Toy, transported: Any) -> float:
    """Fraction of inner source points (label 0) transported onto the inner target circle."""
    if toy.source_labels is None or toy.target_labels is None:
        raise InputError(f"toy {toy.name!r} has no labels; inner -> inner is defined for the circles toy.")
    return label_preservation(toy.source_labels, transported, toy.target, toy.target_labels, label=0)


def exact_w1(x: Any, y: Any, max_points: int = 1000, seed: int = 0) -> float:
    """Exact W1 (POT ``emd2``) of :func:`cellw1.eval.metrics.wasserstein1`, on at most ``max_points`` per side.

    Subsampling (exact OT costs ``O(n^3)``) biases the value slightly upwards.
    """
    return metrics.wasserstein1(x, y, max_points=max_points, seed=seed)


def toy_scores(toy: Toy, transported: Any, *, seed: int = 0) -> dict[str, float]:
    """The figures the demo reports for one toy, given ``transported = T(toy.source)``.

    Returns
    -------
    dict
        ``exact_w1`` (source vs target), ``energy_distance`` (transported vs target), and
        ``spearman`` for the bookshelf or ``inner_to_inner`` for the circles.
    """
    scores = {
        "exact_w1": exact_w1(toy.source, toy.target, seed=seed),
        "energy_distance": metrics.energy_distance(transported, toy.target, max_points=2000, seed=seed),
    }
    if toy.name == "bookshelf":
        scores["spearman"] = bookshelf_spearman(toy.source, transported)
    if toy.name == "circles":
        scores["inner_to_inner"] = circles_inner_to_inner(toy, transported)
    return scores
