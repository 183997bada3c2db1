"""The plan of :func:`cellw1.evaluate`: every argument checked once, before any fit.

:func:`plan_evaluation` turns the keywords of :func:`cellw1.evaluate` into one frozen
:class:`EvaluationPlan`: the perturbations, the methods, the number of splits, the held-out
cells of the out-of-distribution mode and each method's configuration. A bad argument fails
here, with its fix, before any cell is split or fitted; the run (:mod:`cellw1.eval.run`)
reads only the plan.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..checks import check_seed
from ..errors import ConfigError, InputError
from ..io.source import MemorySource
from ..ot.config import ConditionalConfig
from ..ot.effect import check_effect_alpha
from ..pp.labels import check_label, condition_labels, label_text, present_labels
from ..tl.conditional import COMBINATION
from ..tl.pipeline import shared_input_kind
from ..tl.spec import MIN_CELLS
from .celleval import check_suite
from .degenes import DE_DIRECTIONS, DeDirection
from .metrics import METRICS
from .scoring import SPLIT_METRICS
from .splits import check_group_sizes, holdout_mask

if TYPE_CHECKING:
    import anndata as ad

    from ..pp.preprocessing import Assumption
    from ..tl.api import Space

logger = logging.getLogger(__name__)

#: the method name of the conditional model (:mod:`cellw1.eval.conditional`)
CONDITIONAL = "w1_conditional"
#: baselines that read the split context (:mod:`cellw1.eval.baselines`), in report order
CONTEXT_BASELINES: tuple[str, ...] = ("global_mean", "additive", "nearest")
#: the method whose map ``nearest`` borrows from the nearest other perturbation
NEAREST_MAP = "w1"
#: splits per perturbation when ``n_splits`` is None: 5 up to this many cells, else 1
SMALL_DATA_CELLS = 100_000
#: how the cells of a group are split, as the settings record it
SPLIT_RULE = "n_test = min(max(round(0.2 n), 500), 1000, n // 3) per group"
#: an external tool: ``predict(train, test_control, perturbation)`` -> predicted cells
ExternalTool = Callable[["ad.AnnData", "ad.AnnData", str], Any]


#: Default methods: the baselines, the observed ceiling and W1. W2 and scgen_vae are slow and optional.
DEFAULT_METHODS: tuple[str, ...] = ("identity", "observed", "mean_shift", "global_mean", "additive", "nearest", "w1")


@dataclass(frozen=True)
class EvaluationPlan:
    """What :func:`cellw1.evaluate` runs, checked: the cells, the groups, the methods and their settings.

    ``configs`` maps a method to its configuration (``w1``, ``w2``, ``scgen_vae``,
    ``w1_conditional``); ``held_out`` marks the test cells of the out-of-distribution mode
    (``None``: seeded random splits); ``labels`` holds each cell's condition as text.
    """

    adata: ad.AnnData
    labels: np.ndarray
    condition_key: str
    control: str
    perturbations: list[str]
    methods: list[str]
    space: Space
    layer: str | None
    obsm_key: str | None
    n_splits: int
    n_de_genes: int
    de_direction: DeDirection
    holdout: tuple[str, str] | None
    held_out: np.ndarray | None
    configs: Mapping[str, Any]
    embedding_config: Any
    input_kind: Assumption
    effect_alpha: float | None
    metrics: list[str] | None
    plot_perturbation: str
    suite: str
    external: Mapping[str, ExternalTool]
    seed: int

    @property
    def shared_control(self) -> bool:
        """Whether every perturbation of a split index shares one control split (``w1_conditional``)."""
        return CONDITIONAL in self.methods

    def settings(self) -> dict[str, Any]:
        """Return the settings recorded with the result (``settings.json``)."""
        settings: dict[str, Any] = {
            "condition_key": self.condition_key,
            "control": self.control,
            "perturbations": self.perturbations,
            "methods": self.methods,
            "space": self.space,
            "layer": self.layer,
            "obsm_key": self.obsm_key,
            "n_splits": self.n_splits,
            "n_de_genes": self.n_de_genes,
            "de_direction": self.de_direction,
            "holdout": None if self.holdout is None else [str(self.holdout[0]), str(self.holdout[1])],
            "seed": self.seed,
            "metrics": list(self.metrics) if self.metrics is not None else [*METRICS, *SPLIT_METRICS],
            "input_kind": self.input_kind,
            "effect_alpha": self.effect_alpha,
            **{key: _text(self.configs.get(method)) for key, method in _CONFIG_SETTINGS.items()},
            "split_rule": SPLIT_RULE,
            "suite": self.suite,
            "external": list(self.external),
        }
        if self.shared_control:
            settings["split_rule"] += "; one control split per repeat shared by every perturbation (w1_conditional)"
            settings["conditional_config"] = repr(self.configs[CONDITIONAL])
        return settings


#: settings key -> the method whose configuration it records
_CONFIG_SETTINGS = {"config": "w1", "w2_config": "w2", "scgen_config": "scgen_vae"}


def _text(config: Any) -> str | None:
    return None if config is None else repr(config)


def plan_evaluation(
    adata: ad.AnnData,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | str | None,
    *,
    methods: Sequence[str] | str,
    configs: Mapping[str, Any],
    n_splits: int | None,
    n_repeats: int | None,
    n_de_genes: int,
    de_direction: DeDirection,
    holdout: tuple[str, str] | None,
    metrics: Sequence[str] | str | None,
    plot_perturbation: str | None,
    suite: str,
    external: Mapping[str, ExternalTool] | None,
    seed: int,
    effect_alpha: float | None,
    space: Space,
    layer: str | None,
    obsm_key: str | None,
    embedding_config: Any,
    input_kind: Assumption,
) -> EvaluationPlan:
    """Check the arguments of :func:`cellw1.evaluate` (named as there) and return its plan.

    ``configs`` maps a method to its configuration; the other arguments are those of
    :func:`cellw1.evaluate`.
    """
    import anndata as ad

    if not isinstance(adata, ad.AnnData):
        raise InputError(f"adata must be an anndata.AnnData, got {type(adata).__name__}.")
    chosen_methods = _check_methods(methods)
    tools = _check_external(external, chosen_methods)
    n_splits = _check_splits(n_splits, n_repeats, adata)
    n_de_genes = _check_positive_int(n_de_genes, "n_de_genes")
    if de_direction not in DE_DIRECTIONS:
        raise ConfigError(f"de_direction={de_direction!r} is not supported; use one of {DE_DIRECTIONS}.")
    metrics = _check_metrics(metrics)
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
    chosen = _check_perturbations(adata, condition_key, labels, control, perturbations)
    plot_perturbation = _check_plot_perturbation(plot_perturbation, chosen)
    label_array = labels.to_numpy()
    held_out = None if holdout is None else holdout_mask(adata, holdout)
    _check_groups(label_array, [control, *chosen], held_out, holdout, MIN_CELLS)
    logger.info("evaluating %d methods on %d perturbations x %d splits", len(chosen_methods), len(chosen), n_splits)
    if held_out is not None and n_splits > 1:
        logger.info("holdout mode: the split is fixed, so the %d splits differ only in the fit seed.", n_splits)
    configs = dict(configs)
    if CONDITIONAL in chosen_methods:
        # the conditional model tests each perturbation at the same level as every other method
        configs[CONDITIONAL] = (configs.get(CONDITIONAL) or ConditionalConfig()).replace(effect_alpha=effect_alpha)
    _note_skipped_baselines(chosen_methods, chosen)
    return EvaluationPlan(
        adata=adata,
        labels=label_array,
        condition_key=condition_key,
        control=control,
        perturbations=chosen,
        methods=chosen_methods,
        n_splits=n_splits,
        n_de_genes=n_de_genes,
        de_direction=de_direction,
        holdout=holdout,
        held_out=held_out,
        configs=configs,
        effect_alpha=effect_alpha,
        metrics=metrics,
        plot_perturbation=plot_perturbation,
        suite=suite,
        external=tools,
        seed=seed,
        space=space,
        layer=layer,
        obsm_key=obsm_key,
        embedding_config=embedding_config,
        input_kind=_one_input_kind(adata, label_array, [control, *chosen], input_kind, layer, obsm_key, seed),
    )


def _one_input_kind(
    adata: ad.AnnData,
    labels: np.ndarray,
    groups: list[str],
    input_kind: Assumption,
    layer: str | None,
    obsm_key: str | None,
    seed: int,
) -> Assumption:
    """Decide ``input_kind="auto"`` once, on every cell of ``groups``: every fit of the evaluation is given it.

    Fits that each detect it on their own training cells could put perturbations (and the
    conditional model) on different scales, and would each repeat the detection's warning.
    """
    rows = np.flatnonzero(np.isin(labels, groups))
    return shared_input_kind(
        MemorySource(adata), rows, assume=input_kind, layer=layer, obsm_key=obsm_key, seed=seed, fits="cellw1.evaluate"
    )


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_methods(methods: Sequence[str] | str) -> list[str]:
    from ..tl.methods import ALIASES, METHODS, check_method

    chosen = [methods] if isinstance(methods, str) else list(methods)
    if not chosen:
        raise ConfigError("methods is empty; pass at least one, e.g. methods=('identity', 'w1').")
    known = [*METHODS, *CONTEXT_BASELINES, CONDITIONAL]  # what evaluate runs, beyond what fit does
    unknown = [m for m in chosen if m not in known and m not in ALIASES]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}; evaluate runs {', '.join(known)}.")
    # deprecated aliases: their new name (the warning points at the caller of cellw1.evaluate)
    chosen = [m if m in (CONDITIONAL, *CONTEXT_BASELINES) else check_method(m, stacklevel=6) for m in chosen]
    duplicated = sorted({m for m in chosen if chosen.count(m) > 1})
    if duplicated:
        raise ConfigError(f"methods lists {duplicated} more than once; give each method once.")
    return chosen


def _check_external(external: Mapping[str, ExternalTool] | None, methods: list[str]) -> dict[str, ExternalTool]:
    tools = dict(external or {})
    clash = [name for name in tools if name in methods or not callable(tools[name])]
    if clash:
        raise ConfigError(f"external {clash}: each must be a callable under a name that is not among the methods.")
    return tools


def _check_metrics(metrics: Sequence[str] | str | None) -> list[str] | None:
    if metrics is None:
        return None
    chosen = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in chosen if m not in METRICS and m not in SPLIT_METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; available: {', '.join([*METRICS, *SPLIT_METRICS])}.")
    return chosen


def _check_splits(n_splits: int | None, n_repeats: int | None, adata: ad.AnnData) -> int:
    """``n_splits``, or the deprecated ``n_repeats``, or the default: 5 for small data (logged)."""
    if n_repeats is not None:
        if n_splits is not None:
            raise ConfigError("give n_splits or its deprecated alias n_repeats, not both.")
        warnings.warn(
            "n_repeats is deprecated and will be removed in the next release; use n_splits (the same meaning).",
            FutureWarning,
            stacklevel=4,
        )
        return _check_positive_int(n_repeats, "n_repeats")
    if n_splits is not None:
        return _check_positive_int(n_splits, "n_splits")
    chosen = 5 if adata.n_obs <= SMALL_DATA_CELLS else 1
    logger.info(
        "n_splits=None: %d split(s) per perturbation (%d cells; 5 up to %d).", chosen, adata.n_obs, SMALL_DATA_CELLS
    )
    return chosen


def _check_perturbations(
    adata: ad.AnnData, condition_key: str, labels: pd.Series, control: str, perturbations: Sequence[str] | str | None
) -> list[str]:
    """Return the perturbations to evaluate, each once, without the control; default every other label."""
    if perturbations is None:
        chosen = _default_perturbations(adata, condition_key, labels, control)
    else:
        given = [perturbations] if isinstance(perturbations, str) else perturbations
        chosen = list(dict.fromkeys(label_text(p) for p in given))
        for p in chosen:
            check_label(labels, p, "perturbation", condition_key)
    if control in chosen:
        logger.warning("the control %r is not a perturbation; it is left out of the evaluation.", control)
        chosen = [p for p in chosen if p != control]
    if not chosen:
        raise InputError(f"obs[{condition_key!r}] has no perturbation to evaluate besides the control {control!r}.")
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


def _check_plot_perturbation(plot_perturbation: str | None, chosen: list[str]) -> str:
    if plot_perturbation is None:
        return chosen[0]
    if str(plot_perturbation) not in chosen:
        raise InputError(f"plot_perturbation {plot_perturbation!r} is not among the evaluated perturbations {chosen}.")
    return str(plot_perturbation)


def _check_groups(
    labels: np.ndarray,
    groups: list[str],
    held_out: np.ndarray | None,
    holdout: tuple[str, str] | None,
    min_cells: int,
) -> None:
    """Every group has enough cells to split, or (holdout) held-out cells and enough training cells."""
    if held_out is None:
        check_group_sizes({name: int((labels == name).sum()) for name in groups}, min_cells)
        return
    lacking = [
        name
        for name in groups
        if not (held_out & (labels == name)).any() or (~held_out & (labels == name)).sum() < min_cells
    ]
    if lacking:
        raise InputError(
            f"with holdout={tuple(holdout or ())!r} these groups have no held-out cells or fewer than {min_cells} "
            f"training cells: {lacking}; choose another holdout value or leave them out with perturbations=[...]."
        )


def _note_skipped_baselines(methods: list[str], perturbations: list[str]) -> None:
    """Say once why a context baseline will have no rows: a warning when the methods were chosen, not the default."""
    say = logger.info if tuple(methods) == tuple(DEFAULT_METHODS) else logger.warning
    if "additive" in methods and not any(COMBINATION in p for p in perturbations):
        say("additive: no evaluated label is a combination 'A+B'; it has nothing to score.")
    if "nearest" in methods and (len(perturbations) < 2 or NEAREST_MAP not in methods):
        say("nearest needs two or more perturbations and %r among the methods; it is skipped.", NEAREST_MAP)
