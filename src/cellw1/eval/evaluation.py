"""The evaluation protocol: split, fit every method and baseline, score held-out cells, compare.

For each split index ``r`` (``n_splits``, seeded; Chen et al., Sec. 3.2: "each method is
independently run 5 times with randomly split training and testing sets") and perturbation:

1. **Split.** The control cells and the perturbed cells are each split at random (seeded by
   ``seed``, ``r`` and the perturbation's name) into training and test cells, with

   ``n_test = min(max(round(0.2 * n), 500), 1000, n // 3)``

   test cells for a group of ``n`` cells: a fifth of the group, but at least 500 and at most
   1,000 cells, and never more than a third of the group (so small groups keep two thirds
   of their cells for training). See :func:`n_test_cells`.
2. **Fit.** Every method is fitted on the training cells with :func:`cellw1.fit`, the same
   call a user makes, and its fit time is recorded as the metric ``seconds``. All methods of a
   split share one embedding (PCA or autoencoder, fitted once), as in the paper; ``seconds``
   counts the method's own fit, not preprocessing or the embedding. The baselines that read
   the other perturbations' training cells of split ``r`` (``global_mean``, ``additive``,
   ``nearest``) are plug-ins given the split's context (:mod:`cellw1.eval.baselines`,
   :mod:`cellw1.eval.context`); ``nearest`` is scored once every perturbation of ``r`` is fitted.
3. **Predict.** The test *control* cells go through ``model.predict``.
4. **Score.** The predictions are compared with the test *perturbed* cells
   (:mod:`cellw1.eval.scoring`). In gene space (no ``obsm_key``) both are log-normalised by
   the model's own preprocessing (``model.preprocess``) and the metrics of
   :mod:`cellw1.eval.metrics`, the response distribution and PearsonDelta use the top
   ``n_de_genes`` differentially expressed genes, chosen by
   :func:`cellw1.eval.degenes.top_de_genes` on the **training** cells only; PearsonDelta on
   every gene and the centroid accuracy use every gene. With ``obsm_key`` (low-dimensional
   features such as the 4i data) every feature is used.
5. **Compare.** :meth:`EvaluationResult.comparisons` pairs ``w1`` with each baseline over the
   same perturbations and splits (:mod:`cellw1.eval.confidence`); docs/evaluation.md explains
   every metric and how to read the report.

Out-of-distribution mode, ``holdout=(covariate_key, value)``: the model is trained on every
cell (control and perturbed) whose ``obs[covariate_key]`` differs from ``value`` and tested
on the cells that have it: the held-out control cells are the input, the held-out perturbed
cells the truth. The split is then fixed, so splits differ only in the fit seed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._data import check_seed
from ..errors import ConfigError, InputError
from ..ot.conditional import ConditionalConfig
from ..ot.config import W1Config
from ..ot.effect import check_effect_alpha
from ..pp.labels import check_label, condition_labels, label_text, present_labels
from ..pp.preprocessing import Assumption
from ..tl.conditional import COMBINATION
from ..tl.spec import EFFECT_ALPHA
from .baselines import CONTEXT_BASELINES
from .celleval import check_suite
from .conditional import CONDITIONAL, fit_conditional_model, last, with_conditional
from .context import SplitContext, split_rows
from .metrics import METRICS
from .result import GATED, TABLE_COLUMNS, EmbeddingSnapshot, EvaluationResult
from .scoring import SPLIT_METRICS
from .split_fit import NEAREST_MAP, SplitState, evaluate_split, nearest_rows
from .splits import check_group_sizes as _check_group_sizes
from .splits import holdout_mask as _holdout_mask

if TYPE_CHECKING:
    import anndata as ad

    from ..ot.config import W2Config
    from ..pp.embedding import EmbeddingConfig
    from ..tl.scgen import ScGenConfig

logger = logging.getLogger(__name__)

#: Default methods: the baselines, the observed ceiling and W1. W2 and scgen_vae are slow and optional.
DEFAULT_METHODS: tuple[str, ...] = ("identity", "observed", "mean_shift", "global_mean", "additive", "nearest", "w1")
#: splits per perturbation when ``n_splits`` is None: 5 up to this many cells, else 1
SMALL_DATA_CELLS = 100_000


# -- checks -------------------------------------------------------------------------------------------
def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_methods(methods: Sequence[str] | str) -> list[str]:
    from ..tl.methods import check_method

    chosen = [methods] if isinstance(methods, str) else list(methods)
    if not chosen:
        raise ConfigError("methods is empty; pass at least one, e.g. methods=('identity', 'w1').")
    # deprecated aliases: their new name; w1_conditional is one model of all perturbations (cellw1.eval.conditional)
    chosen = [m if m in (CONDITIONAL, *CONTEXT_BASELINES) else check_method(m, stacklevel=4) for m in chosen]
    duplicated = sorted({m for m in chosen if chosen.count(m) > 1})
    if duplicated:
        raise ConfigError(f"methods lists {duplicated} more than once; give each method once.")
    return chosen


def _default_perturbations(adata: ad.AnnData, condition_key: str, labels: pd.Series, control: str) -> list[str]:
    """Every label but the control: in category order for a categorical column, else sorted."""
    present = present_labels(labels)
    column = adata.obs[condition_key]
    if isinstance(column.dtype, pd.CategoricalDtype):
        ordered = [label_text(c) for c in column.cat.categories if label_text(c) in present]
    else:
        ordered = present
    return [p for p in ordered if p != control]


# -- evaluation ---------------------------------------------------------------------------------------
def evaluate(
    adata: ad.AnnData,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | None = None,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    space: Literal["genes", "pca", "autoencoder"] = "genes",
    layer: str | None = None,
    obsm_key: str | None = None,
    n_splits: int | None = None,
    n_repeats: int | None = None,
    n_de_genes: int = 50,
    holdout: tuple[str, str] | None = None,
    config: W1Config | None = None,
    w2_config: W2Config | None = None,
    conditional_config: ConditionalConfig | None = None,
    scgen_config: ScGenConfig | None = None,
    embedding_config: EmbeddingConfig | None = None,
    input_kind: Assumption = "auto",
    effect_alpha: float | None = EFFECT_ALPHA,
    metrics: Sequence[str] | None = None,
    plot_perturbation: str | None = None,
    suite: Literal["cellw1", "cell-eval"] = "cellw1",
    external: Mapping[str, Callable[[ad.AnnData, ad.AnnData, str], Any]] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Benchmark prediction methods on held-out cells with the paper's protocol.

    See the module docstring for the protocol (split rule, DE genes, out-of-distribution mode).

    Parameters
    ----------
    adata
        Cells x genes (counts or log-normalised), never modified.
    condition_key, control
        Column of ``adata.obs`` with the conditions and the control label.
    perturbations
        Perturbations to evaluate; ``None``: every other label (category order for a
        categorical column, else sorted).
    methods
        Methods of :mod:`cellw1.tl.methods`, fitted with :func:`cellw1.fit`; the baselines that
        read the other perturbations of a split, ``"global_mean"``, ``"additive"`` and
        ``"nearest"`` (:mod:`cellw1.eval.baselines`); and ``"w1_conditional"``: one
        :func:`cellw1.fit_conditional` model of all perturbations per split index; every
        perturbation then shares one control split (:mod:`cellw1.eval.conditional`). The
        default is every baseline, the observed ceiling and ``"w1"``; ``"w2"`` and
        ``"scgen_vae"`` are slow and optional.
    space, layer, obsm_key, embedding_config, input_kind
        Passed to :func:`cellw1.fit`. With ``obsm_key`` the features are ``adata.obsm[obsm_key]``
        and all of them are scored; otherwise predictions are scored in log-normalised gene
        space on the top ``n_de_genes`` DE genes of the training cells.
    n_splits
        Seeded random splits per perturbation (the paper uses 5). ``None``: 5 for data of up to
        100,000 cells, else 1.
    n_repeats
        Deprecated alias of ``n_splits`` (a FutureWarning).
    n_de_genes
        DE genes scored per perturbation (the paper uses 50).
    holdout
        ``(covariate_key, value)``: out-of-distribution evaluation on the cells with that value.
    config, w2_config, conditional_config
        :class:`~cellw1.ot.config.W1Config` for ``"w1"``, :class:`~cellw1.ot.config.W2Config` for ``"w2"``
        and :class:`~cellw1.ot.conditional.ConditionalConfig` for ``"w1_conditional"``.
    scgen_config
        :class:`~cellw1.tl.scgen.ScGenConfig` for ``"scgen_vae"`` (the real scGen, optional).
    effect_alpha
        Level of the test for a response, made once per perturbation and split on the training
        cells (:mod:`cellw1.ot.effect`): where it finds none, every method that moves cells
        (``mean_shift``, ``w2``, ``w1``, ``scgen_vae``, ``w1_conditional``) predicts the controls,
        so no method gains from the gate; the metric row ``gated`` says where. ``None``: no
        test, for every method.
    metrics
        Metric names from :data:`cellw1.eval.metrics.METRICS` and
        :data:`cellw1.eval.scoring.SPLIT_METRICS` (docs/evaluation.md); ``None`` computes all.
    plot_perturbation
        Perturbation whose cells (repeat 0) are kept for the embedding figure; default the first.
    suite
        ``"cellw1"``: cellw1's metrics. ``"cell-eval"``: also cell-eval's full profile on each
        split's held-out cells, merged into the table under cell-eval's metric names
        (:mod:`cellw1.eval.celleval`; needs ``pip install "cellw1[eval]"``; gene expression only).
    external
        Other tools' predictions, scored on the same splits as the methods: name ->
        ``predict(train, test_control, perturbation)``, given copies of the split's training cells and
        held-out control cells (AnnData), returning the predicted cells (an AnnData, or an
        array with one row per test control cell and one column per gene) of the same kind as
        ``adata`` (counts for counts, log-normalised for log-normalised). Their ``seconds``
        is the call's wall time.
    seed
        Seed of the splits (with the split index and the perturbation's name); each fit uses
        ``seed + split``.
    progress
        Show a progress bar over perturbations x splits.

    Returns
    -------
    EvaluationResult
    """
    import anndata as ad

    from ..tl import api

    if not isinstance(adata, ad.AnnData):
        raise InputError(f"adata must be an anndata.AnnData, got {type(adata).__name__}.")
    chosen_methods = _check_methods(methods)
    external = dict(external or {})
    clash = [name for name in external if name in chosen_methods or not callable(external[name])]
    if clash:
        raise ConfigError(f"external {clash}: each must be a callable under a name that is not among the methods.")
    n_splits = _check_splits(n_splits, n_repeats, adata)
    n_de_genes = _check_positive_int(n_de_genes, "n_de_genes")
    if metrics is not None:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [m for m in metrics if m not in METRICS and m not in SPLIT_METRICS]
        if unknown:
            raise ConfigError(f"unknown metric(s) {unknown}; available: {', '.join([*METRICS, *SPLIT_METRICS])}.")
    seed = check_seed(seed)
    effect_alpha = check_effect_alpha(effect_alpha)
    suite = check_suite(suite)
    if suite == "cell-eval" and obsm_key is not None:
        raise ConfigError(
            "suite='cell-eval' scores gene expression; it does not apply with obsm_key, drop one of them."
        )
    control = label_text(control)
    labels = condition_labels(adata, condition_key)
    check_label(labels, control, "control", condition_key)
    if perturbations is None:
        chosen = _default_perturbations(adata, condition_key, labels, control)
    else:
        chosen = list(
            dict.fromkeys(label_text(p) for p in ([perturbations] if isinstance(perturbations, str) else perturbations))
        )
        for p in chosen:
            check_label(labels, p, "perturbation", condition_key)
    if control in chosen:
        logger.warning("the control %r is not a perturbation; it is left out of the evaluation.", control)
        chosen = [p for p in chosen if p != control]
    if not chosen:
        raise InputError(f"obs[{condition_key!r}] has no perturbation to evaluate besides the control {control!r}.")
    if plot_perturbation is None:
        plot_perturbation = chosen[0]
    elif str(plot_perturbation) not in chosen:
        raise InputError(f"plot_perturbation {plot_perturbation!r} is not among the evaluated perturbations {chosen}.")
    plot_perturbation = str(plot_perturbation)

    label_array = labels.to_numpy()
    held_out = None if holdout is None else _holdout_mask(adata, holdout)
    if held_out is None:
        counts = {name: int((label_array == name).sum()) for name in [control, *chosen]}
        _check_group_sizes(counts, api.MIN_CELLS)
    else:
        lacking = [
            name
            for name in [control, *chosen]
            if not (held_out & (label_array == name)).any() or (~held_out & (label_array == name)).sum() < api.MIN_CELLS
        ]
        if lacking:
            raise InputError(
                f"with holdout={tuple(holdout)!r} these groups have no held-out cells or fewer than {api.MIN_CELLS} "
                f"training cells: {lacking}; choose another holdout value or leave them out with perturbations=[...]."
            )

    settings = {
        "condition_key": condition_key,
        "control": control,
        "perturbations": chosen,
        "methods": chosen_methods,
        "space": space,
        "layer": layer,
        "obsm_key": obsm_key,
        "n_splits": n_splits,
        "n_de_genes": n_de_genes,
        "holdout": None if holdout is None else [str(holdout[0]), str(holdout[1])],
        "seed": seed,
        "metrics": list(metrics) if metrics is not None else [*METRICS, *SPLIT_METRICS],
        "input_kind": input_kind,
        "effect_alpha": effect_alpha,
        "config": None if config is None else repr(config),
        "w2_config": None if w2_config is None else repr(w2_config),
        "scgen_config": None if scgen_config is None else repr(scgen_config),
        "split_rule": "n_test = min(max(round(0.2 n), 500), 1000, n // 3) per group",
        "suite": suite,
        "external": list(external),
    }
    logger.info("evaluating %d methods on %d perturbations x %d splits", len(chosen_methods), len(chosen), n_splits)
    if held_out is not None and n_splits > 1:
        logger.info("holdout mode: the split is fixed, so the %d splits differ only in the fit seed.", n_splits)

    rows: list[tuple[str, str, int, str, float]] = []
    snapshot: EmbeddingSnapshot | None = None
    configs: dict[str, Any] = {"w1": config, "w2": w2_config, "scgen_vae": scgen_config}
    conditional = CONDITIONAL in chosen_methods
    if conditional:
        if obsm_key is not None:
            raise ConfigError("w1_conditional is fitted on expression; drop obsm_key or the method.")
        settings["split_rule"] += "; one control split per repeat shared by every perturbation (w1_conditional)"
        # the conditional model tests each perturbation at the same level as every other method
        conditional_config = (conditional_config or ConditionalConfig()).replace(effect_alpha=effect_alpha)
        settings["conditional_config"] = repr(conditional_config)
    _note_skipped_baselines(chosen_methods, chosen)
    bar = tqdm(total=len(chosen) * n_splits, desc="evaluate", disable=not progress)
    try:
        for repeat in range(n_splits):
            splits = split_rows(label_array, control, chosen, held_out, seed, repeat, shared_control=conditional)
            model = None
            if conditional:
                model = fit_conditional_model(
                    adata,
                    np.concatenate([splits[chosen[0]].train_control, *(s.train_perturbed for s in splits.values())]),
                    condition_key,
                    control,
                    chosen,
                    config=conditional_config,
                    space=space,
                    layer=layer,
                    embedding_config=embedding_config,
                    input_kind=input_kind,
                    seed=seed + repeat,
                )
            states: dict[str, SplitState] = {}
            for perturbation in chosen:
                bar.set_postfix_str(f"{perturbation} r{repeat}")
                keep = snapshot is None and repeat == 0 and perturbation == plot_perturbation
                new_rows, snap, states[perturbation] = evaluate_split(
                    with_conditional(api.fit, model, len(chosen)),
                    SplitContext(adata, label_array, perturbation, repeat, splits),
                    condition_key=condition_key,
                    control=control,
                    methods=last(chosen_methods),
                    configs=configs,
                    space=space,
                    layer=layer,
                    obsm_key=obsm_key,
                    embedding_config=embedding_config,
                    input_kind=input_kind,
                    effect_alpha=effect_alpha,
                    n_de_genes=n_de_genes,
                    metrics=metrics,
                    fit_seed=seed + repeat,
                    keep_cells=keep,
                    suite=suite,
                    external=external,
                )
                rows.extend(new_rows)
                if keep:
                    snapshot = snap
                bar.update(1)
            if "nearest" in chosen_methods:
                rows.extend(nearest_rows(states, metrics, snapshot))
    finally:
        bar.close()
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    gated = table[(table["metric"] == GATED) & (table["value"] > 0)]
    settings["gated"] = sorted({(str(p), int(r)) for p, r in zip(gated["perturbation"], gated["repeat"], strict=True)})
    logger.info(
        "test for a response (effect_alpha=%s): %d of %d perturbation splits gated, predicted as their controls",
        effect_alpha,
        len(settings["gated"]),
        len(chosen) * n_splits,
    )
    table["repeat"] = table["repeat"].astype(int)
    table["value"] = table["value"].astype(float)
    return EvaluationResult(table=table, settings=settings, embedding=snapshot)


