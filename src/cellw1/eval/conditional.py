"""``w1_conditional`` in :func:`cellw1.evaluate`: one conditional model per repeat, scored per perturbation.

With ``w1_conditional`` among the methods, every perturbation of a repeat shares **one** split
of the control cells (seeded by the seed and the repeat), so that one conditional model can be
trained on the training cells of all perturbations without seeing any test cell. Each
perturbation's own cells are split as usual, and every method (per-perturbation ones
included) is fitted and scored on these same splits.

- The conditional model is :func:`cellw1.fit_conditional` on the training control cells and the
  training cells of every evaluated perturbation, in the evaluation's space (on
  ``obsm[obsm_key]`` as it is, with ``obsm_key``).
- Its ``seconds`` is its map's fit time divided by the number of perturbations, so that the
  sum over perturbations is its whole fit, as the sum of the per-perturbation fits is theirs.
- Its predictions are scored in the log space of the split's first per-perturbation model,
  converted exactly for counts (:func:`cellw1.eval.scoring.in_units_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .context import SplitRows
from .plan import CONDITIONAL
from .plugin import Prediction, SplitMethod, SplitRun
from .splits import shared_control_rng as shared_control_rng  # its old home, still imported from here

if TYPE_CHECKING:
    import anndata as ad

    from ..ot.config import ConditionalConfig
    from ..pp.preprocessing import Assumption
    from ..tl.api import Space
    from ..tl.conditional import ConditionalModel
    from .plan import EvaluationPlan


def fit_conditional_model(
    adata: ad.AnnData,
    train_rows: np.ndarray,
    condition_key: str,
    control: str,
    perturbations: Sequence[str],
    *,
    config: ConditionalConfig | None,
    space: Space,
    layer: str | None,
    obsm_key: str | None,
    embedding_config: Any,
    input_kind: Assumption,
    seed: int,
) -> ConditionalModel:
    """Fit the conditional model of one repeat on the training cells ``train_rows`` of all perturbations."""
    from ..tl.conditional import fit_conditional

    train = adata[np.sort(train_rows)].copy()
    return fit_conditional(
        train,
        condition_key,
        control,
        list(perturbations),
        space=space,
        config=config,
        seed=seed,
        layer=layer,
        obsm_key=obsm_key,
        embedding_config=embedding_config,
        input_kind=input_kind,
        progress=False,
    )


class ConditionalMethod(SplitMethod):
    """``w1_conditional``: one conditional model per split index, its view of each perturbation."""

    stage = "own"  # its embedding is its own, fitted on every perturbation's cells

    def __init__(self, name: str, plan: EvaluationPlan) -> None:
        super().__init__(name, plan)
        self.model: ConditionalModel | None = None

    def start_repeat(self, repeat: int, splits: dict[str, SplitRows]) -> None:
        """Fit the split index's model on the shared training controls and every perturbation's training cells."""
        plan = self.plan
        first = splits[plan.perturbations[0]]
        self.model = fit_conditional_model(
            plan.adata,
            np.concatenate([first.train_control, *(s.train_perturbed for s in splits.values())]),
            plan.condition_key,
            plan.control,
            plan.perturbations,
            config=plan.configs[CONDITIONAL],
            space=plan.space,
            layer=plan.layer,
            obsm_key=plan.obsm_key,
            embedding_config=plan.embedding_config,
            input_kind=plan.input_kind,
            seed=plan.seed + repeat,
        )

    def predict(self, split: SplitRun) -> Prediction:
        """Predict with the model's view of the split's perturbation (its own test for a response, same level)."""
        if self.model is None:
            raise RuntimeError("start_repeat fits the conditional model before its splits are predicted")
        view = self.model.view(split.context.perturbation)
        info = self.model.map.info
        seconds = (info["potential_seconds"] + info["step_size_seconds"]) / len(self.plan.perturbations)
        return split.predicted_by(view, float(seconds), gated=not view.method.has_response)
