"""Helpers shared by the CLI verbs: reading h5ad files with one-line errors, common arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, overload

from ..ot.config import STEP_SIZE_LEARNERS, W1Config

if TYPE_CHECKING:
    pass

#: a solver config class (W1Config or a subclass)
C = TypeVar("C", bound=W1Config)


def add_disk_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--on-disk``: stream the cells from the file instead of loading it."""
    parser.add_argument(
        "--on-disk",
        action="store_true",
        help=f"stream the cells from the file instead of loading it into memory ({what}); "
        "memory then does not grow with the number of cells",
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the cells and their conditions are: shared by fit and evaluate."""
    parser.add_argument("data", type=Path, help="an .h5ad file (or .zarr store) of cells x genes")
    parser.add_argument("--condition-key", required=True, help="obs column holding each cell's condition")
    parser.add_argument("--control", required=True, help="label of the control cells in that column")
    parser.add_argument("--layer", default=None, help="read expression from this layer instead of X")
    parser.add_argument("--obsm-key", default=None, help="fit on this obsm embedding instead of genes")
    parser.add_argument(
        "--space",
        choices=("genes", "pca", "autoencoder"),
        default="genes",
        help="space the maps are fitted in (default: %(default)s)",
    )
    parser.add_argument(
        "--input-kind",
        choices=("auto", "counts", "log", "continuous"),
        default="auto",
        help=(
            "counts (normalised, log1p), log (log-normalised expression, non-negative) or continuous (values of any "
            "sign: CyTOF arcsinh, imaging features, z-scores; never clipped or calibrated); default: detected, "
            "negative values meaning continuous"
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)")


def add_solver_arguments(
    parser: argparse.ArgumentParser,
    defaults: W1Config | None = None,
    conditional: W1Config | None = None,
) -> None:
    """The W1 solver settings most worth changing from the command line.

    ``defaults`` is the config the verb fits with (W1Config's unless given; ConditionalConfig's for
    ``screen``); ``conditional``, for ``fit``, the one ``--conditional`` fits with, named in the
    help where it differs. The help thus states the defaults the verb really uses.
    """
    base = W1Config() if defaults is None else defaults

    def default(name: str, shown: Callable[[object], str] = str) -> str:
        text = shown(getattr(base, name))
        if conditional is not None and getattr(conditional, name) != getattr(base, name):
            text += f", {shown(getattr(conditional, name))} with --conditional"
        return f"default: {text}"

    parser.add_argument(
        "--potential-iters", type=int, default=None, help=f"phase-1 steps ({default('potential_iters')})"
    )
    parser.add_argument(
        "--step-iters",
        type=int,
        default=None,
        help=f"steps of the gan step-size learner ({default('step_iters')})",
    )
    parser.add_argument(
        "--regression-iters",
        type=int,
        default=None,
        help=f"steps of the minibatch-OT regression ({default('regression_iters')})",
    )
    parser.add_argument(
        "--energy-iters",
        type=int,
        default=None,
        help=f"steps of the energy-distance refinement after the regression ({default('energy_iters')})",
    )
    parser.add_argument(
        "--learner",
        choices=STEP_SIZE_LEARNERS,
        default=None,
        help=f"step-size learner ({default('step_size_learner')})",
    )
    parser.add_argument(
        "--effect-alpha",
        type=_or_none(float),
        default=None,
        help=f"level of the test for a response, the same for every method that moves cells: a perturbation "
        f"whose cells cannot be told from the controls at this level is predicted as the controls; 'none' "
        f"switches the test off ({default('effect_alpha')})",
    )
    parser.add_argument(
        "--shrink-response",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="move cells only the share of the response above the sampling noise of the training groups "
        "(positive-part James-Stein; helps weak responses, costs strong ones a few percent; "
        f"{default('shrink_response', lambda on: 'on' if on else 'off')})",
    )
    parser.add_argument(
        "--patience",
        type=_or_none(int),
        default=None,
        help=f"early stopping: validation checks without improvement before a phase stops; 'none' runs "
        f"the full schedule ({default('patience')})",
    )
    parser.add_argument("--device", default=None, help=f"cpu, cuda, cuda:N or auto ({default('device')})")


def _or_none(kind: type[int] | type[float]) -> Callable[[str], int | float | str]:
    """An argparse type: a number of ``kind``, or ``"none"`` (``--patience``, ``--effect-alpha``)."""
    what = "a whole number" if kind is int else "a number"

    def parse(text: str) -> int | float | str:
        if text.strip().lower() == "none":
            return "none"
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} or 'none'") from None

    return parse


@overload
def solver_config(args: argparse.Namespace) -> W1Config: ...
@overload
def solver_config(args: argparse.Namespace, kind: type[C]) -> C: ...
def solver_config(args: argparse.Namespace, kind: type[W1Config] = W1Config) -> W1Config:
    """A config of ``kind`` (W1Config or ConditionalConfig) with its own defaults and the command-line overrides."""
    changes = {
        "potential_iters": args.potential_iters,
        "step_iters": args.step_iters,
        "regression_iters": args.regression_iters,
        "energy_iters": args.energy_iters,
        "step_size_learner": args.learner,
        "device": args.device,
        "shrink_response": args.shrink_response,
    }
    config = kind(**{k: v for k, v in changes.items() if v is not None})
    for name in ("effect_alpha", "patience"):  # "none" switches the test / early stopping off
        value = getattr(args, name)
        if value is not None:
            config = config.replace(**{name: None if value == "none" else value})
    return config
