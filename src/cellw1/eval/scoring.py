"""Scoring one split: every method's prediction for the held-out controls against the held-out perturbed cells.

:class:`SplitScorer` is built once per split from its scoring model (the first method's: its
preprocessing gives the units) and scores each method's prediction, given on every feature:

- the metrics of :data:`cellw1.eval.metrics.METRICS` and ``control_shift`` on the scored
  features (the top DE genes of the training cells, or every obsm feature);
- :data:`SPLIT_METRICS`: Systema's PearsonDelta from the centroid of all perturbed cells on
  the scored features and on every feature, the centroid accuracy (:mod:`cellw1.eval.systema`;
  two or more perturbations), and the response-distribution metrics along the perturbation's
  training response axis (:mod:`cellw1.eval.response`). The axis is fitted on the top DE genes
  in **either** direction (every obsm feature): the scored genes are the up-regulated ones, as
  the paper's protocol ranks them, and a knock-out's response is mostly down-regulation, so an
  axis on them would miss most of the response it is meant to follow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..pp.labels import label_series
from .context import SplitContext
from .degenes import DeDirection, de_gene_rankings
from .metrics import Metric, compute_metrics
from .response import ResponseAxis, responder_share, response_distance
from .systema import centroid_accuracy, pearson_delta

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

#: Descriptive row, not a score: distance between the mean prediction and the mean test control cell
#: (scored features). Near 0 for a method that predicts no response; for a target with no
#: real effect a good method keeps it near the observed shift. Left out of the Wilcoxon tests.
CONTROL_SHIFT = "control_shift"
#: Descriptive row: the prediction's responder share (score above half the mean response).
RESPONDER_SHARE = "responder_share"


def _unused(pred: Any, obs: Any) -> float:  # the split metrics need a context; Metric.fn is not called
    raise NotImplementedError


#: metrics computed from a split's context, beside METRICS (name -> direction and description)
SPLIT_METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "pearson_delta_pert", _unused, True, "Pearson r of mean changes from the perturbed centroid, top DE genes"
        ),
        Metric(
            "pearson_delta_pert_all", _unused, True, "Pearson r of mean changes from the perturbed centroid, every gene"
        ),
        Metric("centroid_accuracy", _unused, True, "1 if the predicted centroid is nearest its own observed centroid"),
        Metric("response_w1", _unused, False, "1-D W1 of response scores (units of the mean response)"),
        Metric(
            "responder_share_error", _unused, False, "|predicted - observed share of cells above half the response|"
        ),
    )
}


@dataclass
class SplitScorer:
    """The observed side of one split, in the scoring model's units; :meth:`score` scores a prediction."""

    context: SplitContext
    model: Any
    columns: np.ndarray | None
    observed: np.ndarray  # held-out perturbed cells, every feature
    control: np.ndarray  # held-out control cells, every feature
    axis: ResponseAxis  # the training cells' response, on axis_columns
    axis_columns: np.ndarray | None  # the top DE genes in either direction; None: every feature

    def __post_init__(self) -> None:
        """Score the observed side once."""
        self.observed_scored = self.scored(self.observed)
        self.control_scored = self.scored(self.control)
        self.observed_scores = self.axis_scores(self.observed) if self.axis.length > 0 else None
        several = len(self.context.perturbations) > 1
        self.centroid = self.context.perturbed_centroid(self.model) if several else None
        self.centroids = (
            np.stack([self.context.test_mean(self.model, q) for q in self.context.perturbations]) if several else None
        )

    def scored(self, values: np.ndarray) -> np.ndarray:
        """``values`` on the scored features, float64."""
        values = np.asarray(values, dtype=np.float64)
        return values if self.columns is None else values[:, self.columns]

    def axis_scores(self, values: np.ndarray) -> np.ndarray:
        """Response score of each cell of ``values`` ``(n, every feature)`` along the response axis."""
        values = np.asarray(values, dtype=np.float64)
        return self.axis.scores(values if self.axis_columns is None else values[:, self.axis_columns])

    def score(self, predicted: np.ndarray, metrics: Sequence[str] | None) -> dict[str, float]:
        """Every metric asked for (``None``: all) of ``predicted`` ``(n, every feature)``."""
        pred = self.scored(predicted)
        chosen = [m for m in metrics if m not in SPLIT_METRICS] if metrics is not None else None
        scores = compute_metrics(pred, self.observed_scored, chosen)
        scores[CONTROL_SHIFT] = float(np.linalg.norm(pred.mean(0) - self.control_scored.mean(0)))
        wanted = set(SPLIT_METRICS if metrics is None else metrics)
        if self.centroid is not None and self.centroids is not None:
            scored_centroid = self.centroid if self.columns is None else self.centroid[self.columns]
            if "pearson_delta_pert" in wanted:
                scores["pearson_delta_pert"] = pearson_delta(pred, self.observed_scored, scored_centroid)
            if "pearson_delta_pert_all" in wanted:
                scores["pearson_delta_pert_all"] = pearson_delta(predicted, self.observed, self.centroid)
            if "centroid_accuracy" in wanted:
                own = self.context.perturbations.index(self.context.perturbation)
                scores["centroid_accuracy"] = centroid_accuracy(predicted, self.centroids, own)
        if self.observed_scores is not None and wanted & {"response_w1", "responder_share_error"}:
            pred_scores = self.axis_scores(predicted)
            share = responder_share(pred_scores)
            if "response_w1" in wanted:
                scores["response_w1"] = response_distance(pred_scores, self.observed_scores)
            if "responder_share_error" in wanted:
                scores["responder_share_error"] = abs(share - responder_share(self.observed_scores))
            scores[RESPONDER_SHARE] = share
        return scores


