"""Fitted perturbation models at the AnnData edge: predict, save and load.

A :class:`PerturbationModel` chains three fitted pieces, each from a numerical module:
preprocessing (counts -> log-normalised expression, :mod:`cellw1.pp.preprocessing`), an
embedding (genes, PCA or autoencoder, :mod:`cellw1.pp.embedding`) and a method (:mod:`cellw1.tl.methods`,
e.g. the W1 map) that moves control cells to perturbed cells in the embedding.

A model directory holds ``model.safetensors``: every weight plus, in its header, the JSON
description (genes, preprocessing, embedding, method, config, versions), written atomically
and checksummed; ``model.json`` beside it is a readable copy of that description. A model of a
collection whose models share one embedding refers to the collection's
``embedding.safetensors`` instead of holding its weights (:mod:`cellw1.tl.shared_embedding`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .._version import __version__
from ..errors import InputError, ModelFileError
from ..files.atomic import atomic_write_bytes
from ..files.model_files import FORMATS, check_format, file_format, load_tensors, save_tensors, tensors_under
from ..io.source import feature_matrix, open_source
from ..ot.effect import EffectTest
from ..ot.training import History, combine
from ..pp.calibration import calibrate
from ..pp.embedding import Embedding
from ..pp.preprocessing import Preprocessor
from ..pp.spaces import load_embedding
from .methods import FittedMethod, load_method
from .output import scale_record
from .prediction import PREDICT_CHUNK, predict_cells
from .shared_embedding import SharedEmbedding

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
COLLECTION_FILE = "collection.json"
FORMAT = "cellw1.PerturbationModel"
COLLECTION_FORMAT = "cellw1.ModelCollection"
#: newest model file format read; 2: the embedding may be in the collection's shared file (``embedding_file``)
FORMAT_VERSION = 2
#: format of a model file holding every weight, as written before version 2 (and read by earlier cellw1)
SELF_CONTAINED_VERSION = 1
#: format of ``collection.json``
COLLECTION_FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"cellw1": __version__, "torch": torch.__version__, "numpy": np.__version__, "anndata": version("anndata")}


def check_unique_genes(names: Sequence[str]) -> None:
    """Gene names must be unique (a model aligns genes by name); the error names the repeated ones."""
    index = pd.Index(names)
    if not index.is_unique:
        repeated = list(dict.fromkeys(map(str, index[index.duplicated()])))
        shown = ", ".join(repeated[:10]) + (f" and {len(repeated) - 10} more" if len(repeated) > 10 else "")
        raise InputError(
            f"var_names are not unique ({len(repeated)} repeated: {shown}); "
            "call adata.var_names_make_unique() or drop the duplicates first."
        )


class PerturbationModel:
    """A fitted model predicting perturbed cells from control cells.

    Create it with :func:`cellw1.fit`; use :meth:`predict`, :meth:`save` and :func:`cellw1.load`.

    Attributes
    ----------
    features
        Feature names (genes, or ``{obsm_key}_{i}``) the model reads and writes, in order.
    condition_key, control, perturbation
        Where the groups came from in the training AnnData.
    info
        Fit diagnostics (cells per group, seconds, preprocessing decision...).
    calibration
        Per-gene zero thresholds and offsets of predicted log expression
        (:mod:`cellw1.pp.calibration`); ``None``: negative expression is clipped to 0 only (continuous
        values are never clipped).
    """

    def __init__(
        self,
        *,
        features: list[str],
        preprocessor: Preprocessor | None,
        embedding: Embedding,
        method: FittedMethod,
        condition_key: str,
        control: str,
        perturbation: str,
        layer: str | None = None,
        obsm_key: str | None = None,
        info: dict[str, Any] | None = None,
        calibration: np.ndarray | None = None,
    ) -> None:
        self.features = list(features)
        self.calibration = None if calibration is None else np.asarray(calibration, dtype=np.float32)
        self.preprocessor = preprocessor
        self.embedding = embedding
        self.method = method
        self.condition_key, self.control, self.perturbation = condition_key, control, perturbation
        self.layer, self.obsm_key = layer, obsm_key
        self.info: dict[str, Any] = dict(info or {})

    @property
    def effect(self) -> EffectTest | None:
        """The perturbation's test for a response made by the fit (:mod:`cellw1.ot.effect`); ``None``: none.

        Another fit of the same groups in the same space with the same seed (another method on
        this model's :attr:`embedding`) can follow it instead of testing again:
        ``cellw1.fit(..., embedding=model.embedding, effect=model.effect)``.
        """
        found = self.info.get("effect")
        if not found:
            return None
        return EffectTest(**{**found, "cells": tuple(found["cells"])})

    @property
    def history(self) -> History:
        """Training history of the fit (:mod:`cellw1.ot.training`), saved with the model.

        The method's history as is (``TransportMap.history`` for ``"w1"``: ``potential_*`` and
        ``step_size_*``; ``W2Map.history`` for ``"w2"``), and a trained embedding's with the
        prefix ``autoencoder_``; empty for untrained methods and models saved before histories
        were kept.
        """
        history = dict(self.method.history)
        history.update(combine(**{self.embedding.kind: self.embedding.history}))
        return history

    def __repr__(self) -> str:
        """Name the groups, the method, the space and the response applied."""
        return (
            f"PerturbationModel({self.control!r} -> {self.perturbation!r}, method={self.method.name!r}, "
            f"space={self.embedding.kind!r}, {len(self.features)} features"
            f"{self._response_note()})"
        )

    def _response_note(self) -> str:
        if self.method.name == "identity":
            return ""
        if not self.method.has_response:
            return ", no response detected: predicts the controls"
        share = self.method.response_share
        return f", applies {share:.0%} of the response (the rest is sampling noise)" if share < 1.0 else ""

    # -- prediction (the Predictor contract of cellw1.tl.prediction) ------------------------------
    def feature_columns(self, names: Sequence[str]) -> np.ndarray | None:
        """Positions of :attr:`features` among the data's feature ``names`` (``None``: obsm, in order)."""
        if self.obsm_key is not None:
            if len(names) != len(self.features):
                raise InputError(
                    f"obsm[{self.obsm_key!r}] has {len(names)} columns but the model was fitted on "
                    f"{len(self.features)}."
                )
            return None
        position = pd.Index(names)
        check_unique_genes(position)
        missing = [g for g in self.features if g not in position]
        if missing:
            raise InputError(
                f"{len(missing)} of the model's {len(self.features)} genes are missing from the data "
                f"(first: {missing[:5]}); predict on data measured on the same genes."
            )
        return position.get_indexer(self.features)

    def input_values(self, raw: Any, columns: np.ndarray | None) -> np.ndarray:
        """Rows read from the data, in the model's input space (float32); see :meth:`preprocess`."""
        if columns is None:
            values = np.asarray(raw.toarray() if hasattr(raw, "toarray") else raw, dtype=np.float32)
        else:
            assert self.preprocessor is not None
            values = self.preprocessor.transform(raw[:, columns])
        if not np.isfinite(values).all():
            raise InputError("the data contain NaN or inf; remove or impute those cells first.")
        return values

    def preprocess(self, adata: ad.AnnData | str | os.PathLike) -> np.ndarray:
        """Put ``adata`` in the model's input space, ``(n_cells, n_features)`` float32.

        Log-normalised expression of :attr:`features` (aligned by gene name), or the obsm embedding.
        """
        with open_source(adata, "PerturbationModel.preprocess") as source:
            if source.n_obs == 0:
                raise InputError("the AnnData has no cells; nothing to predict.")
            matrix, names = feature_matrix(source, layer=self.layer, obsm_key=self.obsm_key)
            return self.input_values(matrix.read(np.arange(source.n_obs)), self.feature_columns(names))

    def predict_values(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predict cells (calibrated expression, or the obsm features) and each cell's response.

        ``values`` are rows in the model's input space (:meth:`input_values`).
        """
        if not self.method.has_response:  # no response (identity, or none detected): the input itself, in every space
            return np.array(values, dtype=np.float32, copy=True), np.zeros(len(values), dtype=np.float32)
        z = self.embedding.encode(values)
        response = self.method.response(z)
        predicted = np.asarray(self.embedding.decode(self.method.predict(z)), dtype=np.float32)
        if self.expression:  # expression: non-negative, calibrated; continuous values stay as the map gives them
            predicted = calibrate(predicted, self.calibration)
        return predicted, response

    @property
    def expression(self) -> bool:
        """Whether predictions are expression (counts or log-normalised input): non-negative, calibrated."""
        return self.preprocessor is not None and self.preprocessor.expression

    def output_uns(self) -> dict[str, Any]:
        """``uns["cellw1"]`` of a prediction: the scale and the model (:func:`cellw1.tl.output.scale_record`)."""
        return scale_record(self, self.output_kind())

    def output_kind(self) -> str | None:
        """Say how the written values are made (:mod:`cellw1.tl.output`).

        ``"unchanged"`` (the input, no response), ``"calibrated"`` or ``"clipped"`` at 0
        (expression), ``"raw"`` (continuous values as the map gives them) or ``None`` (obsm).
        """
        if self.preprocessor is None:
            return None
        if not self.method.has_response:
            return "unchanged"
        if not self.preprocessor.expression:
            return "raw"
        return "clipped" if self.calibration is None else "calibrated"

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
        """Predict the perturbed state of the cells in ``adata`` (never modified).

        Parameters
        ----------
        adata
            An AnnData in memory, or data on disk: a path to an ``.h5ad`` / ``.zarr``, or an
            AnnData opened with ``backed="r"``; every kind is read ``chunk_cells`` cells at a
            time (:mod:`cellw1.tl.prediction`).
        out
            ``None``: return the predictions. A path ending in ``.h5ad`` or ``.zarr``: write
            them there ``chunk_cells`` cells at a time, so memory does not grow with the
            number of cells; the file appears in one rename when complete (atomic).
        cells
            Predict only these cells: a boolean mask over the cells, or increasing row
            numbers (for data on disk, e.g. ``np.flatnonzero(obs[key] == control)``).
            ``None``: every cell.
        chunk_cells
            Cells predicted at once.
        progress
            Show a progress bar over the chunks.
        key_added
            Instead of a new AnnData of predicted cells, return a copy of the input (the chosen
            ``cells``, every gene) with the prediction in ``layers[key_added]`` (``obsm`` for
            an obsm model), as scanpy tools add results: ``X`` and the rest of the input are
            unchanged, genes the model does not cover are NaN in the layer (see
            :func:`cellw1.tl.output.add_prediction`). In memory only (no ``out``).
        with_controls
            Also write the input cells themselves, on the model's scale (log1p-normalised with
            its ``target_sum``) and labelled as the control in ``obs[condition_key]``, after the
            predicted cells, which are then labelled as the perturbation there: one file that
            pairs predicted and control cells, as ``cell-eval run`` and scanpy's
            ``rank_genes_groups`` expect. The control rows are named ``{cell}-{control}``
            and have ``response`` 0. Used by ``cellw1 predict --controls-only``.

        Returns
        -------
        anndata.AnnData or pathlib.Path
            A new AnnData (or the path it was written to), one predicted cell per input cell:
            ``X`` holds the prediction in the model's feature space (log-normalised
            expression of :attr:`features`, or the obsm features); ``obs`` copies the input's
            obs and adds ``source_cell`` (input cell id), ``perturbation`` and ``response``
            (distance the cell moved in the fitted space); ``uns["cellw1"]`` records the scale
            and the model (:mod:`cellw1.tl.output`).
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

    def output_obs(self, obs: pd.DataFrame) -> pd.DataFrame:
        """Copy the input cells' obs, with ``source_cell`` (the input cell's name) and ``perturbation``."""
        result = obs.copy()
        result["source_cell"] = np.asarray(obs.index, dtype=str)
        result["perturbation"] = self.perturbation
        return result

    # -- files -------------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every weight of the model by name, as saved in ``model.safetensors``."""
        tensors = {f"embedding.{k}": v for k, v in self.embedding.state_tensors().items()}
        tensors.update({f"method.{k}": v for k, v in self.method.state_tensors().items()})
        if self.calibration is not None:
            tensors["output.calibration"] = torch.from_numpy(self.calibration)
        return tensors

    def header(self) -> dict[str, Any]:
        """Describe the model as JSON (everything but the weights)."""
        return {
            **shared_header(self, FORMAT, SELF_CONTAINED_VERSION),
            "perturbation": self.perturbation,
            "obsm_key": self.obsm_key,
            "method": self.method.header(),
            "output": self.output_kind(),
        }

    def save(self, directory: str | os.PathLike, *, shared_embedding: SharedEmbedding | None = None) -> Path:
        """Write the model to ``directory`` (created if needed); atomic, no pickle.

        ``shared_embedding``: the collection's file holding this model's embedding (written
        first); the model file then refers to it instead of holding the embedding's weights.
        """
        tensors, header = self.tensors(), self.header()
        if shared_embedding is not None:
            tensors = {k: v for k, v in tensors.items() if not k.startswith("embedding.")}
            header.update(format_version=FORMAT_VERSION, embedding_file=shared_embedding.reference(self.embedding))
        return write_model(directory, tensors, header)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, *, shared_embedding: SharedEmbedding | None = None
    ) -> PerturbationModel:
        """Load a model written by :meth:`save`.

        A model of a collection that stores its embedding once reads it from its parent
        directory, or from ``shared_embedding`` (which the collection's models then share).
        """
        parts = model_parts(directory, "PerturbationModel", FORMAT, FORMAT_VERSION, shared_embedding)
        with parts as (tensors, header, shared):
            return cls(
                **shared,
                method=load_method(tensors_under(tensors, "method."), header["method"]),
                perturbation=header["perturbation"],
                obsm_key=header.get("obsm_key"),
            )


