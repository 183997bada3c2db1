"""``cellw1 evaluate``: benchmark methods on held-out cells with the paper's protocol."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from ..datasets import synthetic_perturbation
from ..errors import ConfigError, InputError
from ..eval.confidence import check_confidence
from ..eval.degenes import DE_DIRECTIONS
from ..eval.evaluation import DEFAULT_METHODS, evaluate
from ..files.outputs import check_output
from ..io.readers import read_in_memory
from ..ot.config import W2Config
from ..tl.scgen import ScGenConfig
from ._common import add_solver_arguments, solver_config


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command and its arguments to ``subparsers``; returns its parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="benchmark methods on held-out cells (paper protocol)",
        description=(
            "Split each perturbation's cells into training and test cells (--splits seeded splits), fit every "
            "method, predict the test control cells and score them against the test perturbed cells: r2, l2, MMD, "
            "energy distance and W1 on the top DE genes, Systema's PearsonDelta from the perturbed centroid and "
            "centroid accuracy, and the response distribution (1-D W1 of response scores, responder share). The "
            "default methods are the baselines (identity, mean_shift, global_mean, additive for 'A+B' labels, "
            "nearest: the nearest perturbation's W1 map), the observed ceiling and w1; w2 and scgen_vae are slow "
            "and optional. The report compares w1 with the best baseline of every metric (bootstrap CI over "
            "perturbations, Wilcoxon p) in report.md / report.html with a forest plot, and keeps every row in CSV. "
            "Without DATA, runs on cellw1's built-in SYNTHETIC dataset (negative-binomial counts, 3 cell types, a "
            "nonlinear cell-type-specific response 'pertA' and a no-effect 'NULL')."
        ),
    )
    parser.add_argument(
        "data", type=Path, nargs="?", default=None, help=".h5ad file (default: built-in synthetic data)"
    )
    parser.add_argument("--condition-key", default=None, help="obs column with conditions (required with DATA)")
    parser.add_argument("--control", default=None, help="control label (required with DATA)")
    parser.add_argument("--perturbations", default=None, help="comma-separated perturbations (default: all)")
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="comma-separated methods (default: %(default)s)"
    )
    parser.add_argument(
        "--space", choices=("genes", "pca", "autoencoder"), default="genes", help="default: %(default)s"
    )
    parser.add_argument("--layer", default=None, help="read expression from this layer instead of X")
    parser.add_argument("--obsm-key", default=None, help="evaluate on this obsm embedding (all features scored)")
    parser.add_argument(
        "--input-kind",
        choices=("auto", "counts", "log", "continuous"),
        default="auto",
        help="counts, log (log-normalised), continuous (any sign, never clipped); default: detected",
    )
    _add_protocol_arguments(parser)
    parser.add_argument(
        "--w2-iters",
        type=int,
        default=W2Config().n_iters,
        help="W2/ICNN outer iterations (default: %(default)s, W2Config's; the paper uses 100,000)",
    )
    parser.add_argument(
        "--suite",
        choices=("cellw1", "cell-eval"),
        default="cellw1",
        help="metrics: cellw1's own, or also cell-eval's full profile per split (needs cellw1[eval]; default: %(default)s)",
    )
    parser.add_argument(
        "--scgen-epochs",
        type=int,
        default=None,
        help="training epochs of the real scGen, method scgen_vae (default: the scgen package's 100)",
    )
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    _add_report_arguments(parser)
    add_solver_arguments(parser)
    return parser


def _add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """How the cells are split and scored: splits, DE genes, out-of-distribution holdout."""
    parser.add_argument(
        "--splits",
        type=int,
        default=None,
        help="seeded random splits per perturbation (default: 5 for data up to 100,000 cells, else 1; paper: 5)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="deprecated alias of --splits")
    parser.add_argument("--de-genes", type=int, default=50, help="top DE genes scored (default: %(default)s)")
    parser.add_argument(
        "--de-direction",
        choices=DE_DIRECTIONS,
        default="up",
        help="rank the DE genes by the most up-regulated (the paper's protocol) or the most changed in either "
        "direction, so a knock-out's loss of expression is scored (default: %(default)s)",
    )
    parser.add_argument(
        "--holdout",
        default=None,
        metavar="KEY=VALUE",
        help="out-of-distribution: hold out cells with obs[KEY] == VALUE",
    )


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the report goes and what it compares."""
    parser.add_argument("--out", type=Path, default=Path("cellw1-report"), help="report folder (default: %(default)s)")
    parser.add_argument(
        "--reference",
        default=None,
        help="method compared with every baseline in the report and its verdicts (default: w1, when evaluated)",
    )
    parser.add_argument(
        "--confidence", type=float, default=0.95, help="level of the bootstrap intervals (default: %(default)s)"
    )


