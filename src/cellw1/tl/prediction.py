"""Prediction: fitted models applied to the rows of a source, a chunk at a time, into one writer.

:meth:`PerturbationModel.predict <cellw1.tl.model.PerturbationModel.predict>` and
:meth:`ModelCollection.predict <cellw1.tl.collection.ModelCollection.predict>` both come here.
The cells are read from a :class:`~cellw1.io.source.Source` (an AnnData in memory, a backed
AnnData, an ``.h5ad`` or ``.zarr`` path) ``chunk_cells`` rows at a time, and each predicted
chunk goes to one writer: an array in memory, or :class:`~cellw1.io.writer.PredictionWriter`,
which writes a file a block of rows at a time and renames it into place when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from ..errors import InputError
from ..files.outputs import check_output
from ..io.source import Matrix, check_data_kind, disk_path, feature_matrix, is_on_disk, open_source
from ..io.writer import PredictionWriter
from ..pp.labels import label_series
from .output import add_prediction, check_key_added

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

#: cells predicted at once
PREDICT_CHUNK = 16_384


class Predictor(Protocol):
    """What a fitted model offers to prediction (:func:`predict_source`, :func:`predict_cells`).

    :class:`~cellw1.tl.model.PerturbationModel` and the views of a conditional model
    (:class:`~cellw1.tl.conditional.views.ConditionView`) both are one: they read the same
    columns, predict values in their input space, and describe their output's obs and uns.
    """

    @property
    def features(self) -> list[str]:
        """Feature names read and written, in order (genes, or ``{obsm_key}_{i}``)."""
        ...

    @property
    def layer(self) -> str | None:
        """The layer read instead of ``X`` (``None``: ``X``)."""
        ...

    @property
    def obsm_key(self) -> str | None:
        """The obsm embedding read instead of expression (``None``: expression)."""
        ...

    @property
    def condition_key(self) -> str:
        """The obs column of the training conditions."""
        ...

    @property
    def control(self) -> str:
        """The control label."""
        ...

    @property
    def perturbation(self) -> str:
        """The label of what is predicted."""
        ...

    @property
    def expression(self) -> bool:
        """Whether the values are expression (non-negative, calibrated) rather than continuous."""
        ...

    def feature_columns(self, names: Sequence[str]) -> np.ndarray | None:
        """Positions of :attr:`features` among the data's feature ``names`` (``None``: all, in order)."""
        ...

    def input_values(self, raw: Any, columns: np.ndarray | None) -> np.ndarray:
        """Rows read from the data ``(n, all features)`` in the input space ``(n, len(features))``."""
        ...

    def predict_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted cells ``(n, len(features))`` and each cell's response ``(n,)``, from input values."""
        ...

    def output_obs(self, obs: pd.DataFrame) -> pd.DataFrame:
        """Obs of the predicted cells, from the input cells' obs (not modified)."""
        ...

    def output_uns(self) -> dict[str, Any]:
        """``uns["cellw1"]`` of a prediction: its scale and the model (:mod:`cellw1.tl.output`)."""
        ...


def warn_not_control(model: Predictor, obs: pd.DataFrame) -> None:
    """Log a warning when input cells are labelled other than the model's control."""
    if model.condition_key in obs:
        labels = label_series(obs[model.condition_key], key=model.condition_key, warn=False)
        others = int((labels != model.control).sum())
        if others:
            logger.warning(
                "%d of %d input cells are not labelled %r in obs[%r]; predicting them as if they were controls.",
                others,
                len(labels),
                model.control,
                model.condition_key,
            )


def paired_obs(model: Predictor, predicted: pd.DataFrame) -> pd.DataFrame:
    """Obs of the predicted cells (labelled the perturbation) followed by their input cells (labelled the control)."""
    controls = predicted.copy()
    controls.index = [f"{cell}-{model.control}" for cell in predicted.index]
    controls["perturbation"] = model.control
    paired = pd.concat([predicted, controls])
    labels = [model.perturbation] * len(predicted) + [model.control] * len(controls)
    paired[model.condition_key] = pd.Categorical(labels, categories=[model.control, model.perturbation])
    return paired


def measured_values(model: Predictor, values: np.ndarray) -> np.ndarray:
    """Input cells on the model's scale (what ``with_controls`` writes): expression clipped at 0."""
    return np.asarray(np.maximum(values, 0) if model.expression else values, dtype=np.float32)


