"""The command's exit codes when an interruption and an error meet (cellw1.cli.main)."""

from __future__ import annotations

import argparse
import time

import pytest

from cellw1.cli import main as cli


def parser_running(run) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.set_defaults(_run=run)
    return parser


@pytest.mark.parametrize(
    ("stop", "code", "line"), [(KeyboardInterrupt, 130, "interrupted"), (cli.Terminated, 143, "terminated")]
)
def test_an_error_while_an_interruption_unwinds_is_the_interruption(stop, code, line, monkeypatch, capsys):
    """A file closed mid-write can raise while Ctrl-C or SIGTERM unwinds: the user asked to stop."""

    def run(args: argparse.Namespace) -> int:
        try:
            raise stop
        finally:
            raise RuntimeError("closing a half-written file failed")

    monkeypatch.setattr(cli, "build_parser", lambda: parser_running(run))
    assert cli.main([]) == code
    assert capsys.readouterr().err == f"cellw1: {line}\n"


def test_an_error_of_its_own_is_still_an_internal_error(monkeypatch, capsys):
    def run(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "build_parser", lambda: parser_running(run))
    assert cli.main([]) == 5
    assert capsys.readouterr().err == "cellw1: internal error (RuntimeError): a bug\n"


@pytest.mark.parametrize(("stop", "code"), [(KeyboardInterrupt, 130), (cli.Terminated, 143)])
@pytest.mark.usefixtures("ctrl_c_raises")
def test_a_signal_that_lands_in_a_finalizer_is_not_lost(stop, code, monkeypatch, capsys):
    """Python drops exceptions raised in finalizers and weakref callbacks (a signal handler can run
    there): the command raises the signal again instead of carrying on.
    """

    class Finalized:
        def __del__(self) -> None:
            raise stop  # as if the signal's handler had run here

    def run(args: argparse.Namespace) -> int:
        Finalized()  # collected at once: its exception is "ignored"
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # the signal sent again lands here, within milliseconds
            pass
        return 0

    monkeypatch.setattr(cli, "build_parser", lambda: parser_running(run))
    assert cli.main([]) == code
    assert capsys.readouterr().err == f"cellw1: {'interrupted' if code == 130 else 'terminated'}\n"
