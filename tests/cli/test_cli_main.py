"""The command's exit codes when an interruption and an error meet (cellw1.cli.main)."""

from __future__ import annotations

import argparse
import logging
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


@pytest.mark.parametrize(
    ("library", "command"),
    [
        ("set W1Config(effect_alpha=None) to move them anyway.", "set --effect-alpha none to move them anyway."),
        ("(pass input_kind='log' if they are log-normalised)", "(pass --input-kind log if they are log-normalised)"),
        ("pass input_kind= to choose", "pass --input-kind to choose"),
        ("chunk_cells=0 must be an integer >= 1.", "--chunk-cells 0 must be an integer >= 1."),
        ("so it takes no dose; drop dose=.", "so it takes no dose; drop --dose."),
        ("effect_alpha = 0.05 and dose_key=None stay", "effect_alpha = 0.05 and dose_key=None stay"),
    ],
)
def test_library_settings_are_named_as_the_command_s_options(library, command):
    assert cli.for_command_line(library) == command


def test_an_error_names_the_option_not_the_python_argument(monkeypatch, capsys):
    def run(args: argparse.Namespace) -> int:
        raise cli.CellW1Error("chunk_cells=0 must be an integer >= 1.")

    monkeypatch.setattr(cli, "build_parser", lambda: parser_running(run))
    assert cli.main([]) == cli.EXIT_INPUT
    assert capsys.readouterr().err == "cellw1: error: --chunk-cells 0 must be an integer >= 1.\n"


def test_a_warning_names_the_option_not_the_python_argument():
    record = logging.LogRecord(
        "cellw1.pp", logging.WARNING, __file__, 1, "input: %s (pass input_kind= to choose)", ("x",), None
    )
    assert cli._log_handler(False).format(record).endswith("cellw1.pp: input: x (pass --input-kind to choose)")
