"""``cellw1.fit_conditional``: AnnData in, one W1 model for many perturbations out.

Every perturbed cell belongs to a *condition*: its label in ``obs[condition_key]`` (several
perturbations applied together are written ``"A+B"``) and, with ``dose_key``, its dose. One
preprocessing and one embedding are fitted on the control cells and the cells of every
condition together; one :class:`~cellw1.ot.conditional.ConditionalMap` learns the control ->
condition maps of all of them (:mod:`cellw1.ot.conditional_solver`); the output of each
training condition is calibrated with its own cells (:mod:`cellw1.pp.calibration`).
Like :func:`cellw1.fit` it reads a :class:`~cellw1.io.source.Source` by rows only: in memory
every group is one buffer, from disk (a path, or a backed AnnData) each group is streamed in
buffers (:class:`~cellw1.ot.sampling.StreamedCells`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from ..checks import check_seed, resolve_device
from ..errors import ConfigError, InputError
from ..io.source import MemorySource, Source, feature_matrix, open_source
from ..ot.condition import Condition
from ..ot.conditional import ConditionalConfig
from ..ot.conditional_solver import fit_conditional_map
from ..ot.config import W1Config
from ..ot.dose_response import DoseResponse, fit_dose_response
from ..ot.sampling import BUFFER_CELLS, StreamedCells
from ..pp.calibration import SAMPLE_CELLS, calibration_target, fit_calibration
from ..pp.embedding import Embedding, EmbeddingConfig
from ..pp.labels import label_text, present_labels
from ..pp.preprocessing import Assumption, Preprocessor, fit_preprocessor_streaming
from ..pp.spaces import check_space, fit_embedding
from .api import MIN_CELLS, check_label, condition_labels
from .conditional_model import ConditionalModel, member_labels
from .model import check_unique_genes
from .pipeline import DETECTION_ROWS, EMBEDDING_CELLS, row_blocks, spread_sample

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)


def fit_conditional(
    adata: ad.AnnData | str | os.PathLike,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | None = None,
    dose_key: str | None = None,
    embedding_key: str | None = None,
    space: Literal["genes", "pca", "autoencoder"] = "pca",
    config: ConditionalConfig | W1Config | None = None,
    seed: int = 0,
    *,
    layer: str | None = None,
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
        streamed in buffers of ``buffer_cells`` per group (``X`` is never loaded; spaces
        ``"pca"`` and ``"genes"``; no ``embedding_key``, which reads ``adata.uns``).
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
        (:mod:`cellw1.ot.dose_response`) when it has one.
    embedding_key
        A key of ``adata.uns`` holding a dict ``label -> vector`` (gene or drug embeddings):
        labels are encoded from their vectors, so a perturbation that has a vector but no
        cells can be predicted. ``None``: one learned code per label.
    space
        ``"pca"`` (default), ``"genes"`` or ``"autoencoder"``; predictions are in gene space.
    config
        :class:`~cellw1.ot.conditional.ConditionalConfig` (a plain ``W1Config`` is converted).
    seed
        Seed of every random choice.
    layer, embedding_config, input_kind, progress, buffer_cells
        As for :func:`cellw1.fit`.
    """
    with open_source(adata, "cellw1.fit_conditional") as source:
        return _fit(
            source,
            condition_key,
            control,
            perturbations,
            dose_key,
            embedding_key,
            space,
            config,
            seed,
            layer=layer,
            embedding_config=embedding_config,
            input_kind=input_kind,
            progress=progress,
            buffer_cells=buffer_cells,
        )


