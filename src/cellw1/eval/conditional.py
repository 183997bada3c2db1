"""``w1_conditional`` in :func:`cellw1.evaluate`: one conditional model per repeat, scored per perturbation.

With ``w1_conditional`` among the methods, every perturbation of a repeat shares **one** split
of the control cells (seeded by the seed and the repeat), so that one conditional model can be
trained on the training cells of all perturbations without seeing any test cell. Each
perturbation's own cells are split as usual, and every method (per-perturbation ones
included) is fitted and scored on these same splits.

- The conditional model is :func:`cellw1.fit_conditional` on the training control cells and the
  training cells of every evaluated perturbation, in the evaluation's space.
- Its ``seconds`` is its map's fit time divided by the number of perturbations, so that the
  sum over perturbations is its whole fit, as the sum of the per-perturbation fits is theirs.
- Its predictions are scored in the log space of the split's first per-perturbation model. For
  counts, both normalise to a median library size, of different cells; the prediction is
  converted exactly, ``log1p(expm1(p) * s_eval / s_model)``, so every method is scored in
  one unit.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import anndata as ad

    from ..ot.conditional import ConditionalConfig
    from ..tl.conditional import ConditionalModel

#: the method name of the conditional model
CONDITIONAL = "w1_conditional"


def shared_control_rng(seed: int, repeat: int) -> np.random.Generator:
    """The generator of the control split shared by every perturbation of a repeat."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(repeat), zlib.crc32(b"shared control split")]))


def fit_conditional_model(
    adata: ad.AnnData,
    train_rows: np.ndarray,
    condition_key: str,
    control: str,
    perturbations: Sequence[str],
    *,
    config: ConditionalConfig | None,
    space: str,
    layer: str | None,
    embedding_config: Any,
    input_kind: str,
    seed: int,
) -> ConditionalModel:
    """The conditional model of one repeat, on the training cells ``train_rows`` of all perturbations."""
    from ..tl.conditional import fit_conditional

    train = adata[np.sort(train_rows)].copy()
    return fit_conditional(
        train,
        condition_key,
        control,
        list(perturbations),
        space=space,  # type: ignore[arg-type]
        config=config,
        seed=seed,
        layer=layer,
        embedding_config=embedding_config,
        input_kind=input_kind,
        progress=False,
    )


def with_conditional(
    fit: Callable[..., Any], model: ConditionalModel | None, n_perturbations: int
) -> Callable[..., Any]:
    """``fit`` that answers ``method="w1_conditional"`` with ``model``'s view of the perturbation."""

    def fit_or_view(
        train: ad.AnnData, condition_key: str, control: str, perturbation: str, *, method: str, **kwargs: Any
    ) -> Any:
        if method != CONDITIONAL:
            return fit(train, condition_key, control, perturbation, method=method, **kwargs)
        # the conditional model made its own test per condition, at the same level (its config's effect_alpha)
        assert model is not None
        view = model.view(perturbation)
        info = model.map.info
        view.method.info["fit_seconds"] = (info["potential_seconds"] + info["step_size_seconds"]) / n_perturbations
        return view

    return fit_or_view


def in_units_of(predicted: np.ndarray, model: Any, scoring: Any) -> np.ndarray:
    """``predicted`` log1p expression of ``model`` in the normalisation of ``scoring`` (both PerturbationModels)."""
    own, other = model.preprocessor, scoring.preprocessor
    if own is None or other is None or own.target_sum is None or other.target_sum is None:
        return predicted
    ratio = other.target_sum / own.target_sum
    return predicted if ratio == 1.0 else np.log1p(np.expm1(predicted) * ratio)


def last(methods: Sequence[str]) -> list[str]:
    """``methods`` with ``w1_conditional`` last: the others fit the split's shared embedding and set the scoring units."""
    return [m for m in methods if m != CONDITIONAL] + [m for m in methods if m == CONDITIONAL]
