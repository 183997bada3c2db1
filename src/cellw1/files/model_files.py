"""Model files: safetensors with a JSON header, checksums over everything a prediction reads, no pickle."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import ModelFileError
from .atomic import atomic_write_bytes

logger = logging.getLogger(__name__)

#: metadata key of the checksum over the JSON header and every tensor (name, dtype, shape, bytes)
CONTENT_CHECKSUM = "sha256_content"
#: key the header carries so that a file whose content checksum went missing is refused
CHECKSUM_MARKER = "checksummed"

#: what each cellw1 file format holds and how to load it
FORMATS: dict[str, str] = {
    "cellw1.PerturbationModel": (
        "a PerturbationModel (model.safetensors); load its directory with cellw1.load(directory)"
    ),
    "cellw1.TransportMap": "a TransportMap (one fitted W1 map); load it with cellw1.TransportMap.load(path)",
    "cellw1.W2Map": "a W2Map (one fitted W2 map); load it with cellw1.W2Map.load(path)",
    "cellw1.ConditionalMap": "a ConditionalMap (one W1 map for many conditions); load it with "
    "cellw1.ot.conditional.ConditionalMap.load(path)",
    "cellw1.ConditionalModel": "a ConditionalModel (model.safetensors); load its directory with cellw1.load(directory)",
    "cellw1.SharedEmbedding": "the embedding a collection's models share (embedding.safetensors); load the "
    "collection's directory with cellw1.load(directory)",
}


def tensors_under(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Return the entries of a saved file under ``prefix`` (``"potential."``...), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the names and bytes of ``tensors`` (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def content_checksum(header_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the stored JSON header and of every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(header_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Atomically save ``tensors`` and a JSON-able ``header`` as one safetensors file.

    The header is stored as JSON in the safetensors metadata under ``"cellw1"``. Two SHA-256
    checksums go beside it: one of the tensor bytes (``"sha256"``, as in files of cellw1 0.1)
    and one of everything a prediction depends on, the header and the tensors
    (:func:`content_checksum`); :func:`load_tensors` verifies both.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header_json = json.dumps({**header, CHECKSUM_MARKER: CONTENT_CHECKSUM}, sort_keys=True)
    metadata = {
        "cellw1": header_json,
        "sha256": tensor_checksum(tensors),
        CONTENT_CHECKSUM: content_checksum(header_json, tensors),
    }
    return atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def read_metadata(path: Path, kind: str) -> tuple[bytes, dict[str, str]]:
    """Read the bytes of a safetensors file and its string metadata; every failure is a :class:`ModelFileError`."""
    if not path.is_file():
        raise ModelFileError(f"{kind} file {str(path)!r} does not exist; check the path or save the model first.")
    data = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except Exception as exc:  # struct.error, JSONDecodeError, AttributeError...
        raise ModelFileError(
            f"{kind} file {str(path)!r} is truncated or corrupted ({type(exc).__name__}: {exc}); save the model again."
        ) from exc
    return data, meta


def file_format(path: str | os.PathLike) -> str | None:
    """Return the ``format`` a cellw1 safetensors file declares (``None`` when it declares none)."""
    _, meta = read_metadata(Path(path), "cellw1")
    try:
        return json.loads(meta["cellw1"]).get("format")
    except Exception:  # no or broken header: not a cellw1 file
        return None


def check_format(header: dict[str, Any], expected: str, version: int, *, source: str, oldest: int = 0) -> int:
    """Check that ``header`` describes ``expected`` in a version from ``oldest`` to ``version``; return it.

    A file of another cellw1 kind is named with the way to load it; only a newer version of
    the right kind advises upgrading cellw1.
    """
    found = header.get("format")
    if found != expected:
        if found in FORMATS:
            raise ModelFileError(f"{source} holds {FORMATS[found]}.")
        raise ModelFileError(f"{source} is not a {expected} file (its format is {found!r}).")
    try:
        found_version = int(header.get("format_version", -1))
    except (TypeError, ValueError):
        found_version = -1
    if found_version > version:
        raise ModelFileError(
            f"{source} is a {expected} of format version {found_version}, newer than this cellw1 reads "
            f"({version}); upgrade cellw1."
        )
    if found_version < oldest:
        raise ModelFileError(f"{source} has an unknown format version {header.get('format_version')!r}; save it again.")
    return found_version


def load_tensors(path: str | os.PathLike, *, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`; every failure is a :class:`ModelFileError`."""
    path = Path(path)
    data, meta = read_metadata(path, kind)
    broken = f"{kind} file {str(path)!r} is truncated or corrupted ({{}}); save the model again."
    try:
        header = json.loads(meta["cellw1"])
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        tensors = st_load(data)
    except Exception as exc:  # JSONDecodeError, KeyError, SafetensorError...
        raise ModelFileError(broken.format(f"{type(exc).__name__}: {exc}")) from exc
    marked = header.pop(CHECKSUM_MARKER, None) is not None
    if tensor_checksum(tensors) != meta.get("sha256"):
        raise ModelFileError(broken.format("checksum mismatch"))
    expected = meta.get(CONTENT_CHECKSUM)
    if expected is None and not marked:  # written by cellw1 0.1: only the tensors were checksummed
        logger.warning(
            "%s file %s predates header checksums: its weights are verified, its description (genes, "
            "preprocessing, config) is not; save it again to checksum everything.",
            kind,
            path,
        )
    elif expected is None or content_checksum(meta["cellw1"], tensors) != expected:
        raise ModelFileError(broken.format("checksum mismatch in its description or weights"))
    return tensors, header