def _fit(
    source: Source,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | None,
    dose_key: str | None,
    embedding_key: str | None,
    space: str,
    config: Any,
    seed: int,
    *,
    layer: str | None,
    embedding_config: EmbeddingConfig | None,
    input_kind: Any,
    progress: bool,
    buffer_cells: int | None,
    gate: Callable[[list[StreamedCells]], Sequence[bool]] | None = None,
) -> ConditionalModel:
    """:func:`fit_conditional` on an opened :class:`~cellw1.io.source.Source` (memory or disk).

    ``gate``: given the cells of the control group and of every condition (in the fitted space),
    whether each condition moves; it replaces the per-condition effect test of the config (a
    screen's calls, :func:`cellw1.tl.screen.screen`)."""
    check_space(space)
    seed = check_seed(seed)
    if config is None:
        config = ConditionalConfig()
    elif type(config) is W1Config:
        config = ConditionalConfig.from_w1(config)
    elif not isinstance(config, ConditionalConfig):
        raise ConfigError(f"config must be a ConditionalConfig (or W1Config), got {type(config).__name__}.")
    control = label_text(control)
    labels = condition_labels(source, condition_key)
    check_label(labels, control, "control", condition_key)
    chosen = _chosen(labels, control, perturbations, condition_key)
    doses = _doses(source.obs, dose_key, labels, chosen)
    groups = _groups(labels, doses, chosen)
    small = {_name(k): len(rows) for k, rows in groups.items() if len(rows) < MIN_CELLS}
    n_control = int((labels == control).sum())
    if n_control < MIN_CELLS or small:
        detail = f"control {control!r} has {n_control} cells; " if n_control < MIN_CELLS else ""
        raise InputError(
            f"{detail}conditions with fewer than {MIN_CELLS} cells: {small or 'none'}; leave them out with perturbations=[...]."
        )
    uns = source.adata.uns if isinstance(source, MemorySource) else None
    if uns is None and embedding_key is not None:
        raise InputError(
            "embedding_key reads adata.uns, which a file on disk is not opened for; load the AnnData "
            "(anndata.read_h5ad) to fit with label vectors."
        )
    table, vectors = _label_table(uns, embedding_key, groups)
    check_unique_genes(source.var_names)
    start = time.perf_counter()
    control_rows = np.flatnonzero((labels == control).to_numpy())
    if gate is not None:
        config = config.replace(effect_alpha=None)
    preprocessor, embedding, cells, sample, features = _pipeline(
        source,
        control_rows,
        list(groups.values()),
        layer=layer,
        space=space,
        config=config,
        embedding_config=embedding_config,
        input_kind=input_kind,
        seed=seed,
        progress=progress,
        buffer_cells=buffer_cells,
    )
    conditions = [Condition(tuple(table.index(m) for m in member_labels(label)), None, dose) for label, dose in groups]
    moves = None if gate is None else list(gate(cells))
    cmap = fit_conditional_map(
        cells[0], cells[1:], conditions, config, seed, n_labels=len(table), label_vectors=vectors, progress=progress
    )
    if moves is not None:  # the gate's calls: a condition without a response leaves its cells where they are
        cmap.still = [
            Condition(tuple(sorted(c.labels)), None, c.dose) for c, m in zip(conditions, moves, strict=True) if not m
        ]
    info: dict[str, Any] = {
        "n_control": len(control_rows),
        "seed": seed,
        "input_kind": preprocessor.input_kind,
        "input_kind_reason": preprocessor.reason,
        "fit_seconds": time.perf_counter() - start,
    }
    model = ConditionalModel(
        features=features,
        preprocessor=preprocessor,
        embedding=embedding,
        cmap=cmap,
        condition_key=condition_key,
        control=control,
        labels=table,
        dose_key=dose_key,
        embedding_key=embedding_key,
        layer=layer,
        info=info,
        conditions=[{"label": label, "dose": dose, "n_cells": len(group)} for (label, dose), group in groups.items()],
        calibration=None,
        pooled_calibration=None,
    )
    model.dose_curves = _dose_curves(model, sample)
    if preprocessor.expression:  # continuous values (any sign) are never calibrated
        model.calibration, model.pooled_calibration = _calibrations(model, sample, seed)
    model.interactions = model.test_interactions(sample)
    model.info["seconds_with_calibration"] = time.perf_counter() - start
    return model


def _pipeline(
    source: Source,
    control_rows: np.ndarray,
    groups: list[np.ndarray],
    *,
    layer: str | None,
    space: str,
    config: ConditionalConfig,
    embedding_config: EmbeddingConfig | None,
    input_kind: Any,
    seed: int,
    progress: bool,
    buffer_cells: int | None,
) -> tuple[Preprocessor, Embedding, list[StreamedCells], Callable[[int], np.ndarray], list[str]]:
    """The steps of :func:`~cellw1.tl.pipeline.fit_pipeline` for many groups, reading rows only:
    normalisation in one pass, PCA on a sample of rows, every group (control first) as a
    :class:`~cellw1.ot.sampling.StreamedCells` sampler, and the reader of each group's expression
    sample for the calibration (group ``k``, control ``0``: read when needed, never all held at once)."""
    if space == "autoencoder" and not source.in_memory:
        raise InputError(
            "fit_conditional streams from disk in 'pca' or 'genes' space; load the data for 'autoencoder'."
        )
    if buffer_cells is None:  # in memory every cell is held already; from disk one buffer per group
        buffer_cells = max(source.n_obs, 1) if source.in_memory else BUFFER_CELLS
    elif isinstance(buffer_cells, bool) or not isinstance(buffer_cells, int | np.integer) or buffer_cells < 1:
        raise ConfigError(f"buffer_cells={buffer_cells!r} must be an integer >= 1 (cells of each group held at once).")
    matrix, features = feature_matrix(source, layer=layer, obsm_key=None)
    rows = np.sort(np.concatenate([control_rows, *groups]))
    preprocessor = fit_preprocessor_streaming(
        lambda: row_blocks(matrix, rows), matrix.read(spread_sample(rows, DETECTION_ROWS, seed)), assume=input_kind
    )
    if space == "autoencoder":
        embedding = fit_embedding(
            space, preprocessor.transform(matrix.read(rows)), config=embedding_config, seed=seed, progress=progress
        )
    else:
        sample = spread_sample(rows, EMBEDDING_CELLS if space == "pca" else 2, seed)
        embedding = fit_embedding(
            space, preprocessor.transform(matrix.read(sample)), config=embedding_config, seed=seed, progress=progress
        )

    def transform(raw: Any) -> np.ndarray:
        return embedding.encode(preprocessor.transform(raw))

    device = resolve_device(config.device)
    cells = [
        StreamedCells(
            matrix, group, transform, embedding.dim, buffer_cells=int(buffer_cells), seed=seed + k, device=device
        )
        for k, group in enumerate([control_rows, *groups])
    ]
    every = [control_rows, *groups]

    def sample(k: int) -> np.ndarray:
        return preprocessor.transform(matrix.read(spread_sample(every[k], SAMPLE_CELLS, seed + k)))

    return preprocessor, embedding, cells, sample, features


