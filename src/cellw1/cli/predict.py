"""``cellw1 predict``: apply saved models to control cells and write the predictions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..model import PREDICT_CHUNK, ModelCollection, PerturbationModel, load
from ._common import add_disk_argument, read_h5ad, write_h5ad


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict perturbed cells from control cells with a saved model",
        description=(
            "Load a model directory written by `cellw1 fit` and predict the perturbed state of the "
            "cells in an .h5ad file (or .zarr store); writes a new .h5ad or .zarr (the input is not "
            "modified). With --on-disk the input is read and the output written a chunk of cells at a "
            "time, so files larger than memory can be predicted."
        ),
    )
    parser.add_argument("model", type=Path, help="model directory written by `cellw1 fit`")
    parser.add_argument("data", type=Path, help=".h5ad file (or .zarr store) of control cells")
    parser.add_argument("--out", type=Path, required=True, help="output .h5ad file or .zarr store of predicted cells")
    add_disk_argument(parser, "predictions are written in chunks")
    parser.add_argument(
        "--chunk-cells", type=int, default=PREDICT_CHUNK, help="cells predicted at once (default: %(default)s)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.out.suffix.lower() not in (".h5ad", ".zarr"):
        raise InputError(f"--out {str(args.out)!r} must end in .h5ad or .zarr (which picks the format).")
    model = load(args.model)
    if isinstance(model, ModelCollection) and (args.on_disk or args.out.suffix.lower() != ".h5ad"):
        raise InputError(
            "a collection predicts in memory to an .h5ad; for --on-disk or .zarr give one model's directory inside it."
        )
    data = str(args.data) if args.on_disk else read_h5ad(args.data)
    if isinstance(model, PerturbationModel):
        out = model.predict(data, out=args.out, chunk_cells=args.chunk_cells, progress=args.progress)
    else:
        out = write_h5ad(model.predict(data), args.out)
    print(f"wrote the predicted cells to {out}")
    return 0
