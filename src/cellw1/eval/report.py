"""The summary page of an evaluation: ``report.md`` and ``report.html``, the same content twice.

It opens with the verdicts (the reference method against the best baseline of each metric,
with intervals), then says plainly where the reference loses (to any baseline, over all
perturbations or on one perturbation with an interval over splits below 0), shows the forest
plot and the medians of every method, and lists the CSV files that hold every row.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from .confidence import TOLERANCE

#: per-perturbation losses listed on the page (all of them are in per_perturbation.csv)
MAX_LISTED = 30

Block = tuple[str, Any]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report_blocks(
    settings: dict[str, Any],
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    per_perturbation: pd.DataFrame,
    figure: str | None,
    files: list[str],
) -> list[Block]:
    """The page as blocks: ``("h1"|"h2"|"p"|"li", text)``, ``("table", DataFrame)``, ``("img", path)``."""
    reference = str(comparisons["reference"].iloc[0]) if len(comparisons) else "w1"
    perts = settings.get("perturbations", [])
    blocks: list[Block] = [
        ("h1", "cellw1 evaluation report"),
        (
            "p",
            f"{len(perts)} perturbation(s) x {settings.get('n_splits', '?')} seeded split(s) (seed "
            f"{settings.get('seed', '?')}), space {settings.get('space', '?')}, methods "
            f"{', '.join(settings.get('methods', []))}. Improvements are signed so that > 0 means {reference} did "
            "better; intervals are percentile bootstraps of the median over perturbations (each the mean of its "
            "splits). How to read every metric: docs/evaluation.md.",
        ),
    ]
    scored = set(summary["method"].astype(str)) if "method" in summary else set()
    unscored = [m for m in settings.get("methods", []) if m not in scored]
    if unscored:  # e.g. additive without a combination "A+B", nearest with one perturbation
        blocks.append(
            ("p", f"No rows for {', '.join(unscored)}: nothing among the evaluated perturbations to score "
             "(additive needs combinations 'A+B' whose members have cells of their own; nearest needs two or "
             "more perturbations and w1 among the methods).")
        )  # fmt: skip
    blocks.append(("h2", f"Verdicts: {reference} against the best baseline of each metric"))
    best = comparisons[comparisons["best"].astype(bool)] if len(comparisons) else comparisons
    if len(best):
        blocks.extend(("li", text) for text in best["verdict"])
        shown = best[["metric", "baseline", "wins", "losses", "n_perturbations", "median_improvement"]].copy()
        shown["ci"] = [f"[{_fmt(lo)}, {_fmt(hi)}]" for lo, hi in zip(best["ci_low"], best["ci_high"], strict=True)]
        shown["wilcoxon_p"] = best["wilcoxon_p"]
        blocks.append(("table", shown))
    else:
        blocks.append(("p", f"No verdict: {reference} or every baseline is missing from the evaluation."))
    blocks.append(("h2", f"Where {reference} loses"))
    lost = comparisons[comparisons["ci_high"] < -TOLERANCE] if len(comparisons) else comparisons
    if len(lost):
        blocks.append(("p", "Over all perturbations, the interval of the improvement is below 0 for:"))
        blocks.extend(("li", text) for text in lost["verdict"])
    else:
        blocks.append(("p", f"No baseline beats {reference} over all perturbations with an interval below 0."))
    if len(per_perturbation):
        single = per_perturbation[per_perturbation["ci_high"] < -TOLERANCE]
        blocks.append(
            (
                "p",
                f"On single perturbations (interval over splits below 0): {len(single)} of "
                f"{len(per_perturbation)} perturbation x metric x baseline rows"
                + (f"; the first {MAX_LISTED}:" if len(single) > MAX_LISTED else ":" if len(single) else "."),
            )
        )
        if len(single):
            blocks.append(("table", single.head(MAX_LISTED)))
    if figure:
        blocks.extend([("h2", "Forest plot"), ("img", figure)])
    blocks.append(("h2", "Medians over perturbations and splits"))
    blocks.append(("table", summary.pivot(index="metric", columns="method", values="median").reset_index()))
    blocks.append(("h2", "Files"))
    blocks.extend(("li", name) for name in files)
    return blocks


def _md_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def to_markdown(blocks: list[Block]) -> str:
    """The blocks as a markdown page."""
    out: list[str] = []
    for kind, value in blocks:
        if kind == "h1":
            out.append(f"# {value}\n")
        elif kind == "h2":
            out.append(f"\n## {value}\n")
        elif kind == "li":
            out.append(f"- {value}")
        elif kind == "table":
            out.append("\n" + _md_table(value) + "\n")
        elif kind == "img":
            out.append(f"![forest plot]({value})\n")
        else:
            out.append(f"\n{value}\n")
    return "\n".join(out) + "\n"


def to_html(blocks: list[Block]) -> str:
    """The blocks as a self-contained HTML page (the figure is linked beside it)."""
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cellw1 evaluation report</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>",
    ]
    items: list[str] = []
    for kind, value in blocks:
        if kind != "li" and items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{html.escape(str(value))}</{kind}>")
        elif kind == "li":
            items.append(f"<li>{html.escape(str(value))}</li>")
        elif kind == "table":
            out.append(value.to_html(index=False, float_format=_fmt, border=0))
        elif kind == "img":
            out.append(f"<img src='{html.escape(str(value))}' alt='forest plot' style='max-width:100%'>")
    if items:
        out.append("<ul>" + "".join(items) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
