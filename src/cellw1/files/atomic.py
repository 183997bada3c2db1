"""Atomic writes: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .outputs import write_failure


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        for signum in caught:
            signal.raise_signal(signum)  # to the caller's handlers, now that the block is done


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)
