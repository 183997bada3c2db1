"""The methods :func:`cellw1.evaluate` knows, by name: each a plug-in (:class:`~cellw1.eval.plugin.SplitMethod`).

The baselines that read a split's context and the conditional model are the evaluation's own
plug-ins, listed in :data:`PLUGINS`; every other name is a method of :mod:`cellw1.tl.methods`,
fitted with :func:`cellw1.fit` (:class:`~cellw1.eval.fitted.FittedMethod`); each tool of
``external`` is an :class:`~cellw1.eval.external.ExternalMethod`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .baselines import AdditiveBaseline, GlobalMeanBaseline, NearestBaseline
from .conditional import ConditionalMethod
from .external import ExternalMethod
from .fitted import FittedMethod
from .plan import CONDITIONAL
from .plugin import SplitMethod

if TYPE_CHECKING:
    from .plan import EvaluationPlan

#: the evaluation's own methods, by name
PLUGINS: dict[str, type[SplitMethod]] = {
    "global_mean": GlobalMeanBaseline,
    "additive": AdditiveBaseline,
    "nearest": NearestBaseline,
    CONDITIONAL: ConditionalMethod,
}


def split_methods(plan: EvaluationPlan) -> list[SplitMethod]:
    """Return the plug-in of every method of ``plan``, in its order, then one per external tool."""
    methods = [PLUGINS.get(name, FittedMethod)(name, plan) for name in plan.methods]
    return methods + [ExternalMethod(name, plan) for name in plan.external]
