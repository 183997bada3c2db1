"""``cellw1 predict``: apply saved models to control cells and write the predictions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from .._io import check_output
from ..errors import InputError
from ..io.readers import open_disk_data
from ..pp.labels import label_series
from ..tl.collection import ModelCollection, load
from ..tl.model import PREDICT_CHUNK, PerturbationModel
from ..tl.conditional_model import ConditionalModel
from .conditional import add_predict_arguments, predict_options
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
        "--controls-only", action="store_true",
        help="predict only the cells labelled as the model's control (its condition key and control label)",
    )
    add_predict_arguments(parser)
    parser.add_argument(
        "--chunk-cells", type=int, default=PREDICT_CHUNK, help="cells predicted at once (default: %(default)s)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.out.suffix.lower() not in (".h5ad", ".zarr"):
        raise InputError(f"--out {str(args.out)!r} must end in .h5ad or .zarr (which picks the format).")
    kind = "store" if args.out.suffix.lower() == ".zarr" else "file"
    check_output(args.out, kind=kind, inputs=[args.data], what="--out")
    model = load(args.model)
    if isinstance(model, ModelCollection) and (args.on_disk or args.controls_only or args.out.suffix.lower() != ".h5ad"):
        raise InputError(
            "a collection predicts in memory to an .h5ad; for --on-disk, --controls-only or .zarr "
            "give one model's directory inside it."
        )
    condition = predict_options(model, args)
    data = str(args.data) if args.on_disk else read_h5ad(args.data)
    if isinstance(model, PerturbationModel | ConditionalModel):
        cells = control_cells(model, data) if args.controls_only else None
        out = model.predict(data, out=args.out, cells=cells, chunk_cells=args.chunk_cells, progress=args.progress,
                            **condition)
    else:
        out = write_h5ad(model.predict(data), args.out)
    print(f"wrote the predicted cells to {out}")
    return 0


def control_cells(model: PerturbationModel | ConditionalModel, data: Any) -> np.ndarray:
    """Mask of the cells labelled as ``model``'s control in ``data`` (an AnnData or a path)."""
    if isinstance(data, str):
        with open_disk_data(data) as disk:
            obs = disk.obs
    else:
        obs = data.obs
    if model.condition_key not in obs:
        raise InputError(
            f"--controls-only: obs has no column {model.condition_key!r} (the model's condition key); "
            f"available: {list(obs.columns)}."
        )
    mask = (label_series(obs[model.condition_key], key=model.condition_key, warn=False) == model.control).to_numpy()
    if not mask.any():
        raise InputError(f"--controls-only: no cell has obs[{model.condition_key!r}] == {model.control!r}.")
    return mask
