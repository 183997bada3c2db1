"""Baselines that need the other perturbations of a split: plug-ins of :func:`cellw1.evaluate`.

Each is a :class:`~cellw1.eval.plugin.SplitMethod`, registered in :mod:`cellw1.eval.registry`
like every other method.

The per-perturbation methods (identity, observed, mean shift, W2, W1, scGen) are fitted with
:func:`cellw1.fit` on one perturbation's training cells. The baselines here also read the
other perturbations' training cells of the same split index, through the split's
:class:`~cellw1.eval.context.SplitContext`; they are not models one can fit and save, so they
live in the evaluation, not in :mod:`cellw1.tl.methods`. Each predicts, for the held-out
control cells ``x`` (in the split's log-normalised expression, every gene), with ``mu_c`` the
mean of the split's training controls:

=========== ==================================================================================
name        what it predicts
=========== ==================================================================================
global_mean ``x + (mu_all - mu_c)``: every control cell moved to the mean of **all** training
            perturbed cells of the split (every evaluated perturbation's, pooled over cells),
            so its predicted mean is that mean, the baseline of cell-eval and of Ahlmann-Eltze
            et al. 2025 (they predict the mean itself for every cell; moving the control cells
            keeps their spread, so the distribution metrics do not punish a point mass). Needs
            two or more perturbations.
additive    for a combination ``"A+B"``: ``x + (mu_A - mu_c) + (mu_B - mu_c)``, each member's
            training shift (its training split when evaluated, else all its cells); skipped,
            with a logged note, where a member has no cells or the label is not a combination
nearest     the reference method's map (``w1``) fitted on the nearest other perturbation: the one
            whose training mean is nearest (Euclidean, every gene) to this one's, same split
            index. Its input cells may have been training controls of that neighbour's split
            (an input, never a truth). Needs two or more perturbations and the reference method.
=========== ==================================================================================

Expression predictions are clipped at 0 (log expression is never negative); they are not
calibrated (:mod:`cellw1.pp.calibration`), unlike the fitted methods' predictions.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..tl.conditional import COMBINATION, member_labels
from .context import SplitContext
from .plan import NEAREST_MAP
from .plugin import Prediction, SplitMethod, SplitRun
from .scoring import in_units_of

logger = logging.getLogger(__name__)

#: methods that are baselines (the reference is compared with the best of them); ``observed`` is a ceiling
BASELINES: tuple[str, ...] = ("identity", "mean_shift", "global_mean", "additive", "nearest")


def _moved(model: Any, cells: np.ndarray, shift: np.ndarray) -> np.ndarray:
    out = np.asarray(cells, dtype=np.float64) + shift
    return np.maximum(out, 0.0) if model.preprocessor is not None else out


class GlobalMeanBaseline(SplitMethod):
    """``global_mean``: the controls moved to the mean of every evaluated perturbation's training cells."""

    stage = "context"

    def predict(self, split: SplitRun) -> Prediction | None:
        """Move the held-out controls by the pooled training shift; ``None`` with one perturbation."""
        context, scorer = split.context, split.units()
        if len(context.perturbations) < 2:
            logger.info("global_mean needs two or more evaluated perturbations; skipped for %r.", context.perturbation)
            return None
        shift = context.perturbed_centroid(scorer.model) - context.control_mean(scorer.model)
        return split.follow_gate(_moved(scorer.model, scorer.control, shift))


class AdditiveBaseline(SplitMethod):
    """``additive``: for a combination ``"A+B"``, the controls moved by the sum of its members' shifts."""

    stage = "context"

    def predict(self, split: SplitRun) -> Prediction | None:
        """Add the members' training shifts; ``None`` for a label that is not a combination or lacks a member."""
        context, scorer = split.context, split.units()
        p = context.perturbation
        members = member_labels(p)
        if COMBINATION not in p or len(members) < 2:
            return None  # not a combination: nothing to add (noted once by the evaluation)
        absent = [m for m in members if m == p or not context.has_label(m)]
        if absent:
            logger.info("additive: %r skipped, its member(s) %s have no cells of their own.", p, absent)
            return None
        mu_c = context.control_mean(scorer.model)
        shift = sum(context.train_mean(scorer.model, m) - mu_c for m in members)
        return split.follow_gate(_moved(scorer.model, scorer.control, shift))


class NearestBaseline(SplitMethod):
    """``nearest``: the NEAREST_MAP model of the nearest other perturbation (same split index) predicts."""

    stage = "neighbours"  # once every perturbation of the split index has fitted its map

    def predict(self, split: SplitRun) -> Prediction | None:
        """Predict with the neighbour's map; ``None`` with one perturbation or without the map."""
        if split.scorer is None or len(split.siblings) < 2:
            return None
        scorer = split.scorer
        neighbour = nearest_perturbation(split.context, scorer.model)
        borrowed = None if neighbour is None else split.siblings[neighbour].models.get(NEAREST_MAP)
        if borrowed is None:
            return None
        context = split.context
        logger.info("%s r%d nearest: %s's %s map", context.perturbation, context.repeat, neighbour, NEAREST_MAP)
        if split.gated:  # the perturbation's own test found no response: its controls, as for every method
            return split.follow_gate(scorer.control)
        rows = split.context.rows.test_control
        test_control = split.context.adata[rows].copy()
        values = np.asarray(borrowed.predict(test_control).X, dtype=np.float64)
        # borrowed: its fit is counted once, under the neighbour's own method
        return split.follow_gate(in_units_of(values, borrowed, scorer.model))


def nearest_perturbation(context: SplitContext, model: Any) -> str | None:
    """Return the other evaluated perturbation whose training mean is nearest to this one's; None with one."""
    others = [q for q in context.perturbations if q != context.perturbation]
    if not others:
        return None
    own = context.train_mean(model, context.perturbation)
    distances = [float(np.linalg.norm(context.train_mean(model, q) - own)) for q in others]
    return others[int(np.argmin(distances))]
