"""The conditional model at the AnnData edge: one W1 map for many perturbations and doses.

========== ====================================================================================
module     what it holds
========== ====================================================================================
fit        :func:`fit_conditional`: the single map's pipeline with the conditional method step
model      :class:`ConditionalModel`: the fitted model, its conditions, save and load
views      :class:`~cellw1.tl.conditional.views.ConditionView`: one condition as a predictor
========== ====================================================================================

The numerical parts (encoder of the condition, networks, solver) live in :mod:`cellw1.ot`.
"""

from .fit import fit_conditional
from .model import COMBINATION, FORMAT, ConditionalModel, member_labels

__all__ = ["COMBINATION", "FORMAT", "ConditionalModel", "fit_conditional", "member_labels"]
