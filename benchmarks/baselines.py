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

    python3.11 -m venv /work/venvs/scgen && /work/venvs/scgen/bin/pip install torch==2.13.0
    /work/venvs/scgen/bin/pip install -e ".[dev,scgen]"
    /work/venvs/scgen/bin/python benchmarks/baselines.py [--runs zhao_iid,...] [--methods ...]
"""

# %%
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from real_data import DATA, kang, papalexi, zhao  # noqa: E402  (the shared data sets, loaded one way)

import cellw1  # noqa: E402
from cellw1.tl.scgen import ScGenConfig  # noqa: E402

OUT = Path(__file__).parent / "results" / "baselines"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="papalexi_strong6,zhao_iid,kang_pca_iid")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--scgen-epochs", type=int, default=50)
    parser.add_argument(
        "--suite",
        choices=("cellw1", "cell-eval"),
        default="cellw1",
        help="cell-eval: also cell-eval's metrics per split (needs cellw1[eval] in the same venv)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found: the shared datasets are needed for this benchmark.")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
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
        summary = result.summary()
        summary.to_csv(folder / "summary.csv", index=False)
        (folder / "settings.json").write_text(
            json.dumps(
                {**result.settings, "scgen_epochs": args.scgen_epochs, "total_seconds": elapsed}, indent=2, default=str
            )
        )
        medians = summary.pivot(index="method", columns="metric", values="median").reindex(result.methods)
        shown = [*SHOWN, *(CELL_EVAL_SHOWN if args.suite == "cell-eval" else ())]
        lines += [
            "",
            f"### {run} (median over {len(result.settings['perturbations'])} perturbation(s) x "
            f"{args.repeats} repeat(s); scGen {args.scgen_epochs} epochs max; suite {args.suite}; "
            f"total {elapsed:.0f} s)",
            "",
            "| method | " + " | ".join(shown) + " |",
            "|---" * (len(shown) + 1) + "|",
        ]
        for method, row in medians.iterrows():
            lines.append(f"| {method} | " + " | ".join(f"{row[m]:.4g}" for m in shown) + " |")
        print("\n".join(lines[-(len(medians) + 4) :]), flush=True)
    with open(args.out / "medians.md", "a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
