"""One W1 map for many conditions: ``T(x, c) = x - eta(x, c) grad_x f(x, c) / |grad_x f(x, c)|``.

The conditional model, on the single map's parts (the same phase-1 loop, step-size loops,
selector and energy refinement, and its config :class:`~cellw1.ot.config.ConditionalConfig`
beside the single map's); only its networks, its condition encoder and its samplers are its
own:

* :mod:`~cellw1.ot.conditional.encoder`: the condition code ``e(c)`` (:class:`Condition`,
  :class:`ConditionEncoder`);
* :mod:`~cellw1.ot.conditional.networks`: ``f(x, c)``, ``eta(x, c)``, and a network bound
  to one condition (:class:`ConditionBoundModule`);
* :mod:`~cellw1.ot.conditional.solver`: :func:`fit_conditional_map`, and the cells of every
  group and their minibatches;
* :mod:`~cellw1.ot.conditional.fitted_map`: the fitted :class:`ConditionalMap` and its file;
* :mod:`~cellw1.ot.conditional.dose_response` and :mod:`~cellw1.ot.conditional.interaction`:
  an unseen dose on a perturbation's dose curve, and the test of a combination against the
  sum of its members.
"""

from ..config import ConditionalConfig  # re-exported: its home is cellw1.ot.config
from .dose_response import DoseResponse, fit_dose_response
from .encoder import Condition, ConditionEncoder
from .fitted_map import ConditionalMap
from .interaction import InteractionTest, interaction_test
from .networks import ConditionalPotential, ConditionalStepSize, ConditionBoundModule
from .solver import fit_conditional_map

__all__ = [
    "Condition",
    "ConditionBoundModule",
    "ConditionEncoder",
    "ConditionalConfig",
    "ConditionalMap",
    "ConditionalPotential",
    "ConditionalStepSize",
    "DoseResponse",
    "InteractionTest",
    "fit_conditional_map",
    "fit_dose_response",
    "interaction_test",
]
