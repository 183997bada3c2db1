"""Collections of perturbation models: one directory, grown one model at a time, resumable.

A collection directory holds one model sub-folder per perturbation plus ``collection.json``,
the index (written last, atomically) that lists the complete models and the fit settings.
When the models share one embedding (``fit_all(..., shared_space=True)``), it is stored once,
in ``embedding.safetensors`` beside the index, and each model file refers to it
(:mod:`cellw1.tl.shared_embedding`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CellW1Error, InputError, ModelFileError
from ..files.atomic import atomic_write_bytes
from ..files.lock import DirectoryLock
from ..files.model_files import file_format
from ..files.outputs import check_output
from ..io.source import disk_path
from .conditional import FORMAT as CONDITIONAL
from .conditional import ConditionalModel
from .model import (
    COLLECTION_FILE,
    COLLECTION_FORMAT,
    COLLECTION_FORMAT_VERSION,
    FORMAT,
    MODEL_FILE,
    PerturbationModel,
    file_instead_of_directory,
)
from .prediction import PREDICT_CHUNK, predict_source
from .shared_embedding import SharedEmbedding, common_embedding, has_weights

if TYPE_CHECKING:
    import anndata as ad

    from ..pp.embedding import Embedding

logger = logging.getLogger(__name__)


def _folder_name(label: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.+-]", "_", label).strip(".") or "perturbation"
    name, i = base, 1
    while name.lower() in taken:
        i += 1
        name = f"{base}-{i}"
    taken.add(name.lower())
    return name


class ModelCollection(Mapping[str, PerturbationModel]):
    """Models of several perturbations against one control, saved as one directory.

    A read-only mapping ``perturbation -> PerturbationModel``; :attr:`failures` names the
    perturbations that could not be fitted and why, :attr:`resumed` those that
    :func:`cellw1.fit_all` loaded from its ``out`` directory instead of fitting again.
    """

    def __init__(
        self,
        models: Mapping[str, PerturbationModel],
        failures: Mapping[str, str] | None = None,
        resumed: Sequence[str] = (),
    ) -> None:
        self._models = dict(models)
        self.failures: dict[str, str] = dict(failures or {})
        #: perturbations loaded from an earlier run's directory instead of fitted (``fit_all(out=...)``)
        self.resumed: tuple[str, ...] = tuple(resumed)

    def __getitem__(self, key: str) -> PerturbationModel:
        """Return the model of perturbation ``key``."""
        try:
            return self._models[key]
        except KeyError:
            raise KeyError(f"no model for {key!r}; available: {sorted(self._models)}") from None

    def __iter__(self) -> Iterator[str]:
        """Iterate over the perturbations."""
        return iter(self._models)

    def __len__(self) -> int:
        """Count the models."""
        return len(self._models)

    def __repr__(self) -> str:
        """Count the models, those without a detected response, and the failures."""
        without_response = sum(not m.method.has_response and m.method.name != "identity" for m in self._models.values())
        return (
            f"ModelCollection({len(self)} models ({without_response} without a detected response), "
            f"{len(self.failures)} failures)"
        )

    def predict(
        self,
        adata: ad.AnnData | str | os.PathLike,
        *,
        out: str | os.PathLike | None = None,
        cells: np.ndarray | None = None,
        chunk_cells: int = PREDICT_CHUNK,
        progress: bool = False,
    ) -> ad.AnnData | Path:
        """Predict every perturbation for the cells in ``adata``; results stacked in one AnnData.

        The models' predictions come one after the other, cells named ``"<cell>-<perturbation>"``
        and labelled in ``obs["_prediction"]``; ``uns["cellw1"]`` records every model's scale
        (:func:`cellw1.tl.prediction.stacked_record`). ``adata``, ``out``, ``cells`` and
        ``chunk_cells`` are those of :meth:`PerturbationModel.predict`: from disk, or to an
        ``.h5ad`` / ``.zarr`` file, the cells are read and written a chunk at a time.
        """
        if not self._models:
            raise InputError("the collection holds no model; nothing to predict.")
        return predict_source(
            self._models,
            adata,
            stacked=True,
            out=out,
            cells=cells,
            chunk_cells=chunk_cells,
            progress=progress,
            what="ModelCollection.predict",
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """One sub-folder per model plus ``collection.json`` (written last, atomically).

        An embedding every model shares (the same object, or equal ones) is written once, first,
        to ``embedding.safetensors``, and the model files refer to it.
        """
        directory = Path(directory)
        shared = None
        embedding = common_embedding([model.embedding for model in self._models.values()])
        if embedding is not None:
            shared = SharedEmbedding(directory)
            shared.write(embedding)
        taken: set[str] = set()
        index = {}
        for label, model in self._models.items():
            folder = _folder_name(label, taken)
            model.save(directory / folder, shared_embedding=shared)
            index[label] = folder
        body = {
            "format": COLLECTION_FORMAT,
            "format_version": COLLECTION_FORMAT_VERSION,
            "models": index,
            "failures": self.failures,
        }
        atomic_write_bytes(directory / COLLECTION_FILE, json.dumps(body, indent=2, sort_keys=True).encode())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ModelCollection:
        """Load a collection written by :meth:`save`; a shared embedding is read once, one object for every model."""
        directory = Path(directory)
        try:
            body = json.loads((directory / COLLECTION_FILE).read_text())
            index = body["models"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{str(directory / COLLECTION_FILE)!r} is missing or corrupted ({exc}).") from exc
        shared = SharedEmbedding(directory)
        models = {
            label: PerturbationModel.load(directory / folder, shared_embedding=shared)
            for label, folder in index.items()
        }
        return cls(models, body.get("failures"))


def _differences(there: Any, now: Any, prefix: str = "") -> list[str]:
    """List what differs between two settings, e.g. ``["seed: 0 there, 1 now"]`` (nested dicts by ``a.b``)."""
    if isinstance(there, dict) and isinstance(now, dict):
        return [
            line
            for key in sorted(set(there) | set(now))
            for line in _differences(there.get(key), now.get(key), f"{prefix}{key}.")
        ]
    if there == now:
        return []

    def show(value: Any) -> str:
        return "{...}" if isinstance(value, dict) else repr(value)

    return [f"{prefix.rstrip('.')}: {show(there)} there, {show(now)} now"]


class CollectionDirectory:
    """A collection directory that grows one model at a time and can be resumed.

    :func:`cellw1.fit_all` with ``out=`` records each model here as soon as it is fitted.
    The order of the writes keeps the directory loadable at every instant, whatever stops
    the run (a crash, Ctrl-C, a lost machine):

    1. :meth:`add` saves the model to its sub-folder with :meth:`PerturbationModel.save`
       (each file written to a temporary name, flushed, then renamed into place);
    2. only then is ``collection.json`` rewritten, atomically, to list it.

    So the index lists only complete models; a sub-folder that is not listed (the run
    stopped while saving it) is ignored and written again by the next run. A new run on the
    same directory loads the listed models (:meth:`completed`) and fits only the others.
    The index also keeps the fit settings; a run with other settings is refused, because
    the directory would otherwise mix models fitted in different ways. One run at a time
    may write a directory: the object holds a lock on it (``.cellw1.lock``) from creation
    until :meth:`close` (or the end of a ``with`` block), and a second run is refused while
    the first holds it.

    An ``embedding`` every model shares is written first, once, to ``embedding.safetensors``
    (atomically, checksummed), and the models that hold it refer to it; the settings name it
    (its checksum), so a run with another embedding is refused.

    Parameters
    ----------
    directory
        The collection directory (created when the first model is added).
    settings
        JSON-able description of how the models are fitted (method, space, seed, config...).
    inputs
        The data the models are fitted on (an output may not overwrite them).
    embedding
        The embedding the models share (``fit_all(..., shared_space=True)``); ``None``: each
        model holds its own.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        settings: dict[str, Any],
        inputs: Sequence[Any] = (),
        embedding: Embedding | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.settings = json.loads(json.dumps(settings))  # tuples -> lists, as read back from the file
        self.index: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        self.shared = SharedEmbedding(self.directory)
        self.embedding = embedding if embedding is not None and has_weights(embedding) else None
        check_output(self.directory, kind="directory", inputs=[disk_path(data) for data in inputs])
        if (self.directory / MODEL_FILE).exists():
            raise InputError(
                f"{str(self.directory)!r} holds a single model, not a collection; choose another directory."
            )
        self._lock = DirectoryLock(self.directory)
        if not self._lock.acquire():
            raise InputError(
                f"another cellw1 run is writing to {str(self.directory)!r}; wait for it to finish "
                "(rerunning then resumes from its models) or choose another output directory."
            )
        try:
            self._read_index()
            if self.embedding is not None:  # before any model refers to it
                self.shared.write(self.embedding, keep=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the directory for other runs."""
        self._lock.release()

    def __enter__(self) -> CollectionDirectory:
        """Hold the directory for a ``with`` block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the directory's lock."""
        self.close()

    def _read_index(self) -> None:
        path = self.directory / COLLECTION_FILE
        if not path.exists():
            return
        try:
            body = json.loads(path.read_text())
            index, failures = dict(body["models"]), dict(body.get("failures") or {})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(
                f"{str(path)!r} is unreadable ({exc}); delete it (the models beside it are then refitted) "
                "or choose another directory."
            ) from exc
        if body.get("format") != COLLECTION_FORMAT:
            raise ModelFileError(f"{str(path)!r} is not a cellw1 collection index; choose another directory.")
        previous = body.get("settings")
        if previous is not None and previous != self.settings:
            detail = "; ".join(_differences(previous, self.settings))
            raise InputError(
                f"{str(self.directory)!r} already holds models fitted with other settings ({detail}); "
                "choose another output directory, or delete this one to refit everything."
            )
        self.index, self.failures = index, failures

    def completed(self, labels: Iterable[str]) -> dict[str, PerturbationModel]:
        """Load the models of ``labels`` already saved here; broken ones are dropped (and refitted)."""
        found: dict[str, PerturbationModel] = {}
        for label in labels:
            folder = self.index.get(label)
            if folder is None:
                continue
            try:
                model = PerturbationModel.load(self.directory / folder, shared_embedding=self.shared)
                if model.perturbation != label:
                    raise ModelFileError(f"it models {model.perturbation!r}")
            except CellW1Error as exc:
                logger.warning("saved model of %r in %s cannot be used (%s); fitting it again", label, folder, exc)
                del self.index[label]
                continue
            found[label] = model
        return found

    def add(self, label: str, model: PerturbationModel) -> Path:
        """Save ``model`` to its sub-folder, then list it in the index (in that order).

        A model holding the shared embedding refers to its file instead of holding a copy.
        """
        folder = self.index.get(label)
        if folder is None:
            folder = _folder_name(label, {f.lower() for f in self.index.values()})
        shared = self.shared if self.embedding is not None and self.shared.holds(model.embedding) else None
        path = model.save(self.directory / folder, shared_embedding=shared)
        self.index[label] = folder
        self.failures.pop(label, None)
        self.write_index()
        return path

    def add_failure(self, label: str, reason: str) -> None:
        """Record that ``label`` could not be fitted (a later run tries it again)."""
        self.failures[label] = reason
        self.write_index()

    def write_index(self) -> Path:
        """Rewrite ``collection.json`` atomically from the models recorded so far."""
        body = {
            "format": COLLECTION_FORMAT,
            "format_version": COLLECTION_FORMAT_VERSION,
            "models": self.index,
            "failures": self.failures,
            "settings": self.settings,
        }
        data = json.dumps(body, indent=2, sort_keys=True).encode()
        return atomic_write_bytes(self.directory / COLLECTION_FILE, data)


def load(directory: str | os.PathLike) -> PerturbationModel | ModelCollection | ConditionalModel:
    """Load a model directory.

    One written by :meth:`PerturbationModel.save`, :meth:`ModelCollection.save` or
    :meth:`ConditionalModel.save`.
    """
    directory = Path(directory)
    if not directory.exists():
        raise ModelFileError(f"{str(directory)!r} does not exist; check the path.")
    if directory.is_dir() and (directory / MODEL_FILE).is_file() and file_format(directory / MODEL_FILE) == CONDITIONAL:
        return ConditionalModel.load(directory)
    if directory.is_file():
        if directory.name == MODEL_FILE and file_format(directory) == FORMAT:
            return PerturbationModel.load(directory.parent)
        raise ModelFileError(file_instead_of_directory(directory))
    if (directory / COLLECTION_FILE).exists():
        return ModelCollection.load(directory)
    return PerturbationModel.load(directory)
