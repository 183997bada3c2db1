"""The paper's evaluation protocol: split, fit every method, score held-out cells.

For each perturbation and repeat ``r`` (Chen et al., Sec. 3.2: "each method is independently
run 5 times with randomly split training and testing sets"):

1. **Split.** The control cells and the perturbed cells are each split at random (seeded by
   ``seed``, ``r`` and the perturbation's name) into training and test cells, with

   ``n_test = min(max(round(0.2 * n), 500), 1000, n // 3)``

   test cells for a group of ``n`` cells: a fifth of the group, but at least 500 and at most
   1,000 cells, and never more than a third of the group (so small groups keep two thirds
   of their cells for training). See :func:`n_test_cells`.
2. **Fit.** Every method is fitted on the training cells with :func:`cellw1.fit`, the same
   call a user makes, and its fit time is recorded as the metric ``seconds``. All methods of a
   split share one embedding (PCA or autoencoder, fitted once), as in the paper; ``seconds``
   counts the method's own fit, not preprocessing or the embedding.
3. **Predict.** The test *control* cells go through ``model.predict``.
4. **Score.** The predictions are compared with the test *perturbed* cells by
   :func:`cellw1.eval.metrics.compute_metrics`. In gene space (no ``obsm_key``) both are
   log-normalised by the model's own preprocessing (``model.preprocess``) and restricted to
   the top ``n_de_genes`` differentially expressed genes, chosen by
   :func:`cellw1.eval.degenes.top_de_genes` on the **training** cells only. With ``obsm_key``
   (low-dimensional features such as the 4i data) every feature is used.

Out-of-distribution mode, ``holdout=(covariate_key, value)``: the model is trained on every
cell (control and perturbed) whose ``obs[covariate_key]`` differs from ``value`` and tested
on the cells that have it: the held-out control cells are the input, the held-out perturbed
cells the truth. The split is then fixed, so repeats differ only in the fit seed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._data import check_seed
from ..errors import ConfigError, InputError
from ..ot.config import W1Config
from ..ot.effect import check_effect_alpha
from ..pp.labels import label_series, label_text, present_labels
from ..tl.methods import GATED as GATED_METHODS
from ..tl.pipeline import EFFECT_ALPHA
from .celleval import cell_eval_scores, check_suite
from .conditional import CONDITIONAL, fit_conditional_model, in_units_of, last, shared_control_rng, with_conditional
from .degenes import top_de_genes
from .metrics import METRICS, compute_metrics
from .result import CONTROL_SHIFT, GATED, SECONDS, TABLE_COLUMNS, EmbeddingSnapshot, EvaluationResult
from .splits import check_group_sizes as _check_group_sizes
from .splits import holdout_mask as _holdout_mask
from .splits import split_group
from .splits import split_rngs as _split_rngs

if TYPE_CHECKING:
    import anndata as ad

    from ..ot.conditional import ConditionalConfig
    from ..ot.config import W2Config
    from ..pp.embedding import EmbeddingConfig
    from ..tl.scgen import ScGenConfig

logger = logging.getLogger(__name__)

#: Default methods, in the order of the paper's Figure 3.
DEFAULT_METHODS: tuple[str, ...] = ("identity", "observed", "mean_shift", "w2", "w1")


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
    chosen = [m if m == CONDITIONAL else check_method(m, stacklevel=4) for m in chosen]
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


def _conditional_defaults() -> ConditionalConfig:
    from ..ot.conditional import ConditionalConfig

    return ConditionalConfig()


# -- evaluation ---------------------------------------------------------------------------------------
def _scored(values: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    return values if columns is None else values[:, columns]


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
    n_repeats: int = 1,
    n_de_genes: int = 50,
    holdout: tuple[str, str] | None = None,
    config: W1Config | None = None,
    w2_config: W2Config | None = None,
    conditional_config: ConditionalConfig | None = None,
    scgen_config: ScGenConfig | None = None,
    embedding_config: EmbeddingConfig | None = None,
    input_kind: Literal["auto", "counts", "log", "continuous"] = "auto",
    effect_alpha: float | None = EFFECT_ALPHA,
    metrics: Sequence[str] | None = None,
    plot_perturbation: str | None = None,
    suite: Literal["cellw1", "cell-eval"] = "cellw1",
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
        Methods of :mod:`cellw1.tl.methods`, fitted with :func:`cellw1.fit`, and
        ``"w1_conditional"``: one :func:`cellw1.fit_conditional` model of all perturbations per
        repeat; every perturbation then shares one control split (:mod:`cellw1.eval.conditional`).
    space, layer, obsm_key, embedding_config, input_kind
        Passed to :func:`cellw1.fit`. With ``obsm_key`` the features are ``adata.obsm[obsm_key]``
        and all of them are scored; otherwise predictions are scored in log-normalised gene
        space on the top ``n_de_genes`` DE genes of the training cells.
    n_repeats
        Random splits per perturbation (the paper uses 5).
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
        Metric names from :data:`cellw1.eval.metrics.METRICS`; ``None`` computes all of them.
    plot_perturbation
        Perturbation whose cells (repeat 0) are kept for the embedding figure; default the first.
    suite
        ``"cellw1"``: cellw1's metrics. ``"cell-eval"``: also cell-eval's full profile on each
        split's held-out cells, merged into the table under cell-eval's metric names
        (:mod:`cellw1.eval.celleval`; needs ``pip install "cellw1[eval]"``; gene expression only).
    seed
        Seed of the splits (with the repeat and the perturbation's name); each fit uses ``seed + repeat``.
    progress
        Show a progress bar over perturbations x repeats.

    Returns
    -------
    EvaluationResult
    """
    import anndata as ad

    from ..tl import api

    if not isinstance(adata, ad.AnnData):
        raise InputError(f"adata must be an anndata.AnnData, got {type(adata).__name__}.")
    chosen_methods = _check_methods(methods)
    n_repeats = _check_positive_int(n_repeats, "n_repeats")
    n_de_genes = _check_positive_int(n_de_genes, "n_de_genes")
    if metrics is not None:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ConfigError(f"unknown metric(s) {unknown}; available: {', '.join(METRICS)}.")
    seed = check_seed(seed)
    effect_alpha = check_effect_alpha(effect_alpha)
    suite = check_suite(suite)
    if suite == "cell-eval" and obsm_key is not None:
        raise ConfigError(
            "suite='cell-eval' scores gene expression; it does not apply with obsm_key, drop one of them."
        )
    control = label_text(control)
    labels = api.condition_labels(adata, condition_key)
    api.check_label(labels, control, "control", condition_key)
    if perturbations is None:
        chosen = _default_perturbations(adata, condition_key, labels, control)
    else:
        chosen = list(
            dict.fromkeys(label_text(p) for p in ([perturbations] if isinstance(perturbations, str) else perturbations))
        )
        for p in chosen:
            api.check_label(labels, p, "perturbation", condition_key)
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
        "n_repeats": n_repeats,
        "n_de_genes": n_de_genes,
        "holdout": None if holdout is None else [str(holdout[0]), str(holdout[1])],
        "seed": seed,
        "metrics": list(metrics) if metrics is not None else list(METRICS),
        "input_kind": input_kind,
        "effect_alpha": effect_alpha,
        "config": None if config is None else repr(config),
        "w2_config": None if w2_config is None else repr(w2_config),
        "scgen_config": None if scgen_config is None else repr(scgen_config),
        "split_rule": "n_test = min(max(round(0.2 n), 500), 1000, n // 3) per group",
        "suite": suite,
    }
    logger.info("evaluating %d methods on %d perturbations x %d repeats", len(chosen_methods), len(chosen), n_repeats)
    if held_out is not None and n_repeats > 1:
        logger.info("holdout mode: the split is fixed, so the %d repeats differ only in the fit seed.", n_repeats)

    rows: list[tuple[str, str, int, str, float]] = []
    snapshot: EmbeddingSnapshot | None = None
    configs: dict[str, Any] = {"w1": config, "w2": w2_config, "scgen_vae": scgen_config}
    control_rows = np.flatnonzero(label_array == control)
    conditional = CONDITIONAL in chosen_methods
    if conditional:
        if obsm_key is not None:
            raise ConfigError("w1_conditional is fitted on expression; drop obsm_key or the method.")
        settings["split_rule"] += "; one control split per repeat shared by every perturbation (w1_conditional)"
        # the conditional model tests each perturbation at the same level as every other method
        conditional_config = (conditional_config or _conditional_defaults()).replace(effect_alpha=effect_alpha)
        settings["conditional_config"] = repr(conditional_config)
    models: dict[int, Any] = {}
    bar = tqdm(total=len(chosen) * n_repeats, desc="evaluate", disable=not progress)
    try:
        for perturbation in chosen:
            pert_rows = np.flatnonzero(label_array == perturbation)
            for repeat in range(n_repeats):
                bar.set_postfix_str(f"{perturbation} r{repeat}")
                if conditional and repeat not in models:
                    models[repeat] = fit_conditional_model(
                        adata,
                        _conditional_rows(label_array, control_rows, chosen, held_out, seed, repeat),
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
                if held_out is None:
                    rng_c, rng_p = _split_rngs(seed, repeat, perturbation)
                    train_c, test_c = split_group(
                        control_rows.size, shared_control_rng(seed, repeat) if conditional else rng_c
                    )
                    train_p, test_p = split_group(pert_rows.size, rng_p)
                    train_rows = np.concatenate([control_rows[train_c], pert_rows[train_p]])
                    test_control_rows, test_pert_rows = control_rows[test_c], pert_rows[test_p]
                else:
                    train_rows = np.concatenate(
                        [control_rows[~held_out[control_rows]], pert_rows[~held_out[pert_rows]]]
                    )
                    test_control_rows = control_rows[held_out[control_rows]]
                    test_pert_rows = pert_rows[held_out[pert_rows]]
                keep = snapshot is None and repeat == 0 and perturbation == plot_perturbation
                new_rows, snap = _evaluate_split(
                    with_conditional(api.fit, models.get(repeat), len(chosen)),
                    adata,
                    np.sort(train_rows),
                    test_control_rows,
                    test_pert_rows,
                    condition_key=condition_key,
                    control=control,
                    perturbation=perturbation,
                    repeat=repeat,
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
                )
                rows.extend(new_rows)
                if keep:
                    snapshot = snap
                bar.update(1)
    finally:
        bar.close()
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    gated = table[(table["metric"] == GATED) & (table["value"] > 0)]
    settings["gated"] = sorted({(str(p), int(r)) for p, r in zip(gated["perturbation"], gated["repeat"], strict=True)})
    splits = len(chosen) * n_repeats
    logger.info(
        "test for a response (effect_alpha=%s): %d of %d perturbation splits gated, predicted as their controls",
        effect_alpha,
        len(settings["gated"]),
        splits,
    )
    table["repeat"] = table["repeat"].astype(int)
    table["value"] = table["value"].astype(float)
    return EvaluationResult(table=table, settings=settings, embedding=snapshot)


def _conditional_rows(
    labels: np.ndarray, control_rows: np.ndarray, chosen: list[str], held_out: np.ndarray | None, seed: int, repeat: int
) -> np.ndarray:
    """Training rows of the conditional model of a repeat: the splits' training cells of every group."""
    if held_out is not None:
        return np.flatnonzero(~held_out & np.isin(labels, [*chosen, labels[control_rows[0]]]))
    parts = [control_rows[split_group(control_rows.size, shared_control_rng(seed, repeat))[0]]]
    for perturbation in chosen:
        rows = np.flatnonzero(labels == perturbation)
        parts.append(rows[split_group(rows.size, _split_rngs(seed, repeat, perturbation)[1])[0]])
    return np.concatenate(parts)


def _evaluate_split(
    fit: Any,
    adata: ad.AnnData,
    train_rows: np.ndarray,
    test_control_rows: np.ndarray,
    test_pert_rows: np.ndarray,
    *,
    condition_key: str,
    control: str,
    perturbation: str,
    repeat: int,
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
) -> tuple[list[tuple[str, str, int, str, float]], EmbeddingSnapshot | None]:
    """Fit and score every method on one split; optionally keep the cells for a figure."""
    # Copies, so nothing downstream can touch the user's AnnData (views write through on some versions).
    train = adata[train_rows].copy()
    test_control = adata[test_control_rows].copy()
    test_perturbed = adata[test_pert_rows].copy()
    rows: list[tuple[str, str, int, str, float]] = []
    columns: np.ndarray | None = None
    obs_values: np.ndarray | None = None
    control_values: np.ndarray | None = None
    snapshot: EmbeddingSnapshot | None = None
    shared = None  # every method of a split works in one latent space, fitted once (paper protocol)
    scoring: Any = None  # the model whose preprocessing gives the units of the scores
    predictions: dict[str, np.ndarray] = {}
    for method in methods:
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
        if obs_values is None:
            scoring = model
            # Every method fits the same preprocessing on the same training cells, so one
            # DE-gene selection (training cells only) and one preprocessing of the test cells
            # serve all methods of this split.
            if obsm_key is None:
                is_control = (
                    label_series(train.obs[condition_key], key=condition_key, warn=False) == control
                ).to_numpy()
                train_values = model.preprocess(train)
                genes = top_de_genes(train_values[is_control], train_values[~is_control], model.features, n_de_genes)
                columns = pd.Index(model.features).get_indexer(genes)
                logger.debug("%s r%d: scoring on %d DE genes (first: %s)", perturbation, repeat, len(genes), genes[:5])
            full = {"observed": model.preprocess(test_perturbed), "control": model.preprocess(test_control)}
            obs_values = _scored(np.asarray(full["observed"], dtype=np.float64), columns)
            control_values = _scored(np.asarray(full["control"], dtype=np.float64), columns)
        predicted = model.predict(test_control)
        if suite == "cell-eval":  # every gene, as predicted; scored by cell-eval after the last method
            predictions[method] = in_units_of(np.asarray(predicted.X, dtype=np.float64), model, scoring).astype(
                np.float32
            )
        pred_values = _scored(in_units_of(np.asarray(predicted.X, dtype=np.float64), model, scoring), columns)
        scores = compute_metrics(pred_values, obs_values, metrics)
        scores[SECONDS] = seconds
        scores[CONTROL_SHIFT] = float(np.linalg.norm(pred_values.mean(0) - control_values.mean(0)))
        if method in GATED_METHODS or method == CONDITIONAL:
            scores[GATED] = float(not model.method.moves)
        rows.extend((method, perturbation, repeat, name, float(value)) for name, value in scores.items())
        logger.info(
            "%s r%d %s: %s",
            perturbation,
            repeat,
            method,
            ", ".join(f"{k}={v:.4g}" for k, v in scores.items() if not math.isnan(v)),
        )
        if keep_cells:
            if snapshot is None:
                snapshot = EmbeddingSnapshot(perturbation, control_values, obs_values)
            snapshot.predicted[method] = pred_values
    if predictions:
        start = time.perf_counter()
        by_method = cell_eval_scores(
            predictions, full["control"], full["observed"], model.features, perturbation, control
        )
        rows.extend(
            (m, perturbation, repeat, name, value) for m, scores in by_method.items() for name, value in scores.items()
        )
        logger.info("%s r%d: cell-eval took %.1f s", perturbation, repeat, time.perf_counter() - start)
    return rows, snapshot