def _check_report_options(args: argparse.Namespace) -> None:
    """Fail before any fit when ``--confidence`` is not a level or ``--reference`` is not among ``--methods``."""
    check_confidence(args.confidence, f"--confidence {args.confidence!r}")
    methods = DEFAULT_METHODS if args.methods is None else tuple(comma_items(args.methods))
    if args.reference is not None and args.reference not in methods:
        raise ConfigError(f"--reference {args.reference!r} is not among the evaluated methods {list(methods)}.")


def comma_items(text: str) -> list[str]:
    """The items of a comma-separated option, without the spaces around them (``"STAT1, JAK2"``)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def run(args: argparse.Namespace) -> int:
    """Evaluate the methods on ``--data`` (or a synthetic data set) and write the tables and report to ``--out``.

    Returns the exit code, 0.
    """
    config = solver_config(args)
    check_output(args.out, kind="directory", inputs=[args.data], what="--out")
    _check_report_options(args)
    if args.data is None:
        adata = synthetic_perturbation(seed=args.seed)
        condition_key, control = args.condition_key or "condition", args.control or "control"
        print(f"no data given: using cellw1's built-in SYNTHETIC dataset ({adata.n_obs} cells x {adata.n_vars} genes)")
    else:
        if args.condition_key is None or args.control is None:
            raise InputError("with DATA, give --condition-key and --control (the obs column and the control label).")
        adata = read_in_memory(args.data)
        condition_key, control = args.condition_key, args.control
    holdout = None
    if args.holdout is not None:
        key, sep, value = args.holdout.partition("=")
        if not sep:
            raise InputError(f"--holdout {args.holdout!r} must look like KEY=VALUE, e.g. cell_type=CD4T.")
        holdout = (key, value)
    result = evaluate(
        adata,
        condition_key,
        control,
        None if args.perturbations is None else comma_items(args.perturbations),
        methods=comma_items(args.methods),
        space=args.space,
        layer=args.layer,
        obsm_key=args.obsm_key,
        n_splits=args.splits,
        n_repeats=args.repeats,
        n_de_genes=args.de_genes,
        de_direction=args.de_direction,
        holdout=holdout,
        config=config,
        w2_config=W2Config(n_iters=args.w2_iters),
        input_kind=args.input_kind,
        effect_alpha=config.effect_alpha,
        scgen_config=None if args.scgen_epochs is None else ScGenConfig(max_epochs=args.scgen_epochs),
        suite=args.suite,
        seed=args.seed,
        progress=args.progress,
    )
    reference = args.reference or "w1"
    written = result.save(args.out, reference=reference, confidence=args.confidence)
    summary = result.summary()
    table = summary.pivot(index="method", columns="metric", values="median").reindex(result.methods)
    with pd.option_context("display.width", 120, "display.float_format", "{:.4g}".format):
        print("median over perturbations and splits:")
        print(table.to_string())
    gated, alpha = result.settings.get("gated", []), result.settings.get("effect_alpha")
    if alpha is not None:
        splits = len(result.settings["perturbations"]) * result.settings["n_splits"]
        names = sorted({perturbation for perturbation, _ in gated})
        print(
            f"test for a response (effect_alpha={alpha:g}): {len(gated)} of {splits} perturbation splits had none and "
            f"were predicted as their controls by every method{': ' + ', '.join(names) if names else ''}"
        )
    verdicts = result.verdicts(reference, args.confidence) if reference in result.methods else None
    if verdicts is not None and len(verdicts):
        print(f"{reference} against the best baseline of each metric (report.md says where it loses):")
        for text in verdicts["verdict"]:
            print(f"  {text}")
    print(f"wrote {len(written)} files to {args.out}")
    return 0
