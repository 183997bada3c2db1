"""One split of :func:`cellw1.evaluate`: fit every method on its training cells, score its held-out cells.

Every fitted method (:func:`cellw1.fit`) predicts the held-out control cells; the context
baselines (:mod:`cellw1.eval.baselines`) predict them from the split's context; each
prediction is scored by the split's :class:`~cellw1.eval.scoring.SplitScorer`, in the units of
the split's first model. ``nearest`` is scored in a second pass over a split index, once every
perturbation's reference map is fitted (:func:`nearest_rows`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..pp.labels import label_series
from ..tl.methods import GATED as GATED_METHODS
from .baselines import CONTEXT_BASELINES, nearest_perturbation, predict_baseline
from .celleval import cell_eval_scores
from .conditional import CONDITIONAL, in_units_of
from .context import SplitContext
from .degenes import top_de_genes
from .result import GATED, SECONDS, EmbeddingSnapshot
from .scoring import SplitScorer

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

#: the method whose map ``nearest`` borrows from the nearest other perturbation
NEAREST_MAP = "w1"

Row = tuple[str, str, int, str, float]


@dataclass
class SplitState:
    """What the second pass of a split index (``nearest``) needs of one split."""

    context: SplitContext
    scorer: SplitScorer | None
    model: Any  # the NEAREST_MAP method's fitted model (or None)
    gated: bool | None = None  # the split's test for a response found none (None: no method that moves was fitted)


def nearest_rows(
    states: dict[str, SplitState], metrics: Sequence[str] | None, snapshot: EmbeddingSnapshot | None
) -> list[Row]:
    """``nearest``: each perturbation predicted by the NEAREST_MAP model of its nearest neighbour (same split index)."""
    rows: list[Row] = []
    for perturbation, state in states.items():
        if state.scorer is None or len(states) < 2:
            continue
        neighbour = nearest_perturbation(state.context, state.scorer.model)
        borrowed = None if neighbour is None else states[neighbour].model
        if borrowed is None:
            continue
        if state.gated:  # the perturbation's own test found no response: its controls, as for every method
            predicted = state.scorer.control
        else:
            test_control = state.context.adata[state.context.rows.test_control].copy()
            predicted = in_units_of(
                np.asarray(borrowed.predict(test_control).X, dtype=np.float64), borrowed, state.scorer.model
            )
        scores = state.scorer.score(predicted, metrics)
        scores[SECONDS] = 0.0  # borrowed: its fit is counted once, under the neighbour's own method
        if state.gated is not None:
            scores[GATED] = float(state.gated)
        repeat = state.context.repeat
        rows.extend(("nearest", perturbation, repeat, name, float(value)) for name, value in scores.items())
        logger.info("%s r%d nearest (%s's %s map): %s", perturbation, repeat, neighbour, NEAREST_MAP, _brief(scores))
        if snapshot is not None and repeat == 0 and snapshot.perturbation == perturbation:
            snapshot.predicted["nearest"] = state.scorer.scored(predicted)
    return rows


def _brief(scores: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in scores.items() if not math.isnan(v))


def evaluate_split(
    fit: Any,
    context: SplitContext,
    *,
    condition_key: str,
    control: str,
    methods: list[str],
    configs: dict[str, Any],
    space: str,
    layer: str | None,
    obsm_key: str | None,
    embedding_config: Any,
    input_kind: str,
    effect_alpha: float | None,
    n_de_genes: int,
    metrics: Sequence[str] | None,
    fit_seed: int,
    keep_cells: bool,
    suite: str = "cellw1",
    external: Mapping[str, Callable[[Any, Any, str], Any]] | None = None,
) -> tuple[list[Row], EmbeddingSnapshot | None, SplitState]:
    """Fit and score every method on one split; optionally keep the cells for a figure.

    Every method that moves cells follows the split's one test for a response (``effect_alpha``,
    made by :func:`cellw1.fit` on the training cells): the fitted ones through their fit, the
    context baselines through the decision of the fitted ones (a ``gated`` row says which).
    """
    adata, split, perturbation, repeat = context.adata, context.rows, context.perturbation, context.repeat
    # Copies, so nothing downstream can touch the user's AnnData (views write through on some versions).
    train = adata[split.train].copy()
    test_control = adata[split.test_control].copy()
    test_perturbed = adata[split.test_perturbed].copy()
    rows: list[Row] = []
    snapshot: EmbeddingSnapshot | None = None
    shared = None  # every method of a split works in one latent space, fitted once (paper protocol)
    scorer: SplitScorer | None = None  # the observed side, in the units of the first model's preprocessing
    predictions: dict[str, np.ndarray] = {}
    state = SplitState(context, None, None)
    fitted = [m for m in methods if m not in CONTEXT_BASELINES]
    for method in fitted or ["identity"]:  # context baselines alone: identity only sets the units
        start = time.perf_counter()
        model = fit(
            train,
            condition_key,
            control,
            perturbation,
            layer=layer,
            obsm_key=obsm_key,
            space=space,
            method=method,
            config=configs.get(method),
            embedding_config=embedding_config,
            embedding=shared,
            input_kind=input_kind,
            effect_alpha=effect_alpha,
            seed=fit_seed,
            progress=False,
        )
        # the method's own fit time: preprocessing and the shared embedding are not counted
        seconds = float(model.method.info.get("fit_seconds", time.perf_counter() - start))
        if method != CONDITIONAL:  # its embedding is its own, fitted on every perturbation's cells
            shared = model.embedding
        if method == NEAREST_MAP:
            state.model = model
        if scorer is None:
            scorer = state.scorer = _scorer(
                context, model, train, test_control, test_perturbed, condition_key, control, n_de_genes
            )
        if method not in fitted:
            break
        gated = None
        if method in GATED_METHODS or method == CONDITIONAL:
            gated = not model.method.has_response
            state.gated = gated if state.gated is None else state.gated or gated
        predicted = in_units_of(np.asarray(model.predict(test_control).X, dtype=np.float64), model, scorer.model)
        rows.extend(_scored_rows(method, context, scorer, predicted, metrics, seconds, gated))
        predictions[method] = predicted.astype(np.float32)
    assert scorer is not None
    for name, tool in (external or {}).items():  # another tool's prediction of the same split
        start = time.perf_counter()
        predicted = external_prediction(
            name, tool(train.copy(), test_control.copy(), perturbation), scorer.model, test_control
        )
        rows.extend(_scored_rows(name, context, scorer, predicted, metrics, time.perf_counter() - start))
        predictions[name] = predicted.astype(np.float32)
    for method in (m for m in methods if m in CONTEXT_BASELINES and m != "nearest"):
        predicted = predict_baseline(method, context, scorer.model, scorer.control)
        if predicted is not None:
            if state.gated:  # no response detected for the perturbation: its controls, as for every method
                predicted = scorer.control
            rows.extend(_scored_rows(method, context, scorer, predicted, metrics, 0.0, state.gated))
            predictions[method] = predicted.astype(np.float32)
    if keep_cells:
        snapshot = EmbeddingSnapshot(perturbation, scorer.control_scored, scorer.observed_scored)
        snapshot.predicted.update({m: scorer.scored(p) for m, p in predictions.items()})
    if suite == "cell-eval" and predictions:  # every gene, as predicted
        start = time.perf_counter()
        by_method = cell_eval_scores(
            predictions, scorer.control, scorer.observed, scorer.model.features, perturbation, control
        )
        rows.extend(
            (m, perturbation, repeat, name, value) for m, scores in by_method.items() for name, value in scores.items()
        )
        logger.info("%s r%d: cell-eval took %.1f s", perturbation, repeat, time.perf_counter() - start)
    return rows, snapshot, state


def _scorer(
    context: SplitContext,
    model: Any,
    train: ad.AnnData,
    test_control: ad.AnnData,
    test_perturbed: ad.AnnData,
    condition_key: str,
    control: str,
    n_de_genes: int,
) -> SplitScorer:
    """The split's observed side, in ``model``'s units, scored on the top DE genes of the training cells.

    Every method fits the same preprocessing on the same training cells, so one DE-gene
    selection (training cells only) and one preprocessing of the test cells serve all methods.
    """
    is_control = (label_series(train.obs[condition_key], key=condition_key, warn=False) == control).to_numpy()
    train_values = np.asarray(model.preprocess(train), dtype=np.float64)
    columns = None
    if model.obsm_key is None:
        genes = top_de_genes(train_values[is_control], train_values[~is_control], model.features, n_de_genes)
        columns = pd.Index(model.features).get_indexer(genes)
        logger.debug(
            "%s r%d: scoring on %d DE genes (first: %s)", context.perturbation, context.repeat, len(genes), genes[:5]
        )
    train_scored = train_values if columns is None else train_values[:, columns]
    return SplitScorer(
        context,
        model,
        columns,
        np.asarray(model.preprocess(test_perturbed), dtype=np.float64),
        np.asarray(model.preprocess(test_control), dtype=np.float64),
        train_scored[is_control],
        train_scored[~is_control],
    )


def _scored_rows(
    method: str,
    context: SplitContext,
    scorer: SplitScorer,
    predicted: np.ndarray,
    metrics: Sequence[str] | None,
    seconds: float,
    gated: bool | None = None,
) -> list[Row]:
    scores = scorer.score(predicted, metrics)
    scores[SECONDS] = seconds
    if gated is not None:
        scores[GATED] = float(gated)
    logger.info("%s r%d %s: %s", context.perturbation, context.repeat, method, _brief(scores))
    return [(method, context.perturbation, context.repeat, name, float(value)) for name, value in scores.items()]


def external_prediction(name: str, output: Any, model: Any, test_control: ad.AnnData) -> np.ndarray:
    """Another tool's predicted cells in ``model``'s units: an AnnData or an array like the input data.

    An array has the test controls' rows and the input's genes (or, with ``obsm_key``, its
    features); either is read by ``model.preprocess``, as the input data would be (counts are
    normalised, log-normalised values kept).
    """
    import anndata as ad

    if not isinstance(output, ad.AnnData):
        values = np.asarray(output.toarray() if hasattr(output, "toarray") else output, dtype=np.float32)
        width = len(model.features)
        if values.ndim != 2 or values.shape != (test_control.n_obs, width):
            raise InputError(
                f"external method {name!r} returned shape {values.shape}; expected ({test_control.n_obs}, {width}): "
                "one row per test control cell, one column per gene of the input (or feature of obsm_key)."
            )
        if model.obsm_key is None:
            output = ad.AnnData(X=values, obs=test_control.obs[[]].copy(), var=test_control.var[[]].copy())
        else:
            output = ad.AnnData(X=np.zeros((values.shape[0], 1), dtype=np.float32), obs=test_control.obs[[]].copy())
            output.obsm[model.obsm_key] = values
    if output.n_obs != test_control.n_obs:
        raise InputError(
            f"external method {name!r} predicted {output.n_obs} cells for {test_control.n_obs} test controls."
        )
    return np.asarray(model.preprocess(output), dtype=np.float64)
