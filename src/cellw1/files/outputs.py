"""Output paths checked before any work, and write failures named plainly."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from ..errors import CellW1Error, InputError, OutputError

logger = logging.getLogger(__name__)


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """Make an :class:`OutputError` saying that ``path`` could not be written and why, in one line."""
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
    """Return the :class:`OutputError` for ``exc`` when it reports a failed write, else ``None``.

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
