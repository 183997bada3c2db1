"""The command's exit codes when an interruption and an error meet (cellw1.cli.main)."""

from __future__ import annotations

import argparse

import pytest

from cellw1.cli import main as cli


def parser_running(run) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    parser.set_defaults(_run=run)
    return parser


@pytest.mark.parametrize(
    "stop, code, line", [(KeyboardInterrupt, 130, "interrupted"), (cli.Terminated, 143, "terminated")]
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