class _ArrayWriter:
    """The in-memory twin of :class:`~cellw1.io.writer.PredictionWriter`: blocks of rows into one array."""

    def __init__(self, n_cells: int, n_features: int) -> None:
        self.x = np.empty((n_cells, n_features), dtype=np.float32)

    def write(self, start: int, block: np.ndarray) -> None:
        self.x[start : start + len(block)] = block


def chosen_rows(cells: np.ndarray | None, n_obs: int) -> np.ndarray:
    """Row numbers of the cells to predict: all, a boolean mask's, or increasing indices."""
    if cells is None:
        return np.arange(n_obs)
    chosen = np.asarray(cells)
    if chosen.dtype == bool:
        if chosen.shape != (n_obs,):
            raise InputError(f"the cells mask has shape {chosen.shape}; it needs one entry per cell ({n_obs}).")
        chosen = np.flatnonzero(chosen)
    elif not np.issubdtype(chosen.dtype, np.integer) or chosen.ndim != 1:
        raise InputError("cells must be a boolean mask or a 1-D array of row numbers.")
    if len(chosen) == 0:
        raise InputError("no cells were chosen; nothing to predict.")
    if (np.diff(chosen) <= 0).any() or chosen[0] < 0 or chosen[-1] >= n_obs:
        raise InputError(f"cells must be increasing row numbers between 0 and {n_obs - 1}; sort and deduplicate them.")
    return chosen.astype(np.int64)


def _shared_features(models: Sequence[Predictor]) -> list[str]:
    """Return the features every model writes, in the first model's order (an inner join, as ``anndata.concat``)."""
    others = [set(model.features) for model in models[1:]]
    shared = [f for f in models[0].features if all(f in other for other in others)]
    if not shared:
        raise InputError("the models share no feature (gene); predict with each model on its own.")
    return shared


