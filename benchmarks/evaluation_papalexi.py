"""The full evaluation report on Papalexi 2021: every baseline, every metric, intervals over splits.

Runs :func:`cellw1.evaluate` with its default methods (identity, observed, mean_shift,
global_mean, additive, nearest, w1; no W2, no scGen) on the 25 Papalexi knock-outs
(``grna_frac >= 0.8``, gene space, 299 genes, top-50 DE genes), ``--splits`` seeded splits
(default 5), and writes the report (``report.md``, ``report.html``, ``forest.png``, every CSV)
to ``benchmarks/results/evaluation_papalexi/`` and the figures quoted in docs/benchmarks.md to
``benchmarks/results/evaluation_papalexi.json``. It prints the wall time of the evaluation and
of the report, the verdicts (w1 against the best baseline of each metric) and the check of the
response-distribution claim: on STAT1, JAK2, IFNGR1 and IFNGR2, w1 against the mean shift on
``response_w1`` with a bootstrap interval over the splits.

``--from-table results.csv`` recomputes the report from a saved table without fitting.
Torch runs on one thread; the load average of the machine is recorded (it is shared).

    python -m benchmarks evaluation_papalexi [--splits 5] [--targets STAT1,JAK2,...] [--from-table PATH]
    python -m benchmarks evaluation_papalexi --de-direction either --out benchmarks/results/evaluation_papalexi_either
"""

# %%
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import cellw1
from cellw1.eval.result import EvaluationResult

from ._common import RESULTS, one_thread, papalexi, parse, parser, write_json

OUT = RESULTS / "evaluation_papalexi"
IFNG = ["STAT1", "JAK2", "IFNGR1", "IFNGR2"]


def claim_check(result: EvaluationResult) -> pd.DataFrame:
    """w1 against mean_shift on response_w1 per IFN-gamma knock-out: medians over splits and the interval."""
    per = result.per_perturbation()
    rows = per[(per["metric"] == "response_w1") & (per["baseline"] == "mean_shift") & per["perturbation"].isin(IFNG)]
    table = result.table[(result.table["metric"] == "response_w1") & result.table["method"].isin(["w1", "mean_shift"])]
    medians = table.groupby(["perturbation", "method"])["value"].median().unstack()
    out = rows.set_index("perturbation")[["n_splits", "median_improvement", "ci_low", "ci_high", "wilcoxon_p"]]
    out = out.join(medians.rename(columns={"w1": "w1_median", "mean_shift": "mean_shift_median"}))
    wins = table.pivot_table(index=["perturbation", "repeat"], columns="method", values="value")
    out["w1_better_splits"] = (wins["w1"] < wins["mean_shift"]).groupby("perturbation").sum()
    out["ci_excludes_0"] = (out["ci_low"] > 0) & (out["n_splits"] > 1)  # one split has no interval
    return out.reindex([p for p in IFNG if p in out.index])


def evaluate(args: argparse.Namespace) -> tuple[EvaluationResult, dict]:
    """Fit and score (or read a saved table with ``--from-table``); the table is saved first."""
    if args.from_table is not None:
        table = pd.read_csv(args.from_table)
        settings_path = args.from_table.parent / "settings.json"
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        return EvaluationResult(table=table, settings=settings), settings
    targets = None if args.targets is None else args.targets.split(",")
    result = cellw1.evaluate(
        papalexi(), "target", "non-targeting", targets, n_splits=args.splits, seed=args.seed,
        de_direction=args.de_direction, progress=True,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)  # the table first: a report can be redone from it
    result.table.to_csv(args.out / "results.csv", index=False)
    (args.out / "settings.json").write_text(json.dumps(result.settings, indent=2))
    return result, result.settings


def report(result: EvaluationResult, claim: pd.DataFrame, lost: pd.DataFrame) -> None:
    """Print the verdicts, the losses and the claim check."""
    print("\nw1 against the best baseline of each metric:")
    for text in result.verdicts()["verdict"]:
        print("  " + text)
    print(f"\nw1 loses (interval below 0) to a baseline on {len(lost)} metric x baseline rows:")
    for text in lost["verdict"]:
        print("  " + text)
    with pd.option_context("display.width", 160, "display.float_format", "{:.3g}".format):
        print("\nresponse_w1, w1 against mean_shift (improvement > 0: w1 closer), interval over splits:")
        print(claim.to_string())


def main(argv: Sequence[str] | None = None) -> None:
    """Evaluate (or re-read a saved table), save the full report, print its verdicts and write a summary."""
    p = parser(__doc__, name="evaluation_papalexi", seed=0, out=OUT, quick={"splits": 1, "targets": "STAT1,ATF2"})
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--targets", default=None, help="comma-separated targets (default: all 25)")
    p.add_argument("--from-table", type=Path, default=None, help="a saved results.csv: report only, no fits")
    p.add_argument(
        "--de-direction", choices=("up", "either"), default="up",
        help="DE genes scored: most up-regulated (the paper's) or most changed in either direction",
    )  # fmt: skip
    args = parse(p, argv)
    one_thread()
    load_before = os.getloadavg()
    start = time.perf_counter()
    result, settings = evaluate(args)
    evaluate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    written = result.save(args.out)
    report_seconds = time.perf_counter() - start
    load_after = os.getloadavg()

    verdicts = result.verdicts()
    claim = claim_check(result)
    fits = result.table[result.table["metric"] == "seconds"].groupby("method")["value"].sum()
    print(f"evaluation: {evaluate_seconds:.0f} s, report: {report_seconds:.0f} s, {len(written)} files in {args.out}")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min; 2 cores, shared)")
    print("fit seconds summed per method:", {m: round(float(v), 1) for m, v in fits.items()})
    lost = result.comparisons()
    lost = lost[lost["ci_high"] < 0]
    report(result, claim, lost)
    summary = {
        "data": "Papalexi 2021, grna_frac >= 0.8, gene space (299 genes), top-50 DE genes per split",
        "de_direction": settings.get("de_direction", "up"),
        "n_perturbations": len(settings.get("perturbations", [])),
        "n_splits": settings.get("n_splits"),
        "methods": settings.get("methods"),
        "seed": settings.get("seed"),
        "evaluate_seconds": None if args.from_table else evaluate_seconds,
        "report_seconds": report_seconds,
        "fit_seconds_per_method": {m: float(v) for m, v in fits.items()},
        "load_average_1min": [load_before[0], load_after[0]],
        "machine": f"{os.cpu_count()} CPU cores, shared with other jobs; torch 1 thread",
        "verdicts": verdicts.to_dict(orient="records"),
        "losses": lost.to_dict(orient="records"),
        "ifng_response_w1_vs_mean_shift": claim.reset_index().to_dict(orient="records"),
    }
    write_json(args.out.parent / f"{args.out.name}.json", summary, args)
