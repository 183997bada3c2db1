"""``cellw1 demo``: fit the W1 map on the paper's 2-D toys and draw Fig. 2-style plots.

Needs no data. For each toy it prints the learned dual W1 estimate beside POT's exact W1,
the energy distance of the transported cloud to the target and, for the bookshelf and
circles, how monotone the map is; it writes ``<toy>.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from ..datasets import TOYS, check_toy_names, load_toy
from ..eval.monotonicity import toy_scores
from ..files.atomic import atomic_write_bytes
from ..ot.solver import fit_map
from ..pl import transport
from ._common import add_solver_arguments, solver_config

DEFAULT_TOYS = ("bookshelf", "circles", "swiss_roll", "moons")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "demo",
        help="fit the W1 map on 2-D toy data and plot it (no data needed)",
        description=(
            "Fit the W1 map on the paper's 2-D toys (no data needed); print the dual and exact W1, "
            "the energy distance to the target and monotonicity; write <toy>.png and summary.json. "
            f"Toys: {', '.join(TOYS)}."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("cellw1-demo"), help="output folder (default: %(default)s)")
    parser.add_argument(
        "--toys", default=",".join(DEFAULT_TOYS), help="comma-separated toy names (default: %(default)s)"
    )
    parser.add_argument("--n", type=int, default=1000, help="points per side (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and fit (default: %(default)s)")
    add_solver_arguments(parser)
    return parser


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _line(name: str, row: dict[str, Any]) -> str:
    parts = [
        f"{name:<13}",
        f"W1 dual {row['w1_dual']:.4f}",
        f"exact W1 {row['exact_w1']:.4f}",
        f"energy {row['energy_distance']:.4f}",
    ]
    if "spearman" in row:
        parts.append(f"spearman {row['spearman']:+.3f}")
    if "inner_to_inner" in row:
        parts.append(f"inner->inner {row['inner_to_inner']:.3f}")
    parts.append(f"({row['seconds']:.1f} s)")
    return "  ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Fit, score and plot every requested toy; return 0."""
    names = check_toy_names([t.strip() for t in args.toys.split(",") if t.strip()])
    config = solver_config(args)
    out = Path(args.out)
    summary: dict[str, Any] = {"n": args.n, "seed": args.seed, "config": config.to_dict(), "toys": {}}
    for name in names:
        toy = load_toy(name, n=args.n, seed=args.seed)
        start = time.perf_counter()
        tmap = fit_map(toy.source, toy.target, config, args.seed, progress=args.progress)
        moved = tmap.transport(toy.source)
        row: dict[str, Any] = {"w1_dual": tmap.w1(toy.source, toy.target)}
        row.update(toy_scores(toy, moved, seed=args.seed))
        row["seconds"] = time.perf_counter() - start
        print(_line(name, row), flush=True)
        transport(
            toy.source,
            moved,
            toy.target,
            title=name,
            seed=args.seed,
            source_labels=toy.source_labels,
            save=out / f"{name}.png",
        )
        summary["toys"][name] = {k: _finite(v) for k, v in row.items()}
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(out / "summary.json", text.encode())
    print(f"wrote {len(names)} plot(s) and summary.json to {out}")
    return 0