def split_scorer(
    context: SplitContext,
    model: Any,
    train: ad.AnnData,
    test_control: ad.AnnData,
    test_perturbed: ad.AnnData,
    condition_key: str,
    control: str,
    n_de_genes: int,
    de_direction: DeDirection = "up",
) -> SplitScorer:
    """Build the split's observed side, in ``model``'s units, scored on the top DE genes of the training cells.

    Every method fits the same preprocessing on the same training cells, so one DE-gene
    selection (training cells only, ranked ``de_direction``) and one preprocessing of the test
    cells serve all methods; the response axis is fitted on the top DE genes in either direction.
    """
    is_control = (label_series(train.obs[condition_key], key=condition_key, warn=False) == control).to_numpy()
    train_values = np.asarray(model.preprocess(train), dtype=np.float64)
    columns = axis_columns = None
    if model.obsm_key is None:
        control, perturbed, features = train_values[is_control], train_values[~is_control], model.features
        ranked = de_gene_rankings(control, perturbed, features, n_de_genes, directions=(de_direction, "either"))
        genes = ranked[de_direction]
        columns = pd.Index(features).get_indexer(genes)
        axis_columns = pd.Index(features).get_indexer(ranked["either"])
        logger.debug(
            "%s r%d: scoring on %d DE genes (first: %s)", context.perturbation, context.repeat, len(genes), genes[:5]
        )
    on_axis = train_values if axis_columns is None else train_values[:, axis_columns]
    return SplitScorer(
        context,
        model,
        columns,
        np.asarray(model.preprocess(test_perturbed), dtype=np.float64),
        np.asarray(model.preprocess(test_control), dtype=np.float64),
        ResponseAxis.fit(on_axis[is_control], on_axis[~is_control]),
        axis_columns,
    )


def in_units_of(predicted: np.ndarray, model: Any, scoring: Any) -> np.ndarray:
    """Convert ``predicted`` log1p expression of ``model`` to the normalisation of ``scoring``.

    Both are fitted models with a ``preprocessor``. For counts both normalise to a median
    library size, of different cells; the conversion is exact,
    ``log1p(expm1(p) * s_scoring / s_model)``, so every method is scored in one unit.
    """
    own, other = model.preprocessor, scoring.preprocessor
    if own is None or other is None or own.target_sum is None or other.target_sum is None:
        return predicted
    ratio = other.target_sum / own.target_sum
    return predicted if ratio == 1.0 else np.log1p(np.expm1(predicted) * ratio)
