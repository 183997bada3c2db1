"""One condition of a conditional model as a :class:`~cellw1.tl.model.PerturbationModel`, and views made of views.

A condition's view predicts with the conditional map at that condition
(:class:`AtCondition`). Two kinds of condition are predicted from other views instead, by
adding up their predicted changes (:func:`blended`):

* an unseen dose on a dose-response curve: the training doses' changes, weighted by the curve;
* a combination ``"A+B"``: its members' changes, each with weight 1 (the members' per-cell
  displacements add up), then, for a trained pair, blended with the pair's own prediction
  (:meth:`cellw1.ot.interaction.InteractionTest.weight`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from ..ot.condition import Condition
from ..ot.conditional import ConditionalMap
from .fitted_method import FittedMethod, shrunk
from .model import PerturbationModel

METHOD = "w1_conditional"
#: what the changes of a blend's parts are measured from: the input itself (doses), or the input
#: as the model reconstructs it with no change (combinations: each part's change then excludes
#: the reconstruction error, which would otherwise be counted once per member)
Base = Literal["input", "reconstruction"]


class AtCondition(FittedMethod):
    """The conditional map with one condition fixed, as a prediction method (cells in the fitted space)."""

    name = METHOD

    def __init__(self, cmap: ConditionalMap, condition: Condition, resolved: float = 1.0) -> None:
        super().__init__(cmap.info)
        self.cmap, self.condition, self._share = cmap, condition, float(resolved)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return shrunk(x, np.asarray(self.cmap.transport(x, self.condition), dtype=np.float32), self._share)

    def response(self, x: np.ndarray) -> np.ndarray:
        eta = np.asarray(self.cmap.step_size(np.asarray(x, dtype=np.float32), self.condition), dtype=np.float32)
        return np.float32(self._share) * eta

    @property
    def moves(self) -> bool:
        return self.cmap.moves(self.condition)

    @property
    def resolved(self) -> float:
        return self._share


class Blend(FittedMethod):
    """Each cell moved by the weighted displacements of several methods (cells in the fitted space).

    The written expression combines the parts' calibrated outputs with the same weights
    (:meth:`ConditionView._predict_values`); this class gives the fitted-space view.
    """

    name = METHOD

    def __init__(self, parts: list[FittedMethod], weights: np.ndarray, resolved: float = 1.0) -> None:
        super().__init__(parts[0].info)
        self.parts, self.weights, self._share = parts, np.asarray(weights, dtype=np.float32), float(resolved)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return blended(x, [part.predict(x) for part in self.parts], self.weights)

    @property
    def moves(self) -> bool:
        return any(part.moves for part in self.parts)

    @property
    def resolved(self) -> float:
        return self._share


def blended(x: np.ndarray, predictions: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """``x + sum_k w_k (predictions_k - x)``: displacements of several predictions, weighted."""
    out = np.array(x, dtype=np.float32)
    for predicted, weight in zip(predictions, weights, strict=True):
        out += np.float32(weight) * (predicted - x)
    return out


class ConditionView(PerturbationModel):
    """A :class:`PerturbationModel` for one condition of a conditional model (predict only).

    With ``parts`` (its method a :class:`Blend` of the parts' methods), the output is the
    ``base`` plus the parts' predicted changes from it (each calibrated as for its own
    condition), weighted by the blend's weights, clipped at 0.
    """

    def __init__(
        self,
        *,
        dose: float | None,
        output: str,
        parts: list[PerturbationModel] | None = None,
        base: Base = "input",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dose, self.output, self.parts, self.base = dose, output, parts or [], base

    def _predict_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.parts:
            return super()._predict_values(values)
        assert isinstance(self.method, Blend)
        base = values
        if self.base == "reconstruction":
            base = np.asarray(self.embedding.decode(self.embedding.encode(values)), dtype=np.float32)
            if self._expression:
                base = np.maximum(base, 0.0)
        out = blended(base, [part._predict_values(values)[0] for part in self.parts], self.method.weights)
        if self._expression:  # expression: non-negative; continuous values keep their sign
            out = np.maximum(out, 0.0)
        return out, self.method.response(self.embedding.encode(values))

    def _output(self) -> str | None:
        if self.preprocessor is None or not self.method.moves or not self.preprocessor.expression:
            return super()._output()  # None (obsm), "unchanged" or "raw" (continuous values)
        return self.output

    def _uns(self) -> dict[str, Any]:
        return {**super()._uns(), "dose": self.dose, "conditional": True}

    def _output_obs(self, obs: pd.DataFrame) -> pd.DataFrame:
        result = super()._output_obs(obs)
        if self.dose is not None:
            result["dose"] = float(self.dose)
        return result
