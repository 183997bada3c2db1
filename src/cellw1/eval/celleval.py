"""cell-eval (Arc Institute's evaluator of perturbation predictions) as a second suite of metrics.

``cellw1.evaluate(..., suite="cell-eval")`` runs cell-eval's full profile on each split's
held-out cells and adds its per-perturbation metrics to the report next to cellw1's own. For
one split and one method, cell-eval compares

- **predicted**: the method's predicted cells, labelled the perturbation, plus the held-out
  control cells, labelled the control (cell-eval's control group), with
- **real**: the held-out perturbed cells plus the same held-out control cells,

all in the model's log1p space on every gene the model covers (one preprocessing per split,
so one scale: ``log1p(target_sum * counts / total)`` with the split's ``target_sum``, or the
input's values when they came log-normalised). cell-eval's settings are its defaults (DE by
pdex, Mann-Whitney U against the control group, Benjamini-Hochberg FDR 0.05), one thread.

A split holds one perturbation, so the metrics that rank perturbations against each other
(:data:`ACROSS_PERTURBATIONS`: the discrimination scores, clustering agreement, the
energy-distance correlation) are undefined here and left out. cell-eval is optional:
``pip install "cellw1[eval]"`` (it brings polars and pdex).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, MissingDependencyError

logger = logging.getLogger(__name__)

SUITES: tuple[str, ...] = ("cellw1", "cell-eval")
INSTALL = 'pip install "cellw1[eval]"'
#: obs column naming each cell's group in the AnnData pairs handed to cell-eval
GROUP = "condition"
#: cell-eval metrics that compare perturbations with each other: undefined with one perturbation per split
ACROSS_PERTURBATIONS: tuple[str, ...] = (
    "discrimination_score_l1",
    "discrimination_score_l2",
    "discrimination_score_cosine",
    "clustering_agreement",
    "pearson_edistance",
)
#: cell-eval metrics that are counts, not scores (left out of the Wilcoxon tests)
DESCRIPTIVE: tuple[str, ...] = ("de_nsig_counts_pred", "de_nsig_counts_real")
_LOWER_IS_BETTER = ("mse", "mae", "mse_delta", "mae_delta")


def higher_is_better(metric: str) -> bool | None:
    """Direction of a cell-eval metric: ``True``, ``False`` (errors) or ``None`` (a count, not a score)."""
    if metric in DESCRIPTIVE:
        return None
    return metric not in _LOWER_IS_BETTER


def check_suite(suite: str) -> str:
    """``suite`` if known; for ``"cell-eval"`` also check now, before any fit, that the package is installed."""
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}.")
    if suite == "cell-eval":
        import_cell_eval()
    return suite


def import_cell_eval() -> Any:
    """cell-eval's ``MetricsEvaluator``, or a MissingDependencyError saying how to install it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from cell_eval import MetricsEvaluator
    except ImportError as exc:
        raise MissingDependencyError(
            f"suite='cell-eval' needs the optional package cell-eval ({exc}); install it with: {INSTALL}"
        ) from exc
    return MetricsEvaluator


def _pair(cells: np.ndarray, controls: np.ndarray, genes: Sequence[str], perturbation: str, control: str) -> Any:
    import anndata as ad
    import pandas as pd

    labels = [perturbation] * len(cells) + [control] * len(controls)
    obs = pd.DataFrame(
        {GROUP: pd.Categorical(labels, categories=[control, perturbation])},
        index=[f"cell{i}" for i in range(len(labels))],
    )
    return ad.AnnData(
        X=np.concatenate([cells, controls]).astype(np.float32), obs=obs, var=pd.DataFrame(index=list(genes))
    )


def cell_eval_scores(
    predicted: Mapping[str, np.ndarray],
    controls: np.ndarray,
    observed: np.ndarray,
    genes: Sequence[str],
    perturbation: str,
    control: str,
) -> dict[str, dict[str, float]]:
    """cell-eval's full-profile metrics of each method's prediction for one split.

    Parameters
    ----------
    predicted
        Method name -> predicted cells ``(n, genes)`` for the held-out controls.
    controls, observed
        Held-out control cells ``(n, genes)`` and held-out perturbed cells ``(m, genes)``.
    genes
        Gene names (columns of all three).
    perturbation, control
        The labels the two groups get in cell-eval's AnnData pairs.

    Returns
    -------
    dict
        Method -> metric -> value, without :data:`ACROSS_PERTURBATIONS`; metrics cell-eval
        could not compute (it logs them and goes on) are NaN.
    """
    MetricsEvaluator = import_cell_eval()
    real = _pair(observed, controls, genes, perturbation, control)
    quiet = [logging.getLogger(name) for name in ("cell_eval", "pdex")]
    levels = [log.level for log in quiet]
    scores: dict[str, dict[str, float]] = {}
    try:
        for log in quiet:
            log.setLevel(logging.CRITICAL)
        for method, cells in predicted.items():
            pred = _pair(cells, controls, genes, perturbation, control)
            with (
                tempfile.TemporaryDirectory(prefix="cellw1_cell_eval_") as outdir,
                warnings.catch_warnings(),
                contextlib.redirect_stderr(io.StringIO()),
            ):  # pdex's and cell-eval's progress bars
                warnings.simplefilter("ignore")
                try:
                    evaluator = MetricsEvaluator(
                        adata_pred=pred,
                        adata_real=real.copy(),
                        control_pert=control,
                        pert_col=GROUP,
                        num_threads=1,
                        outdir=outdir,
                    )
                    table, _ = evaluator.compute(profile="full", write_csv=False)
                except ValueError as exc:  # cell-eval refuses the data (negative values, wrong scale...)
                    raise InputError(
                        f"cell-eval refused the {method!r} prediction of {perturbation!r}: {exc}. It needs non-negative "
                        "log1p expression: give counts or log-normalised data (not scaled values)."
                    ) from exc
            rows = [r for r in table.to_dicts() if str(r.get("perturbation")) == perturbation]
            row = rows[0] if rows else {}
            scores[method] = {
                str(name): math.nan if value is None else float(value)
                for name, value in row.items()
                if name != "perturbation" and name not in ACROSS_PERTURBATIONS and isinstance(value, int | float | None)
            }
    finally:
        for log, level in zip(quiet, levels, strict=False):
            log.setLevel(level)
    return scores
