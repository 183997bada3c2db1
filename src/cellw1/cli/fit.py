"""``cellw1 fit``: fit perturbation models from an .h5ad file and save them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files.outputs import check_output
from ..io.readers import read_in_memory
from ..ot.config import ConditionalConfig, W1Config
from ..parallel.perturbations import fit_all
from ..tl.api import fit
from ..tl.conditional import fit_conditional
from ..tl.methods import ALIASES, METHODS
from ._common import add_data_arguments, add_disk_argument, add_solver_arguments, solver_config


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``cellw1 fit`` and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "fit",
        help="fit control -> perturbation models and save them",
        description=(
            "Fit a model mapping control cells to perturbed cells and save it to a directory. "
            "Give --perturbation once for one model, several times (or 'all') for a collection. "
            "A collection is saved model by model as each is fitted; running again with the same --out "
            "fits only the perturbations not saved there yet. With --scheduler the perturbations are "
            "fitted in parallel by Dask workers (needs cellw1[distributed])."
        ),
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--perturbation",
        action="append",
        default=None,
        help="perturbation label to model (repeatable; 'all' = every non-control label; "
        "required without --conditional)",
    )
    parser.add_argument(
        "--method",
        choices=(*METHODS, *ALIASES),
        default="w1",
        help="prediction method (default: %(default)s; 'scgen' is a deprecated alias of 'mean_shift')",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output model directory (a collection there is resumed: saved models are not fitted again)",
    )
    parser.add_argument(
        "--shared-space",
        action="store_true",
        help="for a collection (a screen): fit the normalisation and embedding once, on the controls and every "
        "perturbation, and reuse them in each fit (default: one per perturbation, as for a single model)",
    )
    add_solver_arguments(parser, conditional=ConditionalConfig())
    _add_conditional_arguments(parser)
    add_disk_argument(parser, "every method")
    parser.add_argument(
        "--buffer-cells",
        type=int,
        default=None,
        help="with --on-disk: cells of each group held in memory at once (default: 32768)",
    )
    group = parser.add_argument_group("parallel fitting of a collection (Dask)")
    group.add_argument(
        "--scheduler",
        default=None,
        help="'local' (worker processes on this machine) or a Dask scheduler address such as "
        "tcp://host:8786 (default: fit one after the other in this process)",
    )
    group.add_argument(
        "--n-workers",
        type=int,
        default=None,
        help="worker processes of --scheduler local (default: one per CPU core)",
    )
    group.add_argument(
        "--threads-per-worker",
        type=int,
        default=1,
        help="torch threads of each fit on a worker (default: %(default)s)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Fit and save one model, a collection, or a conditional model; the exit status."""
    if args.conditional:
        if args.shared_space:
            raise InputError("--shared-space is for a collection of models; a conditional model has one space already.")
        return _run_conditional(args)
    if not args.perturbation:
        raise InputError("give --perturbation (repeatable, or 'all'), or --conditional for one model of all of them.")
    if args.buffer_cells is not None and not args.on_disk:
        raise InputError("--buffer-cells applies with --on-disk only.")
    w1_config: W1Config = solver_config(args)  # its effect_alpha is every method's gate; the rest is W1's
    effect_alpha = w1_config.effect_alpha
    config = w1_config if args.method == "w1" else None
    check_output(args.out, kind="directory", inputs=[args.data], what="--out")  # before the fit, not after
    adata = str(args.data) if args.on_disk else read_in_memory(args.data)
    common: dict[str, Any] = dict(
        layer=args.layer,
        obsm_key=args.obsm_key,
        space=args.space,
        method=args.method,
        config=config,
        input_kind=args.input_kind,
        effect_alpha=effect_alpha,
        seed=args.seed,
        progress=args.progress,
    )
    if args.buffer_cells is not None:
        common["buffer_cells"] = args.buffer_cells
    labels = args.perturbation
    parallel = dict(scheduler=args.scheduler, n_workers=args.n_workers, threads_per_worker=args.threads_per_worker)
    if len(labels) == 1 and labels[0] != "all":
        if args.shared_space:
            raise InputError("--shared-space applies to a collection: give several --perturbation, or 'all'.")
        if args.scheduler is not None:
            print(
                "cellw1: note: one perturbation is fitted in this process; --scheduler is for several.", file=sys.stderr
            )
        model = fit(adata, args.condition_key, args.control, labels[0], **common)
        model.save(args.out)
        print(f"saved {model!r} to {args.out}")
        return 0
    progress = common.pop("progress")
    collection = fit_all(
        adata,
        args.condition_key,
        args.control,
        None if "all" in labels else labels,
        out=args.out,
        progress=progress,
        shared_space=args.shared_space,
        **parallel,
        **common,
    )
    fitted = len(collection) - len(collection.resumed)
    resumed = len(collection.resumed)
    print(f"saved {len(collection)} models to {args.out} ({fitted} fitted now, {resumed} already there)")
    for label, reason in collection.failures.items():
        print(f"failed: {label}: {reason}")
    return 0 if not collection.failures else 1


def _add_conditional_arguments(parser: argparse.ArgumentParser) -> None:
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


def _run_conditional(args: argparse.Namespace) -> int:
    """Fit and save one :class:`ConditionalModel` (``cellw1 fit --conditional``)."""
    if args.method != "w1" or args.scheduler is not None:
        raise InputError("--conditional fits one W1 model in this process: drop --method and --scheduler.")
    if args.buffer_cells is not None and not args.on_disk:
        raise InputError("--buffer-cells applies with --on-disk only.")
    check_output(args.out, kind="directory", inputs=[args.data], what="--out")
    labels = args.perturbation or ["all"]
    config = solver_config(args, ConditionalConfig)  # the conditional defaults, then the options given
    model = fit_conditional(
        str(args.data) if args.on_disk else read_in_memory(args.data),
        args.condition_key,
        args.control,
        None if "all" in labels else labels,
        dose_key=args.dose_key,
        embedding_key=args.embedding_key,
        space=args.space,
        config=config,
        seed=args.seed,
        layer=args.layer,
        obsm_key=args.obsm_key,
        input_kind=args.input_kind,
        progress=args.progress,
        buffer_cells=args.buffer_cells,
    )
    model.save(args.out)
    print(f"saved {model!r} to {args.out}")
    return 0
