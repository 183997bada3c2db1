"""cellw1.files.atomic: atomic writes leave nothing behind when interrupted."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from cellw1.files.atomic import atomic_write_bytes


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_while_the_temporary_file_is_made_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    """A SIGINT that lands just after ``mkstemp`` made the file is held back until its name is
    known, so the interrupted write removes it; the target is never created.
    """
    made = []
    real = tempfile.mkstemp

    def mkstemp_then_interrupt(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        made.append(name)
        os.kill(os.getpid(), signal.SIGINT)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "model.json", b"{}")
    assert made
    assert not Path(made[0]).exists()
    assert list(tmp_path.iterdir()) == []
