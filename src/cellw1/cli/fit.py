"""``cellw1 fit``: fit perturbation models from an .h5ad file and save them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..api import fit, fit_all
from ..methods import METHODS
from ._common import add_data_arguments, add_solver_arguments, read_h5ad, solver_config


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "fit",
        help="fit control -> perturbation models and save them",
        description=(
            "Fit a model mapping control cells to perturbed cells and save it to a directory. "
            "Give --perturbation once for one model, several times (or 'all') for a collection."
        ),
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--perturbation", action="append", required=True,
        help="perturbation label to model (repeatable; 'all' = every non-control label)",
    )
    parser.add_argument("--method", choices=METHODS, default="w1", help="prediction method (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output model directory")
    add_solver_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    adata = read_h5ad(args.data)
    common = dict(
        layer=args.layer, obsm_key=args.obsm_key, space=args.space, method=args.method,
        config=solver_config(args) if args.method == "w1" else None,
        input_kind=args.input_kind, seed=args.seed, progress=args.progress,
    )
    labels = args.perturbation
    if len(labels) == 1 and labels[0] != "all":
        model = fit(adata, args.condition_key, args.control, labels[0], **common)
        model.save(args.out)
        print(f"saved {model!r} to {args.out}")
        return 0
    collection = fit_all(adata, args.condition_key, args.control, None if "all" in labels else labels, **common)
    collection.save(args.out)
    print(f"saved {len(collection)} models to {args.out}")
    for label, reason in collection.failures.items():
        print(f"failed: {label}: {reason}")
    return 0 if not collection.failures else 1
