"""Entry point of the ``cellw1`` command.

Each verb is a module ``cellw1.cli.<verb>`` exposing ``add_parser(subparsers)`` (which adds
its sub-parser) and ``run(args) -> int``. :data:`VERBS` lists the modules to register.

Exit codes: 0 success, 2 bad input or configuration (and command-line usage errors),
3 unreadable model file, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CellW1Error, ModelFileError

VERBS: list[str] = ["demo", "fit", "predict", "evaluate"]

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_MODEL_FILE = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with the global flags and one sub-parser per verb."""
    parser = argparse.ArgumentParser(
        prog="cellw1",
        description="Fast Wasserstein-1 neural optimal transport for single-cell perturbation prediction.",
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


def _log_handler(verbose: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    return handler


def _fail(exc: BaseException, code: int) -> int:
    """Print ``exc`` as one ``cellw1: error: ...`` line on stderr and return ``code``."""
    message = " ".join(str(exc).split())
    print(f"cellw1: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cellw1`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
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
    except ModelFileError as exc:
        return _fail(exc, EXIT_MODEL_FILE)
    except CellW1Error as exc:
        return _fail(exc, EXIT_INPUT)
    except KeyboardInterrupt:
        print("cellw1: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


if __name__ == "__main__":
    raise SystemExit(main())
