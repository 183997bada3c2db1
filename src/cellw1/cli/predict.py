"""``cellw1 predict``: apply saved models to control cells and write the predictions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..files.atomic import atomic_output
from ..files.outputs import check_output
from ..io.readers import read_in_memory
from ..io.source import open_source
from ..pp.labels import label_series
from ..tl.collection import ModelCollection, load
from ..tl.conditional import ConditionalModel
from ..tl.model import PerturbationModel
from ..tl.prediction import PREDICT_CHUNK
from ._common import add_disk_argument


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cellw1 predict`` and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "predict",
        help="predict perturbed cells from control cells with a saved model",
        description=(
            "Load a model directory written by `cellw1 fit` (one model, or a collection: then every "
            "perturbation is predicted and the results stacked) and predict the perturbed state of the "
            "cells in an .h5ad file (or .zarr store); writes a new .h5ad or .zarr (the input is not "
            "modified). The output is written a chunk of cells at a time; with --on-disk the input is read "
            "that way too, so files larger than memory can be predicted."
        ),
    )
    parser.add_argument("model", type=Path, help="model directory written by `cellw1 fit`")
    parser.add_argument("data", type=Path, help=".h5ad file (or .zarr store) of control cells")
    parser.add_argument("--out", type=Path, required=True, help="output .h5ad file or .zarr store of predicted cells")
    add_disk_argument(parser, "predictions are written in chunks")
    parser.add_argument(
        "--controls-only",
        action="store_true",
        help=(
            "predict only the cells labelled as the model's control (its condition key and control label). One "
            "model: write them too, on the model's scale, after the predicted cells: obs[condition key] labels the "
            "predicted cells with the perturbation and these with the control, so the file goes to `cell-eval run "
            "-ap` as it is. A collection (its models each on their own scale): only the predictions, stacked as "
            "without this option, obs[condition key] kept as the input's and obs['_prediction'] naming the "
            "perturbation; for cell-eval, give one model's directory (its sub-folder of MODEL)"
        ),
    )
    parser.add_argument(
        "--key-added",
        default=None,
        metavar="NAME",
        help=(
            "write a copy of the input (every gene; with --controls-only its control cells) with the prediction in "
            "layers[NAME] instead of a new X: X is the input's, genes the model does not cover are NaN in the layer, "
            "var[NAME_modelled] marks the modelled ones, obs[NAME_response] and uns[NAME] are added (.h5ad, in memory); "
            "a model fitted on an embedding (--obsm-key) puts it in obsm[NAME] instead"
        ),
    )
    _add_condition_arguments(parser)
    parser.add_argument(
        "--chunk-cells", type=int, default=PREDICT_CHUNK, help="cells predicted at once (default: %(default)s)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Predict with a saved model and write the predictions; the exit status."""
    if args.out.suffix.lower() not in (".h5ad", ".zarr"):
        raise InputError(f"--out {str(args.out)!r} must end in .h5ad or .zarr (which picks the format).")
    kind: Literal["store", "file"] = "store" if args.out.suffix.lower() == ".zarr" else "file"
    check_output(args.out, kind=kind, inputs=[args.data], what="--out")
    model = load(args.model)
    condition = _condition_options(model, args)
    if args.key_added is not None and (isinstance(model, ModelCollection) or args.on_disk or kind != "file"):
        raise InputError(
            "--key-added writes a copy of the input in memory to an .h5ad with one model's prediction as a layer; "
            "give one model's directory, drop --on-disk and use --out *.h5ad."
        )
    data = str(args.data) if args.on_disk else read_in_memory(args.data)
    cells = control_cells(model, data) if args.controls_only else None
    if args.key_added is not None:
        assert not isinstance(model, ModelCollection)  # refused above
        result = model.predict(
            data,
            cells=cells,
            key_added=args.key_added,
            chunk_cells=args.chunk_cells,
            progress=args.progress,
            **condition,
        )
        assert not isinstance(result, Path)  # key_added returns the AnnData
        with atomic_output(args.out, suffix=".h5ad") as tmp:
            result.write_h5ad(tmp)
        out = args.out
    elif isinstance(model, PerturbationModel | ConditionalModel):
        out = model.predict(
            data,
            out=args.out,
            cells=cells,
            chunk_cells=args.chunk_cells,
            progress=args.progress,
            with_controls=args.controls_only,
            **condition,
        )
    else:
        out = model.predict(data, out=args.out, cells=cells, chunk_cells=args.chunk_cells, progress=args.progress)
    print(f"wrote the predicted cells to {out}")
    return 0


def control_cells(model: PerturbationModel | ModelCollection | ConditionalModel, data: Any) -> np.ndarray:
    """Mask of the cells labelled as ``model``'s control in ``data`` (an AnnData or a path).

    For a collection, its models must share one condition key and one control (as those of
    ``cellw1 fit`` do).
    """
    models = list(model.values()) if isinstance(model, ModelCollection) else [model]
    if len({(m.condition_key, m.control) for m in models}) > 1:
        raise InputError(
            "--controls-only: the collection's models have different controls; predict with each model's directory."
        )
    first = models[0]
    with open_source(data, "cellw1 predict") as source:
        obs = source.obs
    if first.condition_key not in obs:
        raise InputError(
            f"--controls-only: obs has no column {first.condition_key!r} (the model's condition key); "
            f"available: {list(obs.columns)}."
        )
    mask = (label_series(obs[first.condition_key], key=first.condition_key, warn=False) == first.control).to_numpy()
    if not mask.any():
        raise InputError(f"--controls-only: no cell has obs[{first.condition_key!r}] == {first.control!r}.")
    return mask


def _add_condition_arguments(parser: argparse.ArgumentParser) -> None:
    """``--perturbation`` and ``--dose``, on ``cellw1 predict``."""
    parser.add_argument(
        "--perturbation", default=None, help="conditional models: the perturbation to predict ('A+B' for several)"
    )
    parser.add_argument("--dose", type=float, default=None, help="conditional models fitted with doses: the dose")


def _condition_options(model: Any, args: argparse.Namespace) -> dict[str, Any]:
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
