"""The run of :func:`cellw1.evaluate`: every split of the plan, every method, every prediction scored.

For each split index ``r`` the rows of every perturbation are split (:mod:`cellw1.eval.context`)
and each method prepares the index (:meth:`~cellw1.eval.plugin.SplitMethod.start_repeat`).
Then, perturbation by perturbation, the methods predict the split's held-out controls stage by
stage (:data:`~cellw1.eval.plugin.STAGES`), each prediction scored by the split's
:class:`~cellw1.eval.scoring.SplitScorer` in the units of its first fitted model. The
``neighbours`` stage (``nearest``) runs once every perturbation of ``r`` is done.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from .celleval import cell_eval_scores
from .context import SplitContext, split_rows
from .fitted import FittedMethod
from .plan import EvaluationPlan
from .plugin import STAGES, Prediction, SplitCells, SplitMethod, SplitRun
from .result import GATED, SECONDS, EmbeddingSnapshot

logger = logging.getLogger(__name__)

#: one row of the result's table: method, perturbation, split index, metric, value
Row = tuple[str, str, int, str, float]


def run_evaluation(
    plan: EvaluationPlan, methods: Sequence[SplitMethod], *, progress: bool = True
) -> tuple[list[Row], EmbeddingSnapshot | None]:
    """Run every split of ``plan`` with ``methods``; return the table's rows and the kept cells (if any)."""
    rows: list[Row] = []
    snapshot: EmbeddingSnapshot | None = None
    bar = tqdm(total=len(plan.perturbations) * plan.n_splits, desc="evaluate", disable=not progress)
    try:
        for repeat in range(plan.n_splits):
            splits = split_rows(
                plan.labels,
                plan.control,
                plan.perturbations,
                plan.held_out,
                plan.seed,
                repeat,
                shared_control=plan.shared_control,
            )
            for method in methods:
                method.start_repeat(repeat, splits)
            runs: dict[str, SplitRun] = {}
            for perturbation in plan.perturbations:
                bar.set_postfix_str(f"{perturbation} r{repeat}")
                context = SplitContext(plan.adata, plan.labels, perturbation, repeat, splits)
                run = runs[perturbation] = SplitRun(
                    plan, context, SplitCells.of(plan.adata, context.rows), siblings=runs
                )
                rows.extend(_run_split(run, methods))
                if snapshot is None and repeat == 0 and perturbation == plan.plot_perturbation:
                    snapshot = _snapshot(run)
                rows.extend(_cell_eval_rows(run))
                run.cells = None  # the neighbours stage reads only the context
                bar.update(1)
            for run in runs.values():
                rows.extend(_run_neighbours(run, methods, snapshot))
    finally:
        bar.close()
    return rows, snapshot


def _run_split(run: SplitRun, methods: Sequence[SplitMethod]) -> list[Row]:
    """Every method but the neighbours stage predicts the split; an identity fit sets the units if none did."""
    rows: list[Row] = []
    for stage in STAGES[:-1]:
        if stage == "external" and run.scorer is None:  # only baselines: identity sets the units, unscored
            run.set_units(FittedMethod("identity", run.plan).fit(run))
        for method in methods:
            if method.stage != stage:
                continue
            prediction = method.predict(run)
            if prediction is not None:
                rows.extend(_scored(run, method.name, prediction))
                run.predictions[method.name] = prediction.values.astype(np.float32)
    return rows


def _run_neighbours(run: SplitRun, methods: Sequence[SplitMethod], snapshot: EmbeddingSnapshot | None) -> list[Row]:
    """Run the neighbours stage of one split, once every perturbation of its split index has run."""
    rows: list[Row] = []
    for method in methods:
        if method.stage != "neighbours":
            continue
        prediction = method.predict(run)
        if prediction is None:
            continue
        rows.extend(_scored(run, method.name, prediction))
        if snapshot is not None and run.context.repeat == 0 and snapshot.perturbation == run.context.perturbation:
            snapshot.predicted[method.name] = run.units().scored(prediction.values)
    return rows


def _scored(run: SplitRun, name: str, prediction: Prediction) -> list[Row]:
    """Score one prediction, as rows: every metric asked for, its ``seconds`` and, if it follows the test, ``gated``."""
    scores = run.units().score(prediction.values, run.plan.metrics)
    scores[SECONDS] = prediction.seconds
    if prediction.gated is not None:
        scores[GATED] = float(prediction.gated)
    perturbation, repeat = run.context.perturbation, run.context.repeat
    brief = ", ".join(f"{k}={v:.4g}" for k, v in scores.items() if not math.isnan(v))
    logger.info("%s r%d %s: %s", perturbation, repeat, name, brief)
    return [(name, perturbation, repeat, metric, float(value)) for metric, value in scores.items()]


def _snapshot(run: SplitRun) -> EmbeddingSnapshot:
    """Keep the split's cells on the scored features for the embedding figure."""
    scorer = run.units()
    snapshot = EmbeddingSnapshot(run.context.perturbation, scorer.control_scored, scorer.observed_scored)
    snapshot.predicted.update({m: scorer.scored(p) for m, p in run.predictions.items()})
    return snapshot


def _cell_eval_rows(run: SplitRun) -> list[Row]:
    """cell-eval's profile of every prediction of the split, on every gene (``suite="cell-eval"``)."""
    if run.plan.suite != "cell-eval" or not run.predictions:
        return []
    scorer, perturbation, repeat = run.units(), run.context.perturbation, run.context.repeat
    start = time.perf_counter()
    by_method = cell_eval_scores(
        run.predictions, scorer.control, scorer.observed, scorer.model.features, perturbation, run.plan.control
    )
    logger.info("%s r%d: cell-eval took %.1f s", perturbation, repeat, time.perf_counter() - start)
    return [(m, perturbation, repeat, name, value) for m, scores in by_method.items() for name, value in scores.items()]
