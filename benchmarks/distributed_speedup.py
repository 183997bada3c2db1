"""Speed-up of ``fit_all`` on a local Dask cluster over the in-process loop, same models.

The 25 CRISPR knock-outs of Papalexi et al. (``../shared/data/papalexi2021_eccite_thp1_crispr.h5ad``,
cells with ``grna_frac >= 0.8``, condition ``target``, control ``non-targeting``, 299 genes) are
each fitted with the W1 method (default :class:`cellw1.W1Config` unless changed below):

1. one after the other in this process, with one torch thread;
2. by a ``LocalCluster`` of ``--n-workers`` (default 2) single-thread worker processes
   (``fit_all(..., scheduler="local")``; the time includes starting and closing the cluster).

Both runs use the same seed, so the models must be identical: the predictions of every model
for the control cells are compared exactly. Prints the seconds, the speed-up and the check,
and writes them to ``benchmarks/results/distributed_speedup.json``.

Long (25 full fits, twice): run on a quiet machine with at least ``--n-workers`` free cores::

    python -m benchmarks distributed_speedup
    python -m benchmarks distributed_speedup --perturbations STAT1,JAK2 --potential-iters 50 --out /tmp/x.json
    python -m benchmarks distributed_speedup --shared-space  # one normalisation and PCA for every target
"""

# %%
from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence

import numpy as np
import torch

import cellw1

from ._common import DATASETS, RESULTS, papalexi, parse, parser, write_json

OUT = RESULTS / "distributed_speedup.json"
KEY, CONTROL = DATASETS["papalexi"].key, DATASETS["papalexi"].control


def main(argv: Sequence[str] | None = None) -> None:
    """Fit all targets in-process and on a local Dask cluster, compare the seconds and predictions, write both."""
    p = parser(
        __doc__,
        name="distributed_speedup",
        seed=0,
        out=OUT,
        quick={"perturbations": "STAT1,JAK2", "potential_iters": 50, "step_iters": 50},
    )
    p.add_argument("--perturbations", default=None, help="comma-separated targets (default: all 25)")
    p.add_argument("--n-workers", type=int, default=2)
    p.add_argument("--potential-iters", type=int, default=None, help="phase-1 steps (default: W1Config's)")
    p.add_argument("--step-iters", type=int, default=None, help="phase-2 steps (default: W1Config's)")
    p.add_argument(
        "--shared-space", action="store_true", help="fit_all(shared_space=True): one space for every perturbation"
    )
    args = parse(p, argv)
    changes = {"potential_iters": args.potential_iters, "step_iters": args.step_iters}
    config = cellw1.W1Config(**{k: v for k, v in changes.items() if v is not None})
    adata = papalexi()
    labels = args.perturbations.split(",") if args.perturbations else None
    common = dict(method="w1", config=config, seed=args.seed, progress=False, shared_space=args.shared_space)

    torch.set_num_threads(1)
    start = time.perf_counter()
    here = cellw1.fit_all(adata, KEY, CONTROL, labels, **common)
    sequential = time.perf_counter() - start
    print(f"in-process, 1 torch thread: {len(here)} models in {sequential:.1f} s", flush=True)

    start = time.perf_counter()
    there = cellw1.fit_all(
        adata, KEY, CONTROL, labels, scheduler="local", n_workers=args.n_workers, threads_per_worker=1, **common
    )
    parallel = time.perf_counter() - start
    print(f"LocalCluster, {args.n_workers} workers x 1 thread: {len(there)} models in {parallel:.1f} s", flush=True)

    control = adata[adata.obs[KEY] == CONTROL]
    largest = 0.0
    for label in here:
        a, b = here[label].predict(control).X, there[label].predict(control).X
        largest = max(largest, float(np.abs(a - b).max()))
    identical = list(here) == list(there) and largest == 0.0
    speedup = sequential / parallel
    print(f"speed-up {speedup:.2f}x; identical predictions: {identical} (largest difference {largest:g})")

    result = {
        "dataset": DATASETS["papalexi"].file,
        "filter": "grna_frac >= 0.8",
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "perturbations": list(here),
        "failures": {**here.failures, **there.failures},
        "config": config.to_dict(),
        "seed": args.seed,
        "shared_space": args.shared_space,
        "load_average": os.getloadavg(),
        "n_workers": args.n_workers,
        "threads_per_worker": 1,
        "sequential_seconds": sequential,
        "distributed_seconds": parallel,
        "distributed_seconds_include": "starting and closing the LocalCluster",
        "speedup": speedup,
        "identical_predictions": identical,
        "largest_prediction_difference": largest,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cellw1": cellw1.__version__,
    }
    write_json(args.out, result, args)
