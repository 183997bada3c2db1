"""``cellw1 screen``: a pooled screen in, the table of calls, responders, clusters, figures and the model out."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..files.outputs import check_output
from ..io.readers import read_in_memory
from ..ot.config import ConditionalConfig
from ..pl import screen_effects, screen_map
from ..tl.screen import screen
from ._common import add_disk_argument, add_solver_arguments, solver_config


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``screen`` on the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "screen",
        help="call, describe and cluster every perturbation of a screen with one conditional W1 model",
        description=(
            "Test every perturbation against one fixed sample of controls (BH q-values), fit one "
            "conditional W1 model, and write screen.csv (one row per perturbation), cells.csv "
            "(responder score per perturbed cell), effects.png, map.png and the model (model/)."
        ),
    )
    parser.add_argument("data", type=Path, help="an .h5ad file (or .zarr store) of cells x genes")
    parser.add_argument("--condition-key", required=True, help="obs column holding each cell's perturbation")
    parser.add_argument("--control", required=True, help="label of the control cells in that column")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--layer", default=None, help="read expression from this layer instead of X")
    parser.add_argument("--space", choices=("pca", "genes"), default="pca", help="fitted space (default: %(default)s)")
    parser.add_argument("--fdr", type=float, default=0.05, help="level of the calls on q-values (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)")
    add_disk_argument(parser, "for screens larger than memory")
    add_solver_arguments(parser, ConditionalConfig())  # screen fits one conditional model
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the screen and write its files."""
    check_output(args.out, kind="directory", inputs=[args.data], what="--out")
    result = screen(
        str(args.data) if args.on_disk else read_in_memory(args.data),
        args.condition_key,
        args.control,
        space=args.space,
        config=solver_config(args, ConditionalConfig),
        fdr=args.fdr,
        seed=args.seed,
        layer=args.layer,
        progress=args.progress,
    )
    result.save(args.out)
    screen_effects(result, fdr=args.fdr, save=args.out / "effects.png")
    screen_map(result, save=args.out / "map.png")
    print(f"{result!r}; wrote {args.out}")
    return 0
