"""Entry point of the ``cellw1`` command.

Each verb is a module ``cellw1.cli.<verb>`` exposing ``add_parser(subparsers)`` (which adds
its sub-parser) and ``run(args) -> int``. :data:`VERBS` lists the modules to register.

Every failure is one ``cellw1: ...`` line on stderr (a traceback only with ``--verbose``)
and one of these exit codes (:data:`EXIT_CODES`, also listed by ``cellw1 --help``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from .._version import __version__
from ..errors import CellW1Error, ModelFileError

VERBS: list[str] = ["demo", "fit", "predict", "evaluate", "screen"]

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_INPUT = 2
EXIT_MODEL_FILE = 3
EXIT_OUTPUT = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

#: exit code -> meaning, as printed by ``cellw1 --help`` and docs/reliability.md
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURES: "fit: some perturbations of a collection could not be fitted (the others were saved)",
    EXIT_INPUT: "bad input, configuration or command-line usage (nothing was written)",
    EXIT_MODEL_FILE: "model file missing, corrupted or of another kind",
    EXIT_OUTPUT: "a file cannot be written: read-only folder, full disk, permission denied (nothing was changed there)",
    EXIT_INTERNAL: "unexpected internal error (rerun with --verbose for the traceback and report it)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGINT); outputs are as before the run",
    EXIT_TERMINATED: "terminated by SIGTERM; outputs are as before the run",
}


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM, so that cleanup runs."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _deliver_again(previous: Callable[[Any], Any]) -> Callable[[Any], None]:
    """A ``sys.unraisablehook`` for while a command runs.

    A Ctrl-C or SIGTERM that landed in a finalizer or weakref callback, where Python drops
    exceptions, is raised again, so that it reaches the command; anything else goes to
    ``previous``.
    """

    def hook(unraisable: Any) -> None:
        stop = unraisable.exc_value
        if isinstance(stop, KeyboardInterrupt | Terminated):  # sent again once the hook has returned
            signum = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM
            timer = threading.Timer(0.01, os.kill, (os.getpid(), signum))
            timer.daemon = True  # a command that ends first is not held up
            timer.start()
        else:
            previous(unraisable)

    return hook


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the command runs (main thread only).

    A signal that lands in a finalizer is not lost either (:func:`_deliver_again`).
    """
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _deliver_again(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with the global flags and one sub-parser per verb."""
    parser = argparse.ArgumentParser(
        prog="cellw1",
        description="Fast Wasserstein-1 neural optimal transport for single-cell perturbation prediction.",
        epilog="exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cellw1 {__version__}")
    _add_global_flags(parser, default=False)
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        module = importlib.import_module(f"{__package__}.{verb}")
        sub = module.add_parser(subparsers)
        _add_global_flags(sub, default=argparse.SUPPRESS)  # also accepted after the verb
        sub.set_defaults(_run=module.run)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log progress (INFO) to stderr")
    parser.add_argument("--quiet", action="store_true", default=default, help="hide progress bars")


#: the library's Python spellings of a setting that the command line spells as an option
_PYTHON_SETTING = re.compile(
    r"(W1Config\()?\b(effect_alpha|input_kind|chunk_cells|dose)=(?:'([^']*)'|([\w+-]+(?:\.\w+)*))?(?(1)\))"
)


def for_command_line(text: str) -> str:
    """``text`` (a message of the library) with Python settings named as options: ``input_kind='log'`` -> ``--input-kind log``."""

    def option(match: re.Match[str]) -> str:
        value = match.group(3) if match.group(3) is not None else match.group(4) or ""
        value = "none" if value == "None" else value
        return f"--{match.group(2).replace('_', '-')}" + (f" {value}" if value else "")

    return _PYTHON_SETTING.sub(option, text)


class _CommandLineFormatter(logging.Formatter):
    """The log format of the command, with the library's Python settings named as its options."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``, then rename the settings."""
        return for_command_line(super().format(record))


def _log_handler(verbose: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CommandLineFormatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    return handler


def _fail(exc: BaseException, code: int, prefix: str = "error") -> int:
    """Print ``exc`` as one ``cellw1: error: ...`` line on stderr and return ``code``."""
    message = for_command_line(" ".join(str(exc).split()) or type(exc).__name__)
    print(f"cellw1: {prefix}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cellw1`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        with _sigterm_raises():
            return _main(argv)
    except KeyboardInterrupt:  # also while the verbs (and torch) are still being imported
        print("cellw1: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("cellw1: terminated", file=sys.stderr)
        return EXIT_TERMINATED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    args.progress = not args.quiet
    logger = logging.getLogger("cellw1")
    handler = _log_handler(args.verbose)
    old_level = logger.level
    logger.addHandler(handler)
    if args.verbose:
        logger.setLevel(logging.INFO)
    try:
        return int(args._run(args))
    except Exception as exc:
        stop = _interruption(exc)
        if stop is not None:  # an error while a Ctrl-C or SIGTERM unwound (a file closed mid-write)
            raise stop from None
        return _error_code(exc, args.verbose)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _interruption(exc: BaseException) -> BaseException | None:
    """The Ctrl-C or SIGTERM that ``exc`` was raised while handling (``__context__`` chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt | Terminated):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _error_code(exc: Exception, verbose: bool) -> int:
    """One line on stderr for ``exc`` and its exit code (:data:`EXIT_CODES`)."""
    if isinstance(exc, ModelFileError):
        return _fail(exc, EXIT_MODEL_FILE)
    if isinstance(exc, CellW1Error):
        return _fail(exc, EXIT_OUTPUT if isinstance(exc, OSError) else EXIT_INPUT)
    if isinstance(exc, OSError):  # an output the library did not name: a full disk, a read-only folder
        return _fail(exc, EXIT_OUTPUT)
    if verbose:  # a bug: one line, the traceback with --verbose
        traceback.print_exc()
    return _fail(exc, EXIT_INTERNAL, prefix=f"internal error ({type(exc).__name__})")


if __name__ == "__main__":
    sys.exit(main())