def _check_splits(n_splits: int | None, n_repeats: int | None, adata: ad.AnnData) -> int:
    """``n_splits``, or the deprecated ``n_repeats``, or the default: 5 for small data (logged)."""
    if n_repeats is not None:
        if n_splits is not None:
            raise ConfigError("give n_splits or its deprecated alias n_repeats, not both.")
        warnings.warn(
            "n_repeats is deprecated and will be removed in the next release; use n_splits (the same meaning).",
            FutureWarning,
            stacklevel=3,
        )
        return _check_positive_int(n_repeats, "n_repeats")
    if n_splits is not None:
        return _check_positive_int(n_splits, "n_splits")
    chosen = 5 if adata.n_obs <= SMALL_DATA_CELLS else 1
    logger.info(
        "n_splits=None: %d split(s) per perturbation (%d cells; 5 up to %d).", chosen, adata.n_obs, SMALL_DATA_CELLS
    )
    return chosen


def _note_skipped_baselines(methods: list[str], perturbations: list[str]) -> None:
    """Say once why a context baseline will have no rows."""
    if "additive" in methods and not any(COMBINATION in p for p in perturbations):
        logger.info("additive: no evaluated label is a combination 'A+B'; it has nothing to score.")
    if "nearest" in methods and (len(perturbations) < 2 or NEAREST_MAP not in methods):
        logger.info("nearest needs two or more perturbations and %r among the methods; it is skipped.", NEAREST_MAP)
