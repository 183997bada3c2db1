"""Time to quality of W1 solver settings: seconds of a whole fit against held-out MMD, over seeds.

The case of issue #4's headline target: d = 50 (PCA of cellw1's synthetic perturbation),
4,000 cells per side for training and another 4,000 per side held out for scoring. Each
named setting below changes :class:`cellw1.W1Config`'s defaults; every setting is fitted with
the same ``--seeds`` and reports, per seed, the whole-fit seconds, the seconds of each phase,
the steps each phase ran and the held-out MMD between transported and perturbed cells. The
table gives medians over seeds; ``benchmarks/results/time_to_quality.json`` keeps every run.

Run alone on a quiet machine (timings)::

    python -m benchmarks time_to_quality [--seeds 0,1,2] [--settings default,paper,...]
"""

# %%
from __future__ import annotations

import platform
import time
from collections.abc import Sequence

import numpy as np
import torch

import cellw1
from cellw1.eval.metrics import mmd

from ._common import RESULTS, markdown_table, one_thread, parse, parser, write_json
from .speed import make_data

OUT = RESULTS / "time_to_quality.json"

#: named changes to the default W1Config
SETTINGS: dict[str, dict] = {
    "default": {},
    "paper": {"paper": True},
    "potential_2000": {"potential_iters": 2000},
    "potential_1000": {"potential_iters": 1000},
    "patience_3": {"patience": 3},
    "eval_50": {"eval_every": 50},
    "eval_50_patience_3": {"eval_every": 50, "patience": 3},
    "batch_512_lr_2e-2": {"batch_size": 512, "potential_lr": 2e-2},
    "batch_128": {"batch_size": 128},
    "step_500": {"step_iters": 500},
    "potential_500": {"potential_iters": 500},
    "potential_700": {"potential_iters": 700},
    "potential_1000_patience_3": {"potential_iters": 1000, "patience": 3},
    "potential_1000_step_500": {"potential_iters": 1000, "step_iters": 500},
    "potential_700_step_500": {"potential_iters": 700, "step_iters": 500},
    "potential_300": {"potential_iters": 300},
    "potential_500_step_500": {"potential_iters": 500, "step_iters": 500},
}


def config_for(name: str) -> cellw1.W1Config:
    """The W1Config of setting ``name``: the paper's, or the default with the setting's changes."""
    changes = dict(SETTINGS[name])
    if changes.pop("paper", False):
        return cellw1.W1Config.paper()
    return cellw1.W1Config(**changes)


def fit_row(name: str, seed: int, data: tuple[np.ndarray, ...]) -> dict:
    """One fit of setting ``name``: its seconds, steps and held-out MMD."""
    src, tgt, test_src, test_tgt = data
    start = time.perf_counter()
    tmap = cellw1.fit_map(src, tgt, config_for(name), seed=seed)
    seconds = time.perf_counter() - start
    info = tmap.info
    row = {
        "setting": name,
        "seed": seed,
        "seconds": seconds,
        "potential_seconds": info["potential_seconds"],
        "step_size_seconds": info["step_size_seconds"],
        "potential_steps": info["potential_steps"],
        "potential_best_step": info["potential_best_step"],
        "step_size_steps": info["step_size_steps"],
        "step_size_best_step": info["step_size_best_step"],
        "val_dual": info["potential_val_dual"],
        "mmd": mmd(tmap.transport(test_src), test_tgt, max_points=2000),
    }
    print(
        f"{name:20s} seed {seed}: {seconds:5.1f} s (potential {row['potential_seconds']:.1f} s, "
        f"{row['potential_steps']} steps, best {row['potential_best_step']}; step size "
        f"{row['step_size_seconds']:.1f} s, {row['step_size_steps']} steps), mmd {row['mmd']:.5f}",
        flush=True,
    )
    return row


def main(argv: Sequence[str] | None = None) -> None:
    """Fit every setting on every seed, print the medians as a markdown table and write the rows."""
    p = parser(
        __doc__,
        name="time_to_quality",
        seeds="0,1,2",
        out=OUT,
        quick={"seeds": [0], "settings": "potential_300", "cells": 500},
    )
    p.add_argument("--settings", default="default,paper,potential_2000,potential_300,potential_1000")
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--cells", type=int, default=4000)
    args = parse(p, argv)
    names = args.settings.split(",")
    one_thread()
    data = make_data(args.dim, args.cells)
    rows = [fit_row(name, seed, data) for name in names for seed in args.seeds]
    table = []
    for name in names:
        mine = [r for r in rows if r["setting"] == name]
        table.append(
            [
                name,
                f"{np.median([r['seconds'] for r in mine]):.1f}",
                f"{np.median([r['potential_steps'] for r in mine]):.0f}",
                f"{np.median([r['mmd'] for r in mine]):.5f}",
                ", ".join(f"{r['mmd']:.5f}" for r in mine),
            ]
        )
    header = ["setting", "median seconds", "median potential steps", "median MMD", "MMD per seed"]
    print("\n" + markdown_table(header, table))
    machine = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    write_json(args.out, {"machine": machine, "dim": args.dim, "cells": args.cells, "rows": rows}, args, indent=1)
