"""Methods fitted with :func:`cellw1.fit` on a split's training cells: plug-ins of :func:`cellw1.evaluate`.

Every method of :mod:`cellw1.tl.methods` (identity, observed, mean shift, W2, W1, scGen) is
fitted on one perturbation's training cells with the call a user makes, in the split's one
embedding (the first method fits it; the paper's protocol). Its ``seconds`` is the method's
own fit, not preprocessing or the embedding. The methods that move cells follow one test for a
response (``effect_alpha``): the first fit of the split that tests makes it, the later ones
are given it (``cellw1.fit(..., effect=)``) instead of testing the same cells again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..tl.methods import GATED
from .plan import NEAREST_MAP
from .plugin import Prediction, SplitMethod, SplitRun

if TYPE_CHECKING:
    from .plan import EvaluationPlan


class FittedMethod(SplitMethod):
    """A method of :mod:`cellw1.tl.methods`, fitted with :func:`cellw1.fit` on the split's training cells."""

    stage = "shared"

    def __init__(self, name: str, plan: EvaluationPlan) -> None:
        super().__init__(name, plan)
        #: whether ``nearest`` borrows this method's models
        self.lent = name == NEAREST_MAP and "nearest" in plan.methods

    def fit(self, split: SplitRun) -> Any:
        """Fit the method on the split's training cells, in its shared embedding (which the first fit makes)."""
        from ..tl import api  # looked up at each call, so that a test may wrap api.fit

        plan = self.plan
        model = api.fit(
            split.held_cells().train,
            plan.condition_key,
            plan.control,
            split.context.perturbation,
            layer=plan.layer,
            obsm_key=plan.obsm_key,
            space=plan.space,
            method=self.name,
            config=plan.configs.get(self.name),
            embedding_config=plan.embedding_config,
            embedding=split.embedding,
            input_kind=plan.input_kind,
            effect_alpha=plan.effect_alpha,
            effect=split.effect,
            seed=split.fit_seed,
            progress=False,
        )
        split.embedding = model.embedding
        if split.effect is None:  # the split's test, made once: the next fits follow it
            split.effect = model.effect
        return model

    def predict(self, split: SplitRun) -> Prediction:
        """Fit, then predict the held-out controls; ``seconds`` is the method's own fit time."""
        start = time.perf_counter()
        model = self.fit(split)
        seconds = float(model.method.info.get("fit_seconds", time.perf_counter() - start))
        if self.lent:
            split.models[self.name] = model
        gated = not model.method.has_response if self.name in GATED else None
        return split.predicted_by(model, seconds, gated)
