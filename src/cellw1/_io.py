"""Safe model files: atomic writes, safetensors with a JSON header, integrity checks, no pickle."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import ModelFileError

try:  # advisory file locks (POSIX); elsewhere directories are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed
    over ``path`` (an atomic ``os.replace`` on POSIX and Windows).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; honour the user's umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the names and bytes of ``tensors`` (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Path:
    """Atomically save ``tensors`` and a JSON-able ``header`` as one safetensors file.

    The header is stored as JSON in the safetensors metadata under ``"cellw1"``, beside a
    SHA-256 checksum of the tensor bytes that :func:`load_tensors` verifies.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"cellw1": json.dumps(header, sort_keys=True), "sha256": tensor_checksum(tensors)}
    return atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_tensors(path: str | os.PathLike, *, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`; every failure is a :class:`ModelFileError`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{kind} file {str(path)!r} does not exist; check the path or save the model first.")
    data = path.read_bytes()
    broken = f"{kind} file {str(path)!r} is truncated or corrupted ({{}}); save the model again."
    try:
        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
        header = json.loads(meta["cellw1"])
        tensors = st_load(data)
    except Exception as exc:  # struct.error, JSONDecodeError, KeyError, SafetensorError...
        raise ModelFileError(broken.format(f"{type(exc).__name__}: {exc}")) from exc
    if tensor_checksum(tensors) != meta.get("sha256"):
        raise ModelFileError(broken.format("checksum mismatch"))
    return tensors, header


class DirectoryLock:
    """An exclusive advisory lock on ``directory/.cellw1.lock``, held until :meth:`release`.

    Another process (or another lock object) asking for the same directory gets ``False``
    from :meth:`acquire` instead of waiting. The lock dies with the process that holds it,
    so a crashed run never leaves a directory locked. No-op where ``fcntl`` is missing.
    """

    NAME = ".cellw1.lock"

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / self.NAME
        self._handle: Any = None

    def acquire(self) -> bool:
        """Take the lock; ``False`` when someone else holds it."""
        if fcntl is None or self._handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        """Let the lock go (closing the file releases it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