def shared_header(model: Any, fmt: str, version: int) -> dict[str, Any]:
    """Describe what every model kind has, as JSON: the header fields :func:`model_parts` reads back.

    ``model`` has ``features``, ``condition_key``, ``control``, ``layer``, ``preprocessor``,
    ``embedding`` and ``info``; ``fmt`` and ``version`` name its file format.
    """
    return {
        "format": fmt,
        "format_version": version,
        "versions": _versions(),
        "features": model.features,
        "condition_key": model.condition_key,
        "control": model.control,
        "layer": model.layer,
        "preprocessing": None if model.preprocessor is None else model.preprocessor.to_dict(),
        "embedding": model.embedding.header(),
        "info": model.info,
    }


def write_model(directory: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Write a model directory: ``model.safetensors`` (atomic, checksummed) and ``model.json``.

    ``model.json`` is a readable copy of the header; a directory holding a collection is refused.
    """
    directory = Path(directory)
    if (directory / COLLECTION_FILE).exists():
        raise InputError(f"{str(directory)!r} holds a collection of models; save this model to another directory.")
    save_tensors(directory / MODEL_FILE, tensors, header)
    atomic_write_bytes(directory / "model.json", json.dumps(header, indent=2, sort_keys=True).encode())
    return directory


@contextlib.contextmanager
def model_parts(
    directory: str | os.PathLike, kind: str, fmt: str, version: int, shared_embedding: SharedEmbedding | None = None
) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]]:
    """Read a model directory's file: ``(tensors, header, parts)``.

    ``parts`` are the constructor arguments every model kind shares (features, preprocessing, embedding, groups,
    layer, info, calibration). Errors in the block that uses them become a ModelFileError. An embedding
    kept in a collection's shared file is read from ``shared_embedding`` (default: the parent directory's).
    """
    directory = Path(directory)
    if directory.is_dir() and not (directory / MODEL_FILE).exists():
        raise ModelFileError(f"{str(directory)!r} has no {MODEL_FILE}; it is not a cellw1 model directory.")
    if directory.is_file():
        raise ModelFileError(file_instead_of_directory(directory))
    tensors, header = load_tensors(directory / MODEL_FILE, kind=kind)
    source = f"{str(directory / MODEL_FILE)!r}"
    check_format(header, fmt, version, source=source)
    try:
        pre = header["preprocessing"]
        if "embedding_file" in header:
            shared = SharedEmbedding(directory.parent) if shared_embedding is None else shared_embedding
            embedding = shared.read(header["embedding_file"], header["embedding"], source)
        else:
            embedding = load_embedding(tensors_under(tensors, "embedding."), header["embedding"])
        yield (
            tensors,
            header,
            {
                "features": header["features"],
                "preprocessor": None if pre is None else Preprocessor.from_dict(pre),
                "embedding": embedding,
                "condition_key": header["condition_key"],
                "control": header["control"],
                "layer": header.get("layer"),
                "info": header.get("info"),
                "calibration": tensors["output.calibration"].numpy() if "output.calibration" in tensors else None,
            },
        )
    except ModelFileError:
        raise
    except Exception as exc:  # a well-formed file whose content does not fit together
        raise ModelFileError(
            f"model in {str(directory)!r} is inconsistent ({type(exc).__name__}: {exc}); refit it."
        ) from exc


def file_instead_of_directory(path: Path) -> str:
    """Say what a file handed to :func:`load` holds, and how to load it."""
    if path.suffix == ".safetensors":
        kind = file_format(path)
        if kind is not None and kind != FORMAT:
            what = FORMATS.get(kind, f"a file of format {kind!r}")
            return f"{str(path)!r} is not a model directory: it holds {what}."
    return f"{str(path)!r} is a file; cellw1.load reads a model directory written by model.save(directory)."
