"""The paper's protocol on the three shared real datasets (``../shared/data``).

Runs :func:`cellw1.evaluate` (r2, l2, MMD, energy distance, W1 on the top-50 DE genes; split
rule in ``docs/method.md``) for:

- ``papalexi``: ECCITE-seq THP-1 CRISPR knock-outs, all 25 targets against non-targeting
  (cells with ``grna_frac >= 0.8``), gene space (299 genes).
- ``zhao``: panobinostat vs vehicle, gene space (300 genes), iid and each patient held out.
- ``kang``: IFN-beta stimulated PBMCs (6,998 genes), iid and CD4T held out, in PCA-50 space
  and directly in gene space.

W2/ICNN runs ``--w2-iters`` outer iterations (default 2,000; the paper uses 100,000), which is
said in every output. Each run writes ``results.csv``, ``summary.csv``, ``wilcoxon.csv`` and
figures to ``benchmarks/results/real/<run>/`` and one line per method to
``benchmarks/results/real/medians.md``.

    python -m benchmarks real_data [--runs zhao_iid,kang_pca_iid,...] [--repeats 1] [--w2-iters 2000]
"""

# %%
from __future__ import annotations

import json
import time
from collections.abc import Sequence

import cellw1

from ._common import RESULTS, kang, papalexi, parse, parser, write_json, write_text, zhao

OUT = RESULTS / "real"
ALL_METHODS = ("identity", "observed", "mean_shift", "w2", "w1")


#: run name -> (loader, condition key, control, evaluate keyword arguments)
RUNS = {
    "papalexi_iid": (papalexi, "target", "non-targeting", {}),
    "papalexi_w2_strong": (
        papalexi,
        "target",
        "non-targeting",
        {"perturbations": ["STAT1", "JAK2", "IFNGR1", "IFNGR2", "SMAD4", "ATF2"]},
    ),
    "zhao_iid": (zhao, "condition", "ctrl", {}),
    **{
        f"zhao_holdout_{p}": (zhao, "condition", "ctrl", {"holdout": ("patient_id", p)})
        for p in ("PW030", "PW032", "PW034", "PW036", "PW040")
    },
    "kang_pca_iid": (kang, "condition", "control", {"space": "pca"}),
    "kang_pca_holdout_CD4T": (kang, "condition", "control", {"space": "pca", "holdout": ("cell_type", "CD4T")}),
    "kang_genes_iid": (kang, "condition", "control", {}),
    "kang_genes_holdout_CD4T": (kang, "condition", "control", {"holdout": ("cell_type", "CD4T")}),
}


def medians_table(run: str, result: cellw1.EvaluationResult, args, seconds: float) -> str:
    """The medians over perturbations of one run, as a markdown section."""
    summary = result.summary().pivot(index="method", columns="metric", values="median").reindex(result.methods)
    lines = [
        f"\n### {run} (W1: {args.w1_config}; W2: {args.w2_iters} outer iterations; {args.repeats} repeat(s); "
        f"{len(result.settings['perturbations'])} perturbation(s); {seconds:.0f} s)\n",
        "| method | " + " | ".join(summary.columns) + " |",
        "|---" * (len(summary.columns) + 1) + "|",
    ]
    lines += [f"| {m} | " + " | ".join(f"{v:.4g}" for v in summary.loc[m]) + " |" for m in summary.index]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate the chosen methods on each run, save its tables and append its medians to ``medians.md``."""
    p = parser(__doc__, name="real_data", out=OUT, quick={"runs": "zhao_iid", "methods": "identity,mean_shift"})
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--w2-iters", type=int, default=2000)
    p.add_argument("--w1-config", default="{}", help='W1Config fields as JSON, e.g. \'{"step_size_learner": "gan"}\'')
    args = parse(p, argv)
    args.out.mkdir(parents=True, exist_ok=True)
    medians = args.out / "medians.md"
    for run in args.runs.split(","):
        loader, key, control, extra = RUNS[run]
        extra = dict(extra)
        adata = loader()
        if run.startswith("zhao_holdout") and extra["holdout"][1] not in set(adata.obs["patient_id"].astype(str)):
            print(f"{run}: patient not in data, skipped", flush=True)
            continue
        start = time.perf_counter()
        result = cellw1.evaluate(
            adata,
            key,
            control,
            extra.pop("perturbations", None),
            methods=args.methods.split(","),
            n_splits=args.repeats,
            config=cellw1.W1Config(**json.loads(args.w1_config)),
            w2_config=cellw1.W2Config(n_iters=args.w2_iters),
            progress=False,
            **extra,
        )
        result.save(args.out / run)
        write_json(args.out / run / "run.json", {"run_name": run}, args)
        text = medians_table(run, result, args, time.perf_counter() - start)
        print(text, flush=True)
        previous = medians.read_text() if medians.exists() else ""
        write_text(medians, previous + text + "\n")