def _name(key: tuple[str, float | None]) -> str:
    return key[0] if key[1] is None else f"{key[0]} at dose {key[1]:g}"


def _chosen(labels: pd.Series, control: str, perturbations: Sequence[str] | None, key: str) -> list[str]:
    if perturbations is None:
        chosen = [p for p in present_labels(labels) if p != control]
    else:
        chosen = list(
            dict.fromkeys(label_text(p) for p in ([perturbations] if isinstance(perturbations, str) else perturbations))
        )
        for p in chosen:
            check_label(labels, p, "perturbation", key)
        chosen = [p for p in chosen if p != control]
    if not chosen:
        raise InputError(f"obs[{key!r}] has no perturbation besides the control {control!r}.")
    return chosen


def _doses(obs: pd.DataFrame, dose_key: str | None, labels: pd.Series, chosen: list[str]) -> np.ndarray | None:
    """The doses of the cells (``None`` without ``dose_key``); checked on the perturbed cells."""
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
    """Row numbers of each condition ``(label, dose)``, in the order of ``chosen`` then dose."""
    values = labels.to_numpy()
    groups: dict[tuple[str, float | None], np.ndarray] = {}
    for label in chosen:
        rows = np.flatnonzero(values == label)
        if doses is None:
            groups[(label, None)] = rows
        else:
            for dose in np.unique(doses[rows]):
                groups[(label, float(dose))] = rows[doses[rows] == dose]
    return groups


def _label_table(
    uns: Mapping[str, Any] | None, key: str | None, groups: Mapping[tuple[str, float | None], np.ndarray]
) -> tuple[list[str], np.ndarray | None]:
    """The label table and, with ``key``, the vector of every label in ``uns[key]``."""
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


def _dose_curves(model: ConditionalModel, sample: Callable[[int], np.ndarray]) -> dict[str, DoseResponse]:
    """Per perturbation with doses, its dose-response curve in the fitted space (:mod:`cellw1.ot.dose_response`)."""
    if model.dose_key is None:
        return {}
    by_label: dict[str, list[tuple[float, np.ndarray]]] = {}
    for k, condition in enumerate(model.conditions):
        by_label.setdefault(condition["label"], []).append((condition["dose"], sample(k + 1)))
    base = model.embedding.encode(sample(0))
    curves = {}
    for label, groups in by_label.items():
        doses = [dose for dose, _ in groups]
        curve = fit_dose_response(doses, base, [model.embedding.encode(c) for _, c in groups], name=repr(label))
        if curve is not None:
            curves[label] = curve
    return curves


def _calibrations(
    model: ConditionalModel, sample: Callable[[int], np.ndarray], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per training condition: the calibration of its predicted controls against its cells (against the
    controls for a condition without a detected response, a mixture for a share). Pooled over
    conditions (for unseen ones): the zero thresholds only, offsets 0.

    One condition's cells are read at a time; the pooled calibration keeps copies of a share of
    each (``SAMPLE_CELLS`` cells in all), so memory does not grow with the number of conditions."""
    control = sample(0)
    control = control[spread_sample(np.arange(len(control)), SAMPLE_CELLS, seed)]
    z = model.embedding.encode(control)
    per, pooled_pred, pooled_obs = [], [], []
    n_conditions = len(model.conditions)
    share = max(SAMPLE_CELLS // max(n_conditions, 1), 50)
    for i, condition in enumerate(model.conditions):
        cells = sample(i + 1)
        view = model.view(condition["label"], condition["dose"], compose=False)
        predicted = model.embedding.decode(view.method.predict(z))
        observed = cells[spread_sample(np.arange(len(cells)), SAMPLE_CELLS, seed + 1 + i)]
        # against its cells; the controls for a condition without a response, a mixture for one whose
        # response is applied in part (cellw1.pp.calibration.calibration_target)
        target = calibration_target(control, observed, view.method.resolved, view.method.moves, seed + 1 + i)
        per.append(fit_calibration(predicted, target))
        # copies: a slice would keep the whole (SAMPLE_CELLS x genes) prediction of every condition alive
        pooled_pred.append(predicted[:share].copy())
        pooled_obs.append(observed[:share].copy())
    pooled = fit_calibration(np.concatenate(pooled_pred), np.concatenate(pooled_obs))
    pooled[1] = 0.0
    return np.stack(per), pooled
