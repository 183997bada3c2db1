"""An advisory lock on an output directory, so that two runs never write one folder at once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

try:  # advisory file locks (POSIX); elsewhere directories are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


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
