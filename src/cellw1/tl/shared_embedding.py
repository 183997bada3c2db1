"""The embedding a collection's models share, stored once beside ``collection.json`` and read once.

``cellw1.fit_all(..., shared_space=True)`` fits one embedding (e.g. a PCA of 2,000 genes) that
every perturbation's model uses. Its collection directory then holds it once, in
``embedding.safetensors`` (written atomically and checksummed by
:func:`~cellw1.files.model_files.save_tensors`, before any model refers to it); each model file
keeps the embedding's description but not its weights, and refers to the file by name and by
the checksum of its tensors (``embedding_file`` in the model's header). Loading the collection
reads the file once and gives every model the same object; a model sub-folder loaded alone
finds the file in its parent directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelFileError
from ..files.model_files import check_format, load_tensors, save_tensors, tensor_checksum
from ..pp.embedding import Embedding
from ..pp.spaces import load_embedding

SHARED_EMBEDDING_FILE = "embedding.safetensors"
FORMAT = "cellw1.SharedEmbedding"
FORMAT_VERSION = 1


def _described(description: dict[str, Any]) -> dict[str, Any]:
    """What identifies an embedding in its header: all but its fit diagnostics (``info``: seconds...)."""
    return {k: v for k, v in description.items() if k != "info"}


def _description(embedding: Embedding) -> dict[str, Any]:
    """The embedding's header as read back from JSON (tuples become lists), without ``info``."""
    return _described(json.loads(json.dumps(embedding.header())))


def fingerprint(embedding: Embedding) -> tuple[str, dict[str, Any]]:
    """What makes two embeddings the same one: their tensors' checksum and their description without ``info``."""
    return tensor_checksum(embedding.state_tensors()), _description(embedding)


def has_weights(embedding: Embedding) -> bool:
    """Whether ``embedding`` has weights to store (the genes space has none: nothing to share)."""
    return bool(embedding.state_tensors())


def common_embedding(embeddings: list[Embedding]) -> Embedding | None:
    """The one embedding of several models, if they share one with weights: the same object, or equal.

    Equal: the same tensors and description, fit diagnostics aside (models fitted on a cluster,
    loaded or refitted with the same seed on a resumed run hold copies).
    ``None``: fewer than two models, an embedding without weights (genes), or different ones.
    """
    if len(embeddings) < 2 or not has_weights(embeddings[0]):
        return None
    first = embeddings[0]
    unique = {id(e): e for e in embeddings if e is not first}
    if not unique:
        return first
    first_print = fingerprint(first)
    return first if all(fingerprint(other) == first_print for other in unique.values()) else None


class SharedEmbedding:
    """The file ``directory/embedding.safetensors``: one embedding for every model of a collection.

    An object remembers the embedding it wrote or read, so the models of one collection refer
    to (:meth:`reference`) and load (:meth:`read`) the same object.

    Parameters
    ----------
    directory
        The collection directory (the parent of the models' sub-folders).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / SHARED_EMBEDDING_FILE
        self._held: tuple[Embedding, str, dict[str, Any]] | None = None  # (embedding, checksum, description)

    def write(self, embedding: Embedding, *, keep: bool = False) -> None:
        """Store ``embedding`` atomically.

        ``keep``: a file already there is kept when it holds the same embedding, and refused
        (InputError) when it holds another, which models of the directory may refer to.
        """
        tensors = embedding.state_tensors()
        checksum, description = fingerprint(embedding)
        if keep and self.path.exists():
            try:
                _, there, there_description = self._load()
            except ModelFileError:  # broken: no model can use it, write it again
                pass
            else:
                if (there, there_description) != (checksum, description):
                    raise InputError(
                        f"{str(self.path.parent)!r} holds models of another shared embedding ({self.path.name}); "
                        "choose another output directory, or delete this one to refit everything."
                    )
                self._held = (embedding, checksum, description)
                return
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "embedding": embedding.header()}
        save_tensors(self.path, tensors, header)
        self._held = (embedding, checksum, description)

    def holds(self, embedding: Embedding) -> bool:
        """Whether ``embedding`` is the one written or read here (the same object, or equal)."""
        if self._held is None:
            return False
        held, checksum, description = self._held
        if embedding is held:
            return True
        return fingerprint(embedding) == (checksum, description)

    def reference(self, embedding: Embedding) -> dict[str, str]:
        """What a model file keeps instead of ``embedding``'s weights: the file's name and checksum."""
        if not self.holds(embedding):
            raise InputError(f"the model's embedding is not the one stored in {str(self.path)!r}.")
        assert self._held is not None
        return {"file": self.path.name, "sha256": self._held[1]}

    def read(self, reference: Any, description: Any, source: str) -> Embedding:
        """The embedding a model file (``source``) refers to; the same object for every model.

        ``reference`` and ``description`` are the model header's ``embedding_file`` and
        ``embedding``; a missing file, or one whose checksum or description differs, is a
        ModelFileError saying what to do.
        """
        if not isinstance(reference, dict) or reference.get("file") != self.path.name:
            raise ModelFileError(f"{source} refers to an unknown shared embedding file {reference!r}; upgrade cellw1.")
        if self._held is None:
            if not self.path.is_file():
                raise ModelFileError(
                    f"{source} keeps its embedding in its collection's {self.path.name}, but {str(self.path)!r} "
                    f"does not exist; load the model from inside its collection directory, or copy the "
                    f"collection's {self.path.name} into {str(self.path.parent)!r}."
                )
            self._held = self._load()
        embedding, checksum, held_description = self._held
        if (
            reference.get("sha256") != checksum
            or not isinstance(description, dict)
            or _described(description) != held_description
        ):
            raise ModelFileError(
                f"{str(self.path)!r} is not the embedding {source} was saved with (checksum mismatch); "
                f"copy the {self.path.name} of the model's own collection there, or refit the collection."
            )
        return embedding

    def _load(self) -> tuple[Embedding, str, dict[str, Any]]:
        tensors, header = load_tensors(self.path, kind="shared embedding")
        check_format(header, FORMAT, FORMAT_VERSION, source=repr(str(self.path)))
        description = header.get("embedding")
        if not isinstance(description, dict):
            raise ModelFileError(f"{str(self.path)!r} does not describe its embedding; refit the collection.")
        return load_embedding(tensors, description), tensor_checksum(tensors), _described(description)
