"""One condition of a conditional model as a predictor, and views made of views.

A :class:`ConditionView` is a :class:`~cellw1.tl.prediction.Predictor`: it holds a
:class:`~cellw1.tl.model.PerturbationModel` made of the conditional model's parts (its
preprocessing and embedding, the condition's method and calibration) and predicts with it.
A condition's method is the conditional map at that condition
(:class:`~cellw1.tl.methods.AtCondition`). Two kinds of condition are predicted from other
views instead, by adding up their predicted changes (:func:`~cellw1.tl.methods.blended`):

* an unseen dose on a dose-response curve: the training doses' changes, weighted by the curve;
* a combination ``"A+B"``: its members' changes (each its whole response), each with weight 1
  (the members' per-cell displacements add up), then, for a trained pair, blended with the pair's own prediction
  (:meth:`cellw1.ot.conditional.interaction.InteractionTest.weight`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ..fitted_method import FittedMethod
from ..methods import Blend, blended
from ..model import PerturbationModel
from ..output import scale_record
from ..prediction import PREDICT_CHUNK, predict_cells

if TYPE_CHECKING:
    import anndata as ad

    from ...pp.embedding import Embedding
    from ...pp.preprocessing import Preprocessor

#: what the changes of a blend's parts are measured from: the input itself (doses), or the input
#: as the model reconstructs it with no change (combinations: each part's change then excludes
#: the reconstruction error, which would otherwise be counted once per member)
Base = Literal["input", "reconstruction"]


class ConditionView:
    """One condition of a conditional model, as a :class:`~cellw1.tl.prediction.Predictor`.

    ``model`` predicts the condition on its own: the conditional model's preprocessing and
    embedding with the condition's method and calibration. With ``parts`` (``model.method`` a
    :class:`~cellw1.tl.methods.Blend` of the parts' methods), the output is the ``base`` plus the parts' predicted
    changes from it (each calibrated as for its own condition), weighted by the blend's
    weights, clipped at 0. ``output`` says how the written values are made
    (:mod:`cellw1.tl.output`) when the condition has a response.
    """

    def __init__(
        self,
        model: PerturbationModel,
        *,
        dose: float | None,
        output: str,
        parts: Sequence[ConditionView] = (),
        base: Base = "input",
    ) -> None:
        self.model, self.dose, self.output, self.parts, self.base = model, dose, output, list(parts), base

    def __repr__(self) -> str:
        """Name the condition, its dose and the model it predicts with."""
        dose = "" if self.dose is None else f" at dose {self.dose:g}"
        return f"ConditionView({self.perturbation!r}{dose} of a conditional model: {self.model!r})"

    def relabelled(self, perturbation: str) -> ConditionView:
        """Return the same prediction, labelled ``perturbation`` (a combination named in another order)."""
        model = copy.copy(self.model)
        model.perturbation = perturbation
        return ConditionView(model, dose=self.dose, output=self.output, parts=self.parts, base=self.base)

    # -- the parts it predicts with -------------------------------------------------------------------
    @property
    def method(self) -> FittedMethod:
        """The condition's method in the fitted space."""
        return self.model.method

    @property
    def calibration(self) -> np.ndarray | None:
        """The condition's calibration (:mod:`cellw1.pp.calibration`)."""
        return self.model.calibration

    @property
    def preprocessor(self) -> Preprocessor | None:
        """The conditional model's preprocessing."""
        return self.model.preprocessor

    @property
    def embedding(self) -> Embedding:
        """The conditional model's embedding."""
        return self.model.embedding

    @property
    def info(self) -> dict[str, Any]:
        """The conditional model's fit diagnostics."""
        return self.model.info

    @property
    def features(self) -> list[str]:
        """Genes (or obsm features) read and written, in order."""
        return self.model.features

    @property
    def layer(self) -> str | None:
        """The layer read instead of ``X``."""
        return self.model.layer

    @property
    def obsm_key(self) -> str | None:
        """The obsm embedding the conditional model reads as it is (``None``: expression)."""
        return self.model.obsm_key

    @property
    def condition_key(self) -> str:
        """The obs column of the training conditions."""
        return self.model.condition_key

    @property
    def control(self) -> str:
        """The control label."""
        return self.model.control

    @property
    def perturbation(self) -> str:
        """The condition's label (``"A+B"`` for a combination)."""
        return self.model.perturbation

    @property
    def expression(self) -> bool:
        """Whether the values are expression (non-negative, calibrated)."""
        return self.model.expression

    # -- the Predictor contract (cellw1.tl.prediction) -------------------------------------------------
    def feature_columns(self, names: Sequence[str]) -> np.ndarray | None:
        """Positions of the model's genes among the data's ``names`` (``None``: obsm, in order)."""
        return self.model.feature_columns(names)

    def input_values(self, raw: Any, columns: np.ndarray | None) -> np.ndarray:
        """Rows read from the data, normalised as the model's training cells."""
        return self.model.input_values(raw, columns)

    def predict_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted cells and each cell's response, for rows in the input space."""
        if not self.parts:
            return self.model.predict_values(values)
        assert isinstance(self.method, Blend)
        base = values
        if self.base == "reconstruction":
            base = np.asarray(self.embedding.decode(self.embedding.encode(values)), dtype=np.float32)
            if self.expression:
                base = np.maximum(base, 0.0)
        out = blended(base, [part.predict_values(values)[0] for part in self.parts], self.method.weights)
        if self.expression:  # expression: non-negative; continuous values keep their sign
            out = np.maximum(out, 0.0)
        return out, self.method.response(self.embedding.encode(values))

    def output_kind(self) -> str | None:
        """How the written values are made: the view's ``output`` for calibrated expression that moves."""
        pre = self.preprocessor
        if pre is None or not self.method.has_response or not pre.expression:
            return self.model.output_kind()  # "unchanged" or "raw" (continuous values)
        return self.output

    def output_uns(self) -> dict[str, Any]:
        """``uns["cellw1"]``: the scale and the model, the dose and ``"conditional": True``."""
        return {**scale_record(self.model, self.output_kind()), "dose": self.dose, "conditional": True}

    def output_obs(self, obs: pd.DataFrame) -> pd.DataFrame:
        """As :meth:`PerturbationModel.output_obs <cellw1.tl.model.PerturbationModel.output_obs>`, with ``dose``."""
        result = self.model.output_obs(obs)
        if self.dose is not None:
            result["dose"] = float(self.dose)
        return result

    # -- for users --------------------------------------------------------------------------------------
    def preprocess(self, adata: ad.AnnData | str | os.PathLike) -> np.ndarray:
        """Put ``adata`` in the model's input space.

        As :meth:`PerturbationModel.preprocess <cellw1.tl.model.PerturbationModel.preprocess>`.
        """
        return self.model.preprocess(adata)

    def predict(
        self,
        adata: ad.AnnData | str | os.PathLike,
        *,
        out: str | os.PathLike | None = None,
        cells: np.ndarray | None = None,
        chunk_cells: int = PREDICT_CHUNK,
        progress: bool = False,
        key_added: str | None = None,
        with_controls: bool = False,
    ) -> ad.AnnData | Path:
        """Predict the cells of ``adata`` under this condition.

        Keywords as for :meth:`PerturbationModel.predict <cellw1.tl.model.PerturbationModel.predict>`.
        """
        return predict_cells(
            self,
            adata,
            out=out,
            cells=cells,
            chunk_cells=chunk_cells,
            progress=progress,
            key_added=key_added,
            with_controls=with_controls,
            what="PerturbationModel.predict",
        )
