"""``cellw1 predict``: apply saved models to control cells and write the predictions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..model import load
from ._common import read_h5ad, write_h5ad


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict perturbed cells from control cells with a saved model",
        description=(
            "Load a model directory written by `cellw1 fit` and predict the perturbed state of the "
            "cells in an .h5ad file; writes a new .h5ad (the input is not modified)."
        ),
    )
    parser.add_argument("model", type=Path, help="model directory written by `cellw1 fit`")
    parser.add_argument("data", type=Path, help=".h5ad file of control cells")
    parser.add_argument("--out", type=Path, required=True, help="output .h5ad file of predicted cells")
    return parser


def run(args: argparse.Namespace) -> int:
    model = load(args.model)
    adata = read_h5ad(args.data)
    predicted = model.predict(adata)
    write_h5ad(predicted, args.out)
    print(f"wrote {predicted.n_obs} predicted cells x {predicted.n_vars} features to {args.out}")
    return 0
