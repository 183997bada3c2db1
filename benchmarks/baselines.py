"""Honest baselines on the shared real data: the mean shift, the real scGen (VAE) and W1, same splits.

Runs :func:`cellw1.evaluate` (the paper's protocol: split rule, top-50 DE genes chosen on the
training cells, r2 / l2 / MMD / energy; ``docs/method.md``) with methods ``identity``,
``mean_shift``, ``scgen_vae`` (the real scGen, ``pertpy.tl.Scgen``) and ``w1`` on:

- ``papalexi_strong6``: Papalexi 2021 CRISPR knock-outs (``grna_frac >= 0.8``), the targets
  STAT1, JAK2, IFNGR1, IFNGR2, SMAD4, ATF2, gene space (299 genes);
- ``zhao_iid``: Zhao 2021 panobinostat vs vehicle, gene space (300 genes);
- ``kang_pca_iid``: Kang 2018 IFN-beta, PCA-50 space (every method of a split shares the PCA,
  so scGen's VAE is trained on the 50 PCA coordinates there, not on the genes);
- ``kang_genes_iid``: Kang 2018 directly on the 6,998 genes (scGen's own setting).

scGen is trained with ``--scgen-epochs`` (default 50; pertpy's tutorial uses 100) and pertpy's
other defaults (800 hidden units, 100 latent dimensions, batch 32, early stopping with patience
25), on 2 shared CPU cores. One repeat per perturbation unless ``--repeats``. Writes each run's
``results.csv`` and ``summary.csv`` under ``benchmarks/results/baselines/<run>/`` and one
table of medians to ``benchmarks/results/baselines/medians.md``.

Needs pertpy (``pip install "cellw1[scgen]"``), best in a venv of its own::

    python3.11 -m venv scgen-venv && scgen-venv/bin/pip install torch==2.13.0
    scgen-venv/bin/pip install -e ".[dev,scgen]"
    scgen-venv/bin/python -m benchmarks baselines [--runs zhao_iid,...] [--methods ...]
"""

# %%
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import cellw1
from cellw1.tl.scgen import ScGenConfig

from ._common import RESULTS, kang, one_thread, papalexi, parse, parser, write_json, write_text, zhao

OUT = RESULTS / "baselines"
METHODS = ("identity", "mean_shift", "scgen_vae", "w1")
STRONG6 = ["STAT1", "JAK2", "IFNGR1", "IFNGR2", "SMAD4", "ATF2"]
SHOWN = ("mmd", "energy", "r2", "l2", "seconds")
CELL_EVAL_SHOWN = ("overlap_at_N", "pearson_delta", "mse", "de_nsig_counts_pred", "de_nsig_counts_real")


RUNS = {
    "papalexi_strong6": (papalexi, "target", "non-targeting", {"perturbations": STRONG6}),
    "zhao_iid": (zhao, "condition", "ctrl", {}),
    "kang_pca_iid": (kang, "condition", "control", {"space": "pca"}),
    "kang_genes_iid": (kang, "condition", "control", {}),
}


def medians_table(run: str, result: cellw1.EvaluationResult, args: argparse.Namespace, seconds: float) -> list[str]:
    """The medians of one run, as the lines of a markdown section."""
    summary = result.summary()
    medians = summary.pivot(index="method", columns="metric", values="median").reindex(result.methods)
    shown = [*SHOWN, *(CELL_EVAL_SHOWN if args.suite == "cell-eval" else ())]
    lines = [
        "",
        f"### {run} (median over {len(result.settings['perturbations'])} perturbation(s) x "
        f"{args.repeats} repeat(s); scGen {args.scgen_epochs} epochs max; suite {args.suite}; "
        f"total {seconds:.0f} s)",
        "",
        "| method | " + " | ".join(shown) + " |",
        "|---" * (len(shown) + 1) + "|",
    ]
    for method, row in medians.iterrows():
        lines.append(f"| {method} | " + " | ".join(f"{row[m]:.4g}" for m in shown) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate the chosen methods on each run, write its tables and settings, append its medians to ``medians.md``."""
    p = parser(
        __doc__,
        name="baselines",
        out=OUT,
        quick={"runs": "zhao_iid", "methods": "identity,mean_shift,scgen_vae", "scgen_epochs": 2},
    )
    p.add_argument("--runs", default="papalexi_strong6,zhao_iid,kang_pca_iid")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--scgen-epochs", type=int, default=50)
    p.add_argument(
        "--suite",
        choices=("cellw1", "cell-eval"),
        default="cellw1",
        help="cell-eval: also cell-eval's metrics per split (needs cellw1[eval] in the same venv)",
    )
    args = parse(p, argv)
    one_thread()
    scgen_config = ScGenConfig(max_epochs=args.scgen_epochs)
    lines = []
    for run in args.runs.split(","):
        loader, key, control, extra = RUNS[run]
        start = time.perf_counter()
        result = cellw1.evaluate(
            loader(),
            key,
            control,
            methods=args.methods.split(","),
            n_splits=args.repeats,
            scgen_config=scgen_config,
            suite=args.suite,
            progress=False,
            **extra,
        )
        elapsed = time.perf_counter() - start
        folder = args.out / run
        folder.mkdir(parents=True, exist_ok=True)
        result.table.to_csv(folder / "results.csv", index=False)
        result.summary().to_csv(folder / "summary.csv", index=False)
        write_json(
            folder / "settings.json",
            {**result.settings, "scgen_epochs": args.scgen_epochs, "total_seconds": elapsed},
            args,
        )
        section = medians_table(run, result, args, elapsed)
        lines += section
        print("\n".join(section[1:]), flush=True)
    medians = args.out / "medians.md"
    write_text(medians, (medians.read_text() if medians.exists() else "") + "\n".join(lines) + "\n")
