"""The fitted conditional model at the AnnData edge: one W1 map, any of its perturbations (and doses).

A :class:`ConditionalModel` chains the preprocessing, the embedding and one
:class:`~cellw1.ot.conditional.ConditionalMap`. ``predict(adata, perturbation=..., dose=...)``
builds the condition (labels of a combination joined by ``"+"``, a dose), then predicts exactly
as :class:`~cellw1.tl.model.PerturbationModel` does (same output AnnData, same calibrated
log1p expression, ``uns["cellw1"]`` with the condition). A training condition is calibrated
with its own numbers; a dose between two training doses of its label with theirs, interpolated
(output ``"calibrated_interpolated"``); any other condition (a dose outside the training range,
an embedded label) gets the zero thresholds pooled over all training conditions and no mean
offsets (output ``"calibrated_zeros"``): its mean is the map's. A model fitted on an obsm
embedding (``obsm_key``) reads and writes its features as a single map's obsm model does: as
the map gives them, never calibrated or clipped (output ``None``).

A combination (``"A+B"``, in any order) is its members' predicted changes added up, cell by
cell, each member's whole response (share 1,
:meth:`~cellw1.tl.conditional.model.ConditionalModel.unshrunk`, whatever ``shrink_response``
applies to it alone; output ``"calibrated_additive"``; a member without a detected response
adds nothing); a trained combination is blended with its own prediction
(its whole response too), with more weight the more its cells depart from that sum and the
more cells it has (:mod:`cellw1.ot.conditional.interaction`; output
``"calibrated_interaction"``).

An unseen dose within the training doses of a perturbation with a dose-response curve
(:mod:`cellw1.ot.conditional.dose_response`) is instead the input plus its predicted changes at every
training dose (each calibrated as for its own dose), weighted by the curve (output
``"calibrated_dose_curve"``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...errors import InputError
from ...files.model_files import tensors_under
from ...ot.conditional import Condition, ConditionalMap, DoseResponse, InteractionTest
from ...pp.embedding import Embedding
from ...pp.labels import label_text
from ...pp.preprocessing import Preprocessor
from ..fitted_method import FittedMethod
from ..methods import AtCondition, Blend
from ..model import PerturbationModel, model_parts, shared_header, write_model
from .views import Base, ConditionView

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

FORMAT = "cellw1.ConditionalModel"
#: 2 adds the dose-response curves (version 1 files load without them); 3 the interaction tests of
#: trained combinations (files before load without them: a trained combination is then its own prediction)
FORMAT_VERSION = 3
#: joins the labels of perturbations applied together (``"IFNGR1+IFNGR2"``)
COMBINATION = "+"


def member_labels(label: str) -> list[str]:
    """Split a condition label into its perturbations: ``"A+B"`` -> ``["A", "B"]`` (order kept, blanks dropped)."""
    return [part.strip() for part in str(label).split(COMBINATION) if part.strip()]


class ConditionalModel:
    """One W1 model for many perturbations: predict any of them, at any dose, from control cells.

    Create it with :func:`cellw1.fit_conditional`; use :meth:`predict`, :meth:`save` and
    :func:`cellw1.load`.

    Attributes
    ----------
    features
        Genes the model reads and writes, in order (``{obsm_key}_{i}`` for an obsm embedding).
    labels
        The label table: perturbations it can encode (with ``embedding_key``: every label
        that had a vector, trained on or not).
    conditions
        The training conditions: ``{"label", "dose", "n_cells"}`` each.
    dose_curves
        Per perturbation with a dose-response curve, its
        :class:`~cellw1.ot.conditional.dose_response.DoseResponse`.
    interactions
        Per training combination whose members were trained alone: ``{"label", "dose"}`` and
        its :class:`~cellw1.ot.conditional.interaction.InteractionTest` against the sum of its members.
    condition_key, control, dose_key, embedding_key
        Where the conditions came from in the training AnnData.
    layer, obsm_key
        The layer read instead of ``X``, or the obsm embedding the model was fitted on as it is
        (``None``: expression); as for :class:`~cellw1.tl.model.PerturbationModel`.
    """

    def __init__(
        self,
        *,
        features: list[str],
        preprocessor: Preprocessor | None,
        embedding: Embedding,
        cmap: ConditionalMap,
        condition_key: str,
        control: str,
        labels: list[str],
        conditions: list[dict[str, Any]],
        dose_key: str | None,
        embedding_key: str | None,
        calibration: np.ndarray | None,
        pooled_calibration: np.ndarray | None,
        layer: str | None = None,
        obsm_key: str | None = None,
        info: dict[str, Any] | None = None,
        dose_curves: dict[str, DoseResponse] | None = None,
        interactions: list[dict[str, Any]] | None = None,
    ) -> None:
        self.features, self.preprocessor, self.embedding, self.map = list(features), preprocessor, embedding, cmap
        self.condition_key, self.control = condition_key, control
        self.labels, self.conditions = list(labels), [dict(c) for c in conditions]
        self.dose_key, self.embedding_key, self.layer, self.obsm_key = dose_key, embedding_key, layer, obsm_key
        self.calibration = None if calibration is None else np.asarray(calibration, dtype=np.float32)
        self.pooled_calibration = None if pooled_calibration is None else np.asarray(pooled_calibration, np.float32)
        self.info: dict[str, Any] = dict(info or {})
        self.dose_curves: dict[str, DoseResponse] = dict(dose_curves or {})
        self.interactions: list[dict[str, Any]] = [dict(entry) for entry in interactions or []]

    def __repr__(self) -> str:
        """Summarise the model: conditions, labels, doses, space and responses."""
        dose = f", dose_key={self.dose_key!r} ({len(self.dose_curves)} dose-response curves)" if self.dose_key else ""
        return (
            f"ConditionalModel({len(self.conditions)} training conditions, {len(self.labels)} labels{dose}, "
            f"space={self.embedding.kind!r}, {len(self.features)} features"
            f"{'' if self.obsm_key is None else f' of obsm[{self.obsm_key!r}]'}, "
            f"{len(self.without_response)} without a detected response)"
        )

    @property
    def without_response(self) -> list[tuple[str, float | None]]:
        """Training conditions ``(label, dose)`` whose cells could not be told from the controls.

        The test is :mod:`cellw1.ot.effect`; the model predicts their controls unchanged.
        """
        return [
            (c["label"], c["dose"])
            for c in self.conditions
            if not self.map.moves(self.condition(c["label"], c["dose"]))
        ]

    @property
    def perturbations(self) -> list[str]:
        """The perturbation labels trained on."""
        return list(dict.fromkeys(c["label"] for c in self.conditions))

    def dose_range(self, label: str | None = None) -> tuple[float, float] | None:
        """Smallest and largest training dose (of ``label``, or of any)."""
        doses = [c["dose"] for c in self.conditions if c["dose"] is not None and (label is None or c["label"] == label)]
        return (min(doses), max(doses)) if doses else None

    # -- conditions ---------------------------------------------------------------------------------
    def condition(self, perturbation: str, dose: float | None = None, uns: dict[str, Any] | None = None) -> Condition:
        """Make the engine's :class:`~cellw1.ot.conditional.encoder.Condition` for ``perturbation`` at ``dose``.

        ``"A+B"`` for several; labels outside the table are read from ``uns[embedding_key]``.
        """
        label = label_text(perturbation)
        members = member_labels(label)
        if not members or label == self.control:
            raise InputError(f"perturbation {perturbation!r} is not a perturbation; give one of {self.perturbations}.")
        positions, vectors = [], []
        table = self._label_positions()
        for member in members:
            if member in table:
                positions.append(table[member])
            elif self.embedding_key is not None and uns is not None and member in (uns.get(self.embedding_key) or {}):
                vectors.append(self._vector(member, uns[self.embedding_key][member]))
            else:
                how = (
                    f"and has no vector in the data's uns[{self.embedding_key!r}]; add one there"
                    if self.embedding_key
                    else "and the model was fitted without label vectors (embedding_key), so it cannot encode a new "
                    "label; fit with embedding_key (a dict label -> vector in adata.uns; cellw1.gene_vectors gives "
                    "one per measured gene) or leave it out"
                )
                shown = ", ".join(self.labels[:30]) + (
                    f" and {len(self.labels) - 30} more" if len(self.labels) > 30 else ""
                )
                within = f" (in {label!r})" if len(members) > 1 else ""
                raise InputError(
                    f"perturbation {member!r}{within} is not one the model knows: it was never seen, alone or in a "
                    f"combination ({shown}), {how}."
                )
        return Condition(tuple(positions), np.stack(vectors) if vectors else None, self._dose(label, dose))

    def _label_positions(self) -> dict[str, int]:
        """Position of each label in :attr:`labels` (the first, as ``list.index``), kept while the table is unchanged."""
        cached = getattr(self, "_positions", None)
        if cached is None or cached[0] != self.labels:
            positions: dict[str, int] = {}
            for i, label in enumerate(self.labels):
                positions.setdefault(label, i)
            cached = (list(self.labels), positions)
            self._positions = cached
        return cached[1]

    def _vector(self, label: str, value: Any) -> np.ndarray:
        vector = np.asarray(value, dtype=np.float64).ravel()
        size = self.map.encoder.vector_dim
        if vector.shape != (size,) or not np.isfinite(vector).all():
            raise InputError(
                f"the embedding vector of {label!r} has shape {vector.shape}"
                f"{'' if np.isfinite(vector).all() else ' and non-finite values'}; the model reads vectors of {size} "
                "finite numbers."
            )
        return vector.astype(np.float32)

    def _dose(self, label: str, dose: float | None) -> float | None:
        if self.dose_key is None:
            if dose is not None:
                raise InputError("this model was fitted without dose_key, so it takes no dose; drop dose=.")
            return None
        if dose is None:
            raise InputError(
                f"this model was fitted with doses (obs[{self.dose_key!r}]); give dose= (training doses of {label!r}: "
                f"{sorted({c['dose'] for c in self.conditions if c['label'] == label}) or 'none'})."
            )
        try:
            value = float(dose)
        except (TypeError, ValueError):
            raise InputError(f"dose={dose!r} must be a number.") from None
        if not np.isfinite(value) or value < 0:
            raise InputError(f"dose={dose!r} must be a finite number >= 0.")
        low, high = self.dose_range(label) or self.dose_range()  # type: ignore[misc]
        if not low <= value <= high:
            logger.warning(
                "dose %g of %r lies outside the training doses [%g, %g]; the prediction extrapolates.",
                value,
                label,
                low,
                high,
            )
        return value

    def _trained(self, label: str, dose: float | None) -> list[tuple[int, float]]:
        """Find the training conditions ``(index, weight)`` a condition is made of.

        Itself (weight 1); between two training doses of its label, those two weighted in
        ``log1p(dose)``; else none.
        """
        known = sorted((c["dose"], i) for i, c in enumerate(self.conditions) if c["label"] == label)
        for d, i in known:
            if d == dose:
                return [(i, 1.0)]
        below = [k for k in known if dose is not None and k[0] < dose]
        above = [k for k in known if dose is not None and k[0] > dose]
        if not (below and above):
            return []
        assert dose is not None  # a dose between two training doses
        (d0, i0), (d1, i1) = below[-1], above[0]
        w = float((np.log1p(dose) - np.log1p(d0)) / (np.log1p(d1) - np.log1p(d0)))
        return [(i0, 1.0 - w), (i1, w)]

    def _curve(self, label: str, dose: float | None) -> DoseResponse | None:
        """Return the label's dose-response curve if ``dose`` is an unseen dose within it, else ``None``."""
        curve = self.dose_curves.get(label)
        if curve is None or dose is None or dose in curve.doses or not curve.covers(dose):
            return None
        return curve

    def _calibration(self, label: str, dose: float | None) -> tuple[np.ndarray | None, str]:
        """Return a condition's calibration and how its output is made.

        A training condition's own; between two training doses of the label, their
        calibrations interpolated in ``log1p(dose)``; else the pooled zero thresholds.
        """
        trained = self._trained(label, dose)
        if self.calibration is not None and trained:
            mixed = sum(w * self.calibration[i] for i, w in trained)
            return mixed, "calibrated" if len(trained) == 1 else "calibrated_interpolated"
        if self.pooled_calibration is None:
            return None, "clipped"
        return self.pooled_calibration, "calibrated_zeros"

    def response_share(self, label: str, dose: float | None) -> float:
        """Share of the response a prediction applies (``shrink_response``, :mod:`cellw1.ot.effect`).

        A training condition's own, interpolated like the calibration between two doses; 1 for
        conditions without cells (a combination, an embedded label, a dose outside the range).
        """
        effects = self.map.info.get("effects") or []
        trained = self._trained(label, dose)
        if not self.map.config.shrink_response or not trained or len(effects) != len(self.conditions):
            return 1.0
        return float(sum(w * float((effects[i] or {}).get("resolved", 1.0)) for i, w in trained))

    # -- prediction ---------------------------------------------------------------------------------
    def view(
        self, perturbation: str, dose: float | None = None, uns: dict[str, Any] | None = None, *, compose: bool = True
    ) -> ConditionView:
        """Make a :class:`~cellw1.tl.conditional.views.ConditionView` predicting one condition.

        A combination (``"A+B"``, any order) is composed from its members' views
        (:meth:`composed`); ``compose=False`` gives the network at the combination's code.
        """
        condition = self.condition(perturbation, dose, uns)
        label = label_text(perturbation)
        if compose and len(member_labels(label)) > 1:
            composed = self.composed(label, condition.dose, uns)
            if composed is not None:
                return composed
        return self._own(label, condition, whole=False)

    def unshrunk(
        self, perturbation: str, dose: float | None = None, uns: dict[str, Any] | None = None
    ) -> ConditionView:
        """Make the view of a condition at its own code that applies its whole response (share 1).

        What a combination adds for each member (:meth:`composed`): the additive target sums the
        members' whole mean shifts, so each member's change is not scaled by its resolved share
        (``shrink_response``), whose shortfalls would add up. Calibrated as the condition itself.
        """
        return self._own(label_text(perturbation), self.condition(perturbation, dose, uns), whole=True)

    def _own(self, label: str, condition: Condition, *, whole: bool) -> ConditionView:
        """The network at the condition's own code, its share of the response (``whole``: all of it)."""
        key = self.canonical(label)
        calibration, output = self._calibration(key, condition.dose)
        share = 1.0 if whole else self.response_share(key, condition.dose)
        curve = self._curve(key, condition.dose)
        parts: list[ConditionView] = []
        method: FittedMethod = AtCondition(self.map, condition, share)
        if curve is not None and condition.dose is not None:  # an unseen dose: the training doses' views, by the curve
            parts = [self._own(key, self.condition(key, d), whole=whole) for d in curve.doses]
            method = Blend([part.method for part in parts], curve.weights(float(condition.dose)), share)
            output = "calibrated_dose_curve"
        return self._view(label, method, calibration, condition.dose, output, parts)

    def _view(
        self,
        label: str,
        method: FittedMethod,
        calibration: np.ndarray | None,
        dose: float | None,
        output: str,
        parts: list[ConditionView] | None = None,
        base: Base = "input",
    ) -> ConditionView:
        model = PerturbationModel(
            features=self.features,
            preprocessor=self.preprocessor,
            embedding=self.embedding,
            method=method,
            condition_key=self.condition_key,
            control=self.control,
            perturbation=label,
            layer=self.layer,
            obsm_key=self.obsm_key,
            info=self.info,
            calibration=calibration,
        )
        return ConditionView(model, dose=dose, output=output, parts=parts or [], base=base)

    # -- combinations -------------------------------------------------------------------------------
    def canonical(self, label: str) -> str:
        """Name a combination in one order.

        The trained pair's label if its members were trained together (``"B+A"`` -> ``"A+B"``),
        else its members sorted; a single label unchanged.
        """
        members = member_labels(label)
        if len(members) < 2:
            return label_text(label)
        key = sorted(set(members))
        for trained in self.perturbations:
            if sorted(set(member_labels(trained))) == key:
                return trained
        return COMBINATION.join(key)

    def composed(
        self,
        label: str,
        dose: float | None,
        uns: dict[str, Any] | None = None,
        *,
        interaction: bool = True,
        whole: bool = True,
    ) -> ConditionView | None:
        """Compose a combination's view from its members' (see ``docs/method.md``).

        ``None`` where a member was trained only inside combinations (the network at the
        combination's code predicts it).

        The members' predicted changes, each its whole response (:meth:`unshrunk`), add up,
        cell by cell; a member without a detected response adds nothing. A trained combination
        is blended with its own prediction (its whole response too), the weight of its own
        growing with its interaction and its cells
        (:meth:`~cellw1.ot.conditional.interaction.InteractionTest.weight`); ``interaction=False``: the sum alone;
        ``whole=False``: each member and the pair's own prediction at its resolved share, as predicted alone.
        """
        members = sorted(set(member_labels(label)))
        trained = set(self.perturbations)
        if any(m in self.labels and m not in trained for m in members):
            return None
        parts = [self._own(m, self.condition(m, dose, uns), whole=whole) for m in members]
        moving = [part for part in parts if part.method.has_response]
        if len(moving) < 2:  # nothing to add: the one responding member, or no change
            additive = (moving[0] if moving else parts[0]).relabelled(label)
        else:
            additive = self._view(
                label,
                Blend([part.method for part in moving], np.ones(len(moving))),
                self.pooled_calibration,
                dose,
                "calibrated_additive",
                moving,
                base="reconstruction",
            )
        if not interaction:
            return additive
        key = self.canonical(label)
        test = self.interaction(key, dose)
        if test is None:  # not a trained combination (or one saved before the test: its own map)
            return additive if key not in trained else None
        weight = test.weight()
        if weight <= 0.0:
            return additive
        own = self._own(key, self.condition(key, dose), whole=whole).relabelled(label)
        if weight >= 1.0:
            return own
        blend = Blend([additive.method, own.method], np.array([1.0 - weight, weight]))
        return self._view(label, blend, own.calibration, dose, "calibrated_interaction", [additive, own])

    def interaction(self, label: str, dose: float | None = None) -> InteractionTest | None:
        """Return the test of a trained combination against the sum of its members (:mod:`cellw1.ot.conditional.interaction`)."""
        for entry in self.interactions:
            if entry["label"] == label and entry["dose"] == dose:
                return InteractionTest.from_dict(entry)
        return None

    def predict(
        self, adata: ad.AnnData | str | os.PathLike, perturbation: str, dose: float | None = None, **kwargs: Any
    ) -> ad.AnnData | Path:
        """Predict the cells of ``adata`` (never modified) under ``perturbation`` at ``dose``.

        Parameters
        ----------
        adata
            Control cells: an AnnData, or data on disk as for :meth:`PerturbationModel.predict`.
        perturbation
            A label (``"STAT1"``), or several joined by ``"+"``. A label the model was not
            trained on is read from ``adata.uns[embedding_key]`` when the model has vectors.
        dose
            Required when the model was fitted with ``dose_key``; outside the training range
            it is a warning (the map extrapolates).
        **kwargs
            ``out``, ``cells``, ``chunk_cells``, ``progress`` of :meth:`PerturbationModel.predict`.

        Returns
        -------
        anndata.AnnData or pathlib.Path
            As :meth:`PerturbationModel.predict`; ``obs`` also has ``dose`` (with doses) and
            ``uns["cellw1"]`` the dose and ``"conditional": True``.
        """
        uns = getattr(adata, "uns", None)
        return self.view(perturbation, dose, uns).predict(adata, **kwargs)

    # -- files ----------------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """Describe the model as JSON (everything but the weights)."""
        return {
            **shared_header(self, FORMAT, FORMAT_VERSION),
            "labels": self.labels,
            "conditions": self.conditions,
            "dose_key": self.dose_key,
            "embedding_key": self.embedding_key,
            "obsm_key": self.obsm_key,
            "map": self.map.header(),
            "dose_response": {label: curve.to_dict() for label, curve in self.dose_curves.items()},
            "interactions": self.interactions,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model to ``directory`` (created if needed); atomic, checksummed, no pickle."""
        tensors = {f"embedding.{k}": v for k, v in self.embedding.state_tensors().items()}
        tensors.update({f"map.{k}": v for k, v in self.map.state_tensors().items()})
        if self.calibration is not None:
            tensors["output.calibration"] = torch.from_numpy(self.calibration)
        if self.pooled_calibration is not None:
            tensors["output.pooled_calibration"] = torch.from_numpy(self.pooled_calibration)
        return write_model(directory, tensors, self.header())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ConditionalModel:
        """Load a model written by :meth:`save`."""
        with model_parts(directory, "ConditionalModel", FORMAT, FORMAT_VERSION) as (tensors, header, shared):
            return cls(
                **shared,
                cmap=ConditionalMap.from_state(
                    tensors_under(tensors, "map."), header["map"], source=f"model in {str(directory)!r}"
                ),
                labels=header["labels"],
                conditions=header["conditions"],
                dose_key=header["dose_key"],
                embedding_key=header["embedding_key"],
                obsm_key=header.get("obsm_key"),  # files written before obsm models: expression
                dose_curves={
                    label: DoseResponse.from_dict(curve) for label, curve in (header.get("dose_response") or {}).items()
                },
                interactions=header.get("interactions") or [],
                pooled_calibration=(
                    tensors["output.pooled_calibration"].numpy() if "output.pooled_calibration" in tensors else None
                ),
            )
