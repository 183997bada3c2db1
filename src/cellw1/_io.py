"""Safe model files: atomic writes, safetensors with a JSON header, integrity checks, no pickle."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import signal
import struct
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CellW1Error, InputError, ModelFileError, OutputError

try:  # advisory file locks (POSIX); elsewhere directories are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: metadata key of the checksum over the JSON header and every tensor (name, dtype, shape, bytes)
CONTENT_CHECKSUM = "sha256_content"
#: key the header carries so that a file whose content checksum went missing is refused
CHECKSUM_MARKER = "checksummed"

#: what each cellw1 file format holds and how to load it
FORMATS: dict[str, str] = {
    "cellw1.PerturbationModel": "a PerturbationModel (model.safetensors); load its directory with cellw1.load(directory)",
    "cellw1.TransportMap": "a TransportMap (one fitted W1 map); load it with cellw1.TransportMap.load(path)",
    "cellw1.W2Map": "a W2Map (one fitted W2 map); load it with cellw1.W2Map.load(path)",
    "cellw1.ConditionalMap": "a ConditionalMap (one W1 map for many conditions); load it with "
    "cellw1.ot.conditional.ConditionalMap.load(path)",
    "cellw1.ConditionalModel": "a ConditionalModel (model.safetensors); load its directory with cellw1.load(directory)",
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """An :class:`OutputError` saying that ``path`` could not be written and why, in one line."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        fix = "free some space or write elsewhere"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to"
    else:
        fix = "check the path"
    return OutputError(f"could not write {str(path)!r} ({reason}); nothing was changed there: {fix}.")


_ERRNO = re.compile(r"errno = (\d+)")


def write_failure(path: str | os.PathLike, exc: BaseException) -> OutputError | None:
    """The :class:`OutputError` for ``exc`` when it reports a failed write, else ``None``.

    An OSError, or the RuntimeError by which h5py reports a failed ``write()`` (with the
    errno in its message, e.g. a full disk).
    """
    if isinstance(exc, OutputError):
        return exc
    if isinstance(exc, CellW1Error) or not isinstance(exc, Exception):
        return None
    if isinstance(exc, OSError):
        return output_error(path, exc)
    match = _ERRNO.search(str(exc))
    if match and "write failed" in str(exc):
        code = int(match.group(1))
        return output_error(path, OSError(code, os.strerror(code)))
    return None


@contextlib.contextmanager
def quiet_unraisable() -> Iterator[list[BaseException]]:
    """Collect, instead of printing, the errors h5py reports while freeing its objects.

    h5py flushes a dataset when the object is freed; a failed flush (a full disk) is printed
    as an "Exception ignored in ..." traceback and the write goes on. Inside this block
    those errors are appended to the list it yields, for the caller to raise or discard.
    """
    ignored: list[BaseException] = []
    previous = sys.unraisablehook

    def collect(unraisable: Any) -> None:
        logger.debug("ignored by h5py: %s", unraisable.exc_value)
        ignored.append(unraisable.exc_value)

    def collect_printed(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        logger.debug("ignored by h5py: %s", value)  # Cython prints a failed __dealloc__ through excepthook too

    previous_print = sys.excepthook
    sys.unraisablehook, sys.excepthook = collect, collect_printed
    try:
        yield ignored
    finally:
        sys.unraisablehook, sys.excepthook = previous, previous_print


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; renamed over ``path`` when the block succeeds.

    Readers see the old file or the new one, never half (``os.replace`` is atomic on POSIX
    and Windows). On any exception, Ctrl-C included, the temporary file is removed and
    ``path`` is untouched; an OSError (full disk, read-only folder) becomes an :class:`OutputError`.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _signals_held():  # a Ctrl-C between making the file and knowing its name would leave it behind
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
            tmp = Path(name)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; honour the user's umask
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        failure = write_failure(path, exc)
        if failure is None or failure is exc:
            raise
        raise failure from exc


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the block (main thread); they are raised when it ends."""
    names = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.getsignal(s) for s in names]
    if threading.current_thread() is not threading.main_thread() or None in previous:
        yield  # handlers can only be swapped in the main thread, and only restored if set from Python
        return
    caught: list[int] = []
    for s in names:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in zip(names, previous, strict=True):
            signal.signal(s, handler)
        for s in caught:
            signal.raise_signal(s)  # to the caller's handlers, now that the block is done


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output(
    path: str | os.PathLike,
    *,
    kind: Literal["file", "directory", "store"],
    inputs: Iterable[str | os.PathLike | None] = (),
    what: str = "out",
) -> Path:
    """Refuse, before any work, an output that cannot or must not be written.

    Parameters
    ----------
    path
        Where the output goes.
    kind
        ``"file"`` (an ``.h5ad``, replaced atomically), ``"directory"`` (a model or report
        folder, files written inside it) or ``"store"`` (a ``.zarr`` directory, replaced whole).
    inputs
        Paths read by the same run (``None`` entries are skipped): the output may not be one
        of them, lie inside one, or (for a store) contain one, even through a symbolic link.
    what
        How the output is named in messages (``"--out"`` on the command line).

    Raises
    ------
    InputError
        The output is an input, or an existing path of the wrong kind.
    OutputError
        Its folder cannot be written (read-only, permissions).
    """
    path = Path(path)
    resolved = path.resolve()
    for source in inputs:
        if source is None:
            continue
        source_path = Path(source).resolve()
        same = _inside(resolved, source_path) or (kind == "store" and _inside(source_path, resolved))
        if not same and resolved.exists() and source_path.exists():
            same = os.path.samefile(resolved, source_path)  # hard links
        if same:
            raise InputError(
                f"{what} {str(path)!r} would overwrite the input {str(source)!r}; write the output to another path."
            )
    if path.exists():
        if kind == "file" and path.is_dir():
            raise InputError(f"{what} {str(path)!r} is a directory; give the path of a file to write.")
        if kind in ("directory", "store") and not path.is_dir():
            raise InputError(f"{what} {str(path)!r} is a file; give the path of a directory to write.")
        if kind == "store" and any(path.iterdir()) and not _is_zarr_store(path):
            raise InputError(
                f"{what} {str(path)!r} is a directory that is not a .zarr store; it would be replaced, so "
                "choose another path."
            )
    probe = path if kind == "directory" and path.is_dir() else path.parent
    while not probe.exists():
        probe = probe.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".cellw1-probe.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise output_error(path, exc) from exc
    return path


def _is_zarr_store(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zgroup", ".zattrs"))


def section(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of a saved file under ``prefix`` (``"potential."``...), with the prefix removed."""
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
    """The bytes of a safetensors file and its string metadata; every failure is a :class:`ModelFileError`."""
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
    """The ``format`` a cellw1 safetensors file declares (``None`` when it declares none)."""
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
