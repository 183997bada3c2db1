"""The conditional model on the command line: ``cellw1 fit --conditional`` and ``cellw1 predict --perturbation``."""

from __future__ import annotations

import argparse
from typing import Any

from .._io import check_output
from ..errors import InputError
from ..ot.conditional import ConditionalConfig
from ..tl.conditional import ConditionalModel, fit_conditional
from ._common import read_h5ad, solver_config


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """``--conditional`` and its options, on ``cellw1 fit``."""
    group = parser.add_argument_group("one conditional model for many perturbations")
    group.add_argument(
        "--conditional",
        action="store_true",
        help="fit one W1 model for all --perturbation labels (default: all but the control) instead of one per label",
    )
    group.add_argument("--dose-key", default=None, help="with --conditional: numeric obs column of doses")
    group.add_argument(
        "--embedding-key",
        default=None,
        help="with --conditional: uns key of a dict label -> vector (encode labels by their vectors)",
    )


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """``--perturbation`` and ``--dose``, on ``cellw1 predict``."""
    parser.add_argument(
        "--perturbation", default=None, help="conditional models: the perturbation to predict ('A+B' for several)"
    )
    parser.add_argument("--dose", type=float, default=None, help="conditional models fitted with doses: the dose")


def run_fit(args: argparse.Namespace) -> int:
    """Fit and save one :class:`ConditionalModel` (``cellw1 fit --conditional``)."""
    if args.obsm_key is not None or args.method != "w1" or args.scheduler is not None:
        raise InputError("--conditional fits one W1 model from expression: drop --obsm-key, --method and --scheduler.")
    if args.buffer_cells is not None and not args.on_disk:
        raise InputError("--buffer-cells applies with --on-disk only.")
    check_output(args.out, kind="directory", inputs=[args.data], what="--out")
    labels = args.perturbation or ["all"]
    config = solver_config(args, ConditionalConfig)  # the conditional defaults, then the options given
    model = fit_conditional(
        str(args.data) if args.on_disk else read_h5ad(args.data),
        args.condition_key,
        args.control,
        None if "all" in labels else labels,
        dose_key=args.dose_key,
        embedding_key=args.embedding_key,
        space=args.space,
        config=config,
        seed=args.seed,
        layer=args.layer,
        input_kind=args.input_kind,
        progress=args.progress,
        buffer_cells=args.buffer_cells,
    )
    model.save(args.out)
    print(f"saved {model!r} to {args.out}")
    return 0


def predict_options(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Return the condition keywords of ``predict`` for ``model``; clear errors for misplaced flags."""
    if isinstance(model, ConditionalModel):
        if args.perturbation is None:
            raise InputError(f"a conditional model needs --perturbation; it was trained on {model.perturbations}.")
        return {"perturbation": args.perturbation, "dose": args.dose}
    if args.perturbation is not None or args.dose is not None:
        raise InputError(
            "--perturbation and --dose are for conditional models (cellw1 fit --conditional); this "
            "model predicts its own perturbation."
        )
    return {}
