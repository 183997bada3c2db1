"""``cellw1.fit_conditional``: AnnData in, one W1 model for many perturbations out.

Every perturbed cell belongs to a *condition*: its label in ``obs[condition_key]`` (several
perturbations applied together are written ``"A+B"``) and, with ``dose_key``, its dose. The fit
is the single map's pipeline (:mod:`cellw1.tl.pipeline`: one preprocessing and one embedding
fitted on the control cells and the cells of every condition together, each group read from the
source by rows) with another method step, :class:`ConditionalMethod`: one
:class:`~cellw1.ot.conditional.ConditionalMap` learns the control -> condition maps of all of
them (:mod:`cellw1.ot.conditional.solver`), and the output of each training condition is
calibrated with its own cells (:mod:`cellw1.pp.calibration`). The dose-response curves and
the interaction tests of trained combinations follow, on samples of the same groups. An obsm
embedding (``obsm_key``) is read as a single map reads it: as it is, never calibrated.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ...errors import InputError
from ...io.source import MemorySource, Source, open_source
from ...ot.conditional import (
    Condition,
    ConditionalConfig,
    ConditionalMap,
    DoseResponse,
    fit_conditional_map,
    fit_dose_response,
    interaction_test,
)
from ...ot.config import W1Config
from ...ot.sampling import StreamedCells
from ...pp.calibration import SAMPLE_CELLS, calibration_target, fit_calibration
from ...pp.embedding import EmbeddingConfig
from ...pp.labels import check_label, condition_labels, present_labels
from ...pp.preprocessing import Assumption
from ..methods import AtCondition
from ..model import check_unique_genes
from ..pipeline import FittedSpace, fit_pipeline, spread_sample
from ..spec import MIN_CELLS, ConditionalSpec
from .model import ConditionalModel, member_labels

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

#: each condition's calibration predicts ``CALIBRATION_PER_CELL`` control cells per cell of its sample, at least
#: ``CALIBRATION_MIN`` (and at most the reference sample): its cost follows the condition's cells
CALIBRATION_PER_CELL, CALIBRATION_MIN = 10, 1_000
#: a condition: its label and its dose (``None`` without doses)
ConditionKey = tuple[str, float | None]
#: given every group's cells in the fitted space (control first), whether each condition responds
Gate = Callable[[list[StreamedCells]], Sequence[bool]]


def fit_conditional(
    adata: ad.AnnData | str | os.PathLike,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | None = None,
    dose_key: str | None = None,
    embedding_key: str | None = None,
    space: Literal["genes", "pca", "autoencoder"] | None = None,
    config: ConditionalConfig | W1Config | None = None,
    seed: int = 0,
    *,
    layer: str | None = None,
    obsm_key: str | None = None,
    embedding_config: EmbeddingConfig | None = None,
    input_kind: Assumption = "auto",
    progress: bool = True,
    buffer_cells: int | None = None,
) -> ConditionalModel:
    """Fit one conditional W1 model from ``control`` cells to the cells of many perturbations.

    Parameters
    ----------
    adata
        Cells x genes (never modified): an AnnData in memory, or data on disk (a path to an
        ``.h5ad`` / ``.zarr``, or an AnnData opened with ``backed="r"``), whose cells are then
        streamed in buffers of ``buffer_cells`` per group (``X`` is never loaded; no
        ``embedding_key``, which reads ``adata.uns``).
    condition_key
        Column of ``adata.obs`` with each cell's condition; ``"A+B"`` is the combination of
        perturbations ``A`` and ``B``.
    control
        The control label.
    perturbations
        Labels to train on; ``None``: every label but the control.
    dose_key
        A numeric ``obs`` column: each (label, dose) pair is a condition, and the model
        predicts any dose (log1p-transformed inside the encoder); an unseen dose between a
        perturbation's training doses follows its dose-response curve
        (:mod:`cellw1.ot.conditional.dose_response`) when it has one.
    embedding_key
        A key of ``adata.uns`` holding a dict ``label -> vector`` (gene or drug embeddings):
        labels are encoded from their vectors, so a perturbation that has a vector but no
        cells can be predicted. ``None``: one learned code per label.
    space
        ``"pca"``, ``"genes"`` or ``"autoencoder"``; predictions are in gene space (or in the
        features of ``obsm_key``). Default: ``"pca"``, or ``"genes"`` with ``obsm_key`` (the
        embedding's own features).
    config
        :class:`~cellw1.ot.conditional.ConditionalConfig` (a plain ``W1Config`` is converted).
    seed
        Seed of every random choice.
    layer, embedding_config, input_kind, progress, buffer_cells
        As for :func:`cellw1.fit`.
    obsm_key
        Fit on the embedding ``adata.obsm[obsm_key]`` as it is, as :func:`cellw1.fit` does: no
        normalisation and no calibration; predictions are the embedding's features as the map
        gives them (``uns["cellw1"]["output"]`` is ``None``), written as ``X`` (``obsm`` with
        ``key_added``).
    """
    if space is None:  # an obsm embedding is used as it is; expression is embedded by PCA
        space = "pca" if obsm_key is None else "genes"
    spec = ConditionalSpec(
        condition_key=condition_key,
        control=control,
        perturbations=perturbations,  # type: ignore[arg-type]  # made a tuple of labels by the spec
        dose_key=dose_key,
        embedding_key=embedding_key,
        space=space,
        config=config,  # type: ignore[arg-type]  # a W1Config is converted by the spec
        seed=seed,
        layer=layer,
        obsm_key=obsm_key,
        embedding_config=embedding_config,
        input_kind=input_kind,
        progress=progress,
        buffer_cells=buffer_cells,
    )
    with open_source(adata, "cellw1.fit_conditional") as source:
        return fit_conditional_source(source, spec)


def fit_conditional_source(source: Source, spec: ConditionalSpec, gate: Gate | None = None) -> ConditionalModel:
    """:func:`fit_conditional` on an opened :class:`~cellw1.io.source.Source` (memory or disk).

    ``gate``: given the cells of the control group and of every condition (in the fitted space),
    whether each condition moves; it replaces the per-condition effect test of the config (a
    screen's calls, :func:`cellw1.tl.screen.screen`).
    """
    labels = condition_labels(source, spec.condition_key, warn=spec.warn_missing)
    check_label(labels, spec.control, "control", spec.condition_key)
    chosen = _chosen(labels, spec.control, spec.perturbations, spec.condition_key)
    groups = _groups(labels, _doses(source.obs, spec.dose_key, labels, chosen), chosen)
    control_rows = np.flatnonzero((labels == spec.control).to_numpy())
    _check_sizes(spec.control, len(control_rows), groups)
    uns = source.adata.uns if isinstance(source, MemorySource) else None
    if uns is None and spec.embedding_key is not None:
        raise InputError(
            "embedding_key reads adata.uns, which a file on disk is not opened for; load the AnnData "
            "(anndata.read_h5ad) to fit with label vectors."
        )
    table, vectors = _label_table(uns, spec.embedding_key, groups)
    if spec.obsm_key is None:
        check_unique_genes(source.var_names)
    start = time.perf_counter()
    position = {label: i for i, label in enumerate(table)}
    conditions = [Condition(tuple(position[m] for m in member_labels(label)), None, dose) for label, dose in groups]
    if gate is not None:  # the gate's calls replace the map's own tests
        spec = spec.replace(config=spec.config.replace(effect_alpha=None))
    step = ConditionalMethod(spec, conditions, len(table), vectors, gate)
    result = fit_pipeline(source, [control_rows, *groups.values()], spec, step)
    info: dict[str, Any] = {"n_control": len(control_rows), "seed": spec.seed, **result.info}
    info["fit_seconds"] = time.perf_counter() - start - info["calibration_seconds"]
    training = [{"label": label, "dose": dose, "n_cells": len(rows)} for (label, dose), rows in groups.items()]
    space = result.space
    dose_curves = _dose_curves(spec.dose_key is not None, training, space)
    interactions = _interaction_tests(training, space)
    calibration, pooled = result.calibration or (None, None)
    info["seconds_with_calibration"] = time.perf_counter() - start
    return ConditionalModel(
        features=space.features,
        preprocessor=space.preprocessor,
        embedding=space.embedding,
        cmap=result.fitted,
        condition_key=spec.condition_key,
        control=spec.control,
        labels=table,
        dose_key=spec.dose_key,
        embedding_key=spec.embedding_key,
        layer=spec.layer,
        obsm_key=spec.obsm_key,
        info=info,
        conditions=training,
        calibration=calibration,
        pooled_calibration=pooled,
        dose_curves=dose_curves,
        interactions=interactions,
    )


class ConditionalMethod:
    """The method step of a conditional fit (:class:`~cellw1.tl.pipeline.MethodStep`).

    One conditional map for every condition (group ``k + 1`` is condition ``k``), then each
    training condition's calibration.
    """

    def __init__(
        self,
        spec: ConditionalSpec,
        conditions: list[Condition],
        n_labels: int,
        label_vectors: np.ndarray | None,
        gate: Gate | None,
    ) -> None:
        self.spec, self.conditions, self.n_labels, self.label_vectors, self.gate = (
            spec,
            conditions,
            n_labels,
            label_vectors,
            gate,
        )
        self.device: str = spec.config.device

    def fit(self, space: FittedSpace) -> ConditionalMap:
        """Fit the conditional map; a condition the gate calls without response leaves its cells where they are."""
        calls = None if self.gate is None else list(self.gate(space.cells))
        spec = self.spec
        cmap = fit_conditional_map(
            space.cells[0],
            space.cells[1:],
            self.conditions,
            spec.config,
            spec.seed,
            n_labels=self.n_labels,
            label_vectors=self.label_vectors,
            progress=spec.progress,
        )
        if calls is not None:
            cmap.unresponsive = [
                Condition(tuple(sorted(c.labels)), None, c.dose)
                for c, responds in zip(self.conditions, calls, strict=True)
                if not responds
            ]
        return cmap

    def calibrate(self, space: FittedSpace, cmap: ConditionalMap) -> tuple[np.ndarray, np.ndarray] | None:
        """Calibrate each training condition, and pooled over them the zero thresholds (for unseen ones).

        ``None`` for continuous values and an obsm embedding (never calibrated).
        """
        if space.preprocessor is None or not space.preprocessor.expression:
            return None
        return _calibrations(space, cmap, self.conditions, self.spec)


def _check_sizes(control: str, n_control: int, groups: Mapping[ConditionKey, np.ndarray]) -> None:
    """Every group must have :data:`~cellw1.tl.spec.MIN_CELLS` cells; the error lists those short of it."""
    small = {_name(k): len(rows) for k, rows in groups.items() if len(rows) < MIN_CELLS}
    if n_control < MIN_CELLS or small:
        detail = f"control {control!r} has {n_control} cells; " if n_control < MIN_CELLS else ""
        raise InputError(
            f"{detail}conditions with fewer than {MIN_CELLS} cells: {small or 'none'}; "
            "leave them out with perturbations=[...]."
        )


def _name(key: tuple[str, float | None]) -> str:
    """Write a condition ``(label, dose)`` as text."""
    return key[0] if key[1] is None else f"{key[0]} at dose {key[1]:g}"


def _chosen(labels: pd.Series, control: str, perturbations: Sequence[str] | None, key: str) -> list[str]:
    """Choose the perturbations trained on: those given (checked), or every label but the control."""
    if perturbations is None:
        chosen = [p for p in present_labels(labels) if p != control]
    else:
        present = set(present_labels(labels))  # once: a screen gives thousands of perturbations
        for p in perturbations:
            if p not in present:
                check_label(labels, p, "perturbation", key)
        chosen = [p for p in perturbations if p != control]
    if not chosen:
        raise InputError(f"obs[{key!r}] has no perturbation besides the control {control!r}.")
    return chosen


def _doses(obs: pd.DataFrame, dose_key: str | None, labels: pd.Series, chosen: list[str]) -> np.ndarray | None:
    """Read the doses of the cells (``None`` without ``dose_key``); checked on the perturbed cells."""
    if dose_key is None:
        return None
    if dose_key not in obs:
        raise InputError(f"dose key {dose_key!r} is not a column of adata.obs; available: {list(obs.columns)}.")
    column = obs[dose_key]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise InputError(f"obs[{dose_key!r}] must hold numbers (doses), not {column.dtype}.")
    doses = column.to_numpy(dtype=np.float64)
    used = labels.isin(chosen).to_numpy()
    bad = used & ~(np.isfinite(doses) & (doses >= 0))
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} perturbed cells have a missing, infinite or negative dose in obs[{dose_key!r}]; "
            "fix or drop them."
        )
    return doses


def _groups(
    labels: pd.Series, doses: np.ndarray | None, chosen: list[str]
) -> dict[tuple[str, float | None], np.ndarray]:
    """Row numbers of each condition ``(label, dose)``, in the order of ``chosen`` then dose.

    The cells are sorted by label once (not one pass over every cell per label).
    """
    codes, uniques = pd.factorize(labels.to_numpy(), use_na_sentinel=True)
    order = np.argsort(codes, kind="stable")  # rows of each label stay increasing
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    where = {label: k for k, label in enumerate(uniques)}
    groups: dict[tuple[str, float | None], np.ndarray] = {}
    for label in chosen:
        k = where[label]
        rows = order[bounds[k] : bounds[k + 1]]
        if doses is None:
            groups[(label, None)] = rows
        else:
            for dose in np.unique(doses[rows]):
                groups[(label, float(dose))] = rows[doses[rows] == dose]
    return groups


def _label_table(
    uns: Mapping[str, Any] | None, key: str | None, groups: Mapping[tuple[str, float | None], np.ndarray]
) -> tuple[list[str], np.ndarray | None]:
    """Make the label table and, with ``key``, read the vector of every label in ``uns[key]``."""
    members = list(dict.fromkeys(m for label, _ in groups for m in member_labels(label)))
    if key is None or uns is None:
        return members, None
    if key not in uns:
        raise InputError(f"embedding key {key!r} is not in adata.uns; available: {sorted(uns.keys()) or 'none'}.")
    given = uns[key]
    if not isinstance(given, Mapping) or not given:
        raise InputError(f"adata.uns[{key!r}] must be a dict label -> vector, got {type(given).__name__}.")
    missing = [m for m in members if m not in given]
    if missing:
        raise InputError(
            f"adata.uns[{key!r}] has no vector for {len(missing)} trained perturbation(s): {missing[:10]}; add them "
            "or leave those perturbations out."
        )
    table = [*members, *sorted(str(k) for k in given if k not in members)]
    try:
        vectors = np.stack([np.asarray(given[k], dtype=np.float64).ravel() for k in table])
    except (ValueError, TypeError) as exc:
        sizes = sorted({np.asarray(v).size for v in given.values()})
        raise InputError(
            f"the vectors of adata.uns[{key!r}] must all have the same length; found sizes {sizes}."
        ) from exc
    if not np.isfinite(vectors).all():
        raise InputError(f"adata.uns[{key!r}] holds NaN or inf; give finite vectors.")
    return table, vectors.astype(np.float32)


def _dose_curves(with_doses: bool, training: list[dict[str, Any]], space: FittedSpace) -> dict[str, DoseResponse]:
    """Per perturbation with doses, its dose-response curve in the fitted space (:mod:`cellw1.ot.conditional.dose_response`)."""
    if not with_doses:
        return {}
    by_label: dict[str, list[tuple[float, np.ndarray]]] = {}
    for k, condition in enumerate(training):
        by_label.setdefault(condition["label"], []).append((condition["dose"], space.expression_sample(k + 1)))
    base = space.embedding.encode(space.expression_sample(0))
    curves = {}
    for label, samples in by_label.items():
        doses = [dose for dose, _ in samples]
        encoded = [space.embedding.encode(cells) for _, cells in samples]
        curve = fit_dose_response(doses, base, encoded, name=repr(label))
        if curve is not None:
            curves[label] = curve
    return curves


def _interaction_tests(training: list[dict[str, Any]], space: FittedSpace) -> list[dict[str, Any]]:
    """Test each training combination whose members were all trained alone (at its dose).

    Its :func:`~cellw1.ot.conditional.interaction.interaction_test` in the fitted space, on expression
    samples read one group at a time.
    """
    index = {(c["label"], c["dose"]): k for k, c in enumerate(training)}
    base: np.ndarray | None = None
    found = []
    for (label, dose), k in index.items():
        members = member_labels(label)
        if len(members) < 2 or any((m, dose) not in index for m in members):
            continue
        if base is None:
            base = space.embedding.encode(space.expression_sample(0))
        singles = [space.embedding.encode(space.expression_sample(index[(m, dose)] + 1)) for m in members]
        test = interaction_test(base, singles, space.embedding.encode(space.expression_sample(k + 1)))
        found.append({"label": label, "dose": dose, **test.to_dict()})
    return found


def _response_shares(cmap: ConditionalMap, n_conditions: int) -> list[float]:
    """Return the share of its response each training condition's prediction applies.

    With ``shrink_response`` (:mod:`cellw1.ot.effect`) its own test's, else 1, as
    :meth:`ConditionalModel.response_share <cellw1.tl.conditional.model.ConditionalModel.response_share>`.
    """
    effects = cmap.info.get("effects") or []
    if not cmap.config.shrink_response or len(effects) != n_conditions:
        return [1.0] * n_conditions
    return [float((effect or {}).get("resolved", 1.0)) for effect in effects]


def _calibrations(
    space: FittedSpace, cmap: ConditionalMap, conditions: list[Condition], spec: ConditionalSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrate each training condition's predicted controls against its cells.

    Against the controls for a condition without a detected response, a mixture for a share.
    Pooled over conditions (for unseen ones): the zero thresholds only, offsets 0.

    One condition's cells are read at a time, and predicted from a seeded sample of
    ``CALIBRATION_PER_CELL`` control cells per cell of it (``CALIBRATION_MIN`` at least); the pooled calibration keeps
    copies of a share of each (``SAMPLE_CELLS`` to twice that in all), so memory does not grow
    with the number of conditions, and a condition's cost follows its cells. The map does not
    move the cells of a condition without a response, so its calibration (the controls' own)
    is fitted once and shared, and its cells are read only when it gives the pooled calibration
    a share: most of a screen costs nothing here.
    """
    seed, embedding = spec.seed, space.embedding
    control = space.expression_sample(0)
    control = control[spread_sample(np.arange(len(control)), SAMPLE_CELLS, seed)]
    z = embedding.encode(control)
    per = np.empty((len(conditions), 4, control.shape[1]), dtype=np.float32)
    pooled_pred, pooled_obs = [], []
    share = _pooled_share(len(conditions))
    shares = _response_shares(cmap, len(conditions))
    unmoved: np.ndarray | None = None  # the calibration of every condition without a response
    for i, condition in enumerate(conditions):
        method = AtCondition(cmap, condition, shares[i])
        if not method.has_response and not share[i]:
            if unmoved is None:
                unmoved = fit_calibration(embedding.decode(z), control)
            per[i] = unmoved
            continue
        cells = space.expression_sample(i + 1)
        observed = cells[spread_sample(np.arange(len(cells)), SAMPLE_CELLS, seed + 1 + i)]
        size = max(CALIBRATION_MIN, CALIBRATION_PER_CELL * len(observed))
        predicted = embedding.decode(method.predict(z[spread_sample(np.arange(len(z)), size, seed + 1 + i)]))
        # against its cells; the controls for a condition without a response, a mixture for one whose
        # response is applied in part (cellw1.pp.calibration.calibration_target)
        target = calibration_target(control, observed, method.response_share, method.has_response, seed + 1 + i)
        per[i] = fit_calibration(predicted, target)
        if share[i]:  # copies: a slice would keep the condition's whole prediction alive
            pooled_pred.append(predicted[: share[i]].copy())
            pooled_obs.append(observed[: share[i]].copy())
    pooled = fit_calibration(np.concatenate(pooled_pred), np.concatenate(pooled_obs))
    pooled[1] = 0.0
    return per, pooled


def _pooled_share(n_conditions: int) -> np.ndarray:
    """Cells each condition gives the pooled calibration: 50 (or more) from each of at most ``SAMPLE_CELLS // 50``.

    Beyond ``SAMPLE_CELLS // 50`` conditions, evenly spread conditions give 50 each and the
    others none, so the pooled sample stays within ``2 * SAMPLE_CELLS`` cells.
    """
    each = max(SAMPLE_CELLS // max(n_conditions, 1), 50)
    share = np.zeros(n_conditions, dtype=np.int64)
    givers = np.unique(np.linspace(0, n_conditions - 1, min(n_conditions, SAMPLE_CELLS // 50)).round().astype(np.int64))
    share[givers if n_conditions > SAMPLE_CELLS // 50 else np.arange(n_conditions)] = each
    return share