def stacked_record(records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """``uns["cellw1"]`` of stacked predictions: each model's record (scale, model) in one.

    A field every model shares is given once; one that differs (``perturbation``, the weights'
    checksum, a ``target_sum`` of its own, ...) is a list in the order of ``labels``, the
    categories of ``obs["_prediction"]``. A missing value in such a list is NaN for a number
    and ``"None"`` otherwise, as ``.h5ad`` and ``.zarr`` store lists of one type.
    """
    record: dict[str, Any] = {}
    for key in records[0]:
        values = [entry.get(key) for entry in records]
        if key != "perturbation" and all(value == values[0] for value in values):
            record[key] = values[0]
        elif all(value is None or isinstance(value, int | float) for value in values):
            record[key] = [np.nan if value is None else float(value) for value in values]
        else:
            record[key] = [str(value) for value in values]
    record["perturbation"] = [str(label) for label in labels]
    return record


def predict_source(
    models: Mapping[str, Predictor],
    data: ad.AnnData | str | os.PathLike,
    *,
    stacked: bool,
    out: str | os.PathLike | None,
    cells: np.ndarray | None,
    chunk_cells: int,
    progress: bool,
    what: str,
    with_controls: bool = False,
) -> ad.AnnData | Path:
    """Predict the chosen cells of ``data`` with every model of ``models`` (label -> model).

    ``stacked=False`` (one model): one predicted cell per input cell, ``uns["cellw1"]`` describes
    the model. ``stacked=True``: the models' predictions one after the other, cells named
    ``"<cell>-<label>"`` and labelled in ``obs["_prediction"]``, as ``anndata.concat`` stacks
    them, ``uns["cellw1"]`` describing every model (:func:`stacked_record`). ``with_controls``
    (one model only): the input cells on the model's scale follow the predicted ones, labelled
    as the control (``PerturbationModel.predict``). Returns the AnnData, or the path of ``out``
    once it is written.
    """
    import anndata as ad
    from tqdm.auto import tqdm

    check_data_kind(data, what)
    if isinstance(chunk_cells, bool) or not isinstance(chunk_cells, int | np.integer) or chunk_cells < 1:
        raise InputError(f"chunk_cells={chunk_cells!r} must be an integer >= 1.")
    chunk = int(chunk_cells)
    if out is not None:
        suffix = Path(out).suffix.lower()
        check_output(out, kind="store" if suffix == ".zarr" else "file", inputs=[disk_path(data)])
    labels, fitted = list(models), list(models.values())
    with open_source(data, what) as source:
        rows = chosen_rows(cells, source.n_obs)
        obs = source.obs.iloc[rows]
        if len(obs) == 0:
            raise InputError("the data have no cells; nothing to predict.")
        reads: list[tuple[Matrix, np.ndarray | None, np.ndarray | None]] = []
        features = _shared_features(fitted)
        for model in fitted:
            matrix, names = feature_matrix(source, layer=model.layer, obsm_key=model.obsm_key)
            keep = None if features == model.features else pd.Index(model.features).get_indexer(features)
            reads.append((matrix, model.feature_columns(names), keep))
        n = len(rows)
        if stacked:
            parts = [
                model.output_obs(obs).set_axis([f"{name}-{label}" for name in obs.index])
                for label, model in models.items()
            ]
            result_obs = pd.concat([part.assign(response=np.float32(0)) for part in parts])
            result_obs["_prediction"] = pd.Categorical(np.repeat(labels, n), categories=labels)
            uns: dict[str, Any] = {"cellw1": stacked_record([model.output_uns() for model in fitted], labels)}
        else:
            result_obs, uns = fitted[0].output_obs(obs), {"cellw1": fitted[0].output_uns()}
            if with_controls:
                result_obs = paired_obs(fitted[0], result_obs)
        response = np.zeros(len(result_obs), dtype=np.float32)
        var = pd.DataFrame(index=features)
        with contextlib.ExitStack() as stack:
            writer: PredictionWriter | _ArrayWriter
            in_memory: _ArrayWriter | None = None
            if out is None:
                writer = in_memory = _ArrayWriter(len(result_obs), len(features))
            else:
                writer = stack.enter_context(PredictionWriter(out, obs=result_obs, var=var, uns=uns))
            bar = stack.enter_context(tqdm(total=len(fitted) * n, desc="predict", disable=not progress, leave=False))
            for k, (model, (matrix, columns, keep)) in enumerate(zip(fitted, reads, strict=False)):
                warn_not_control(model, obs)
                for start in range(0, n, chunk):
                    stop = min(start + chunk, n)
                    values = model.input_values(matrix.read(rows[start:stop]), columns)
                    predicted, response[k * n + start : k * n + stop] = model.predict_values(values)
                    writer.write(k * n + start, predicted if keep is None else predicted[:, keep])
                    if with_controls and not stacked:  # the input cells, after the predicted ones
                        writer.write(n + start, measured_values(model, values))
                    bar.update(stop - start)
            result_obs["response"] = response  # written with obs when the writer commits
    if out is not None:
        logger.info("wrote %d predicted cells to %s", len(result_obs), out)
        return Path(out)
    assert in_memory is not None
    result = ad.AnnData(X=in_memory.x, obs=result_obs, var=var)
    result.uns.update(uns)
    return result


def predict_cells(
    model: Predictor,
    adata: ad.AnnData | str | os.PathLike,
    *,
    out: str | os.PathLike | None,
    cells: np.ndarray | None,
    chunk_cells: int,
    progress: bool,
    key_added: str | None,
    with_controls: bool,
    what: str,
) -> ad.AnnData | Path:
    """Predict as ``model.predict`` does (:meth:`cellw1.tl.model.PerturbationModel.predict` documents the keywords)."""
    data: ad.AnnData | str | os.PathLike = adata
    if key_added is not None:  # the chosen cells of an AnnData in memory, predicted into a copy of them
        check_key_added(key_added)
        if with_controls:
            raise InputError("key_added adds the prediction as a layer; with_controls does not apply, drop it.")
        if out is not None or is_on_disk(adata):
            raise InputError(
                "key_added adds the prediction to a copy of an AnnData in memory; for data on disk or out=, "
                "leave key_added out (the prediction is written as X)."
            )
        check_data_kind(adata, what)
        assert not isinstance(adata, str | os.PathLike)
        data, cells = (adata if cells is None else adata[chosen_rows(cells, adata.n_obs)]), None
    predicted = predict_source(
        {model.perturbation: model},
        data,
        stacked=False,
        out=out,
        cells=cells,
        chunk_cells=chunk_cells,
        progress=progress,
        what=what,
        with_controls=with_controls,
    )
    if key_added is None:
        return predicted
    assert not isinstance(predicted, Path)
    assert not isinstance(data, str | os.PathLike)
    return add_prediction(data, predicted, key_added, obsm=model.obsm_key is not None)
