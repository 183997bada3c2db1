"""The result of :func:`cellw1.evaluate`: one long table of scores, its summary and Wilcoxon tests."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ranksums

from ..errors import ConfigError
from ..files.atomic import atomic_write_bytes
from .celleval import higher_is_better as cell_eval_direction
from .confidence import check_confidence
from .confidence import comparisons as _comparisons
from .confidence import per_perturbation as _per_perturbation
from .metrics import METRICS
from .scoring import CONTROL_SHIFT, RESPONDER_SHARE, SPLIT_METRICS

logger = logging.getLogger(__name__)

#: Name of the metric row holding each method's fit time (lower is better).
SECONDS = "seconds"
#: Descriptive row, not a score: 1 where the perturbation's test for a response found none on the
#: split's training cells and the method predicted the controls unchanged (:mod:`cellw1.ot.effect`;
#: the same decision for every method that moves cells), else 0.
GATED = "gated"
TABLE_COLUMNS = ("method", "perturbation", "repeat", "metric", "value")


def _higher_is_better(metric: str) -> bool | None:
    """``True``/``False`` for a score, ``None`` for a descriptive row (left out of the Wilcoxon tests)."""
    if metric in METRICS:
        return METRICS[metric].higher_is_better
    if metric in SPLIT_METRICS:
        return SPLIT_METRICS[metric].higher_is_better
    if metric in (SECONDS, CONTROL_SHIFT, RESPONDER_SHARE, GATED):
        return False if metric == SECONDS else None  # seconds: lower is better; the others describe
    return cell_eval_direction(metric)  # the metrics of suite="cell-eval"


@dataclass
class EmbeddingSnapshot:
    """Cells of one perturbation at repeat 0, in the scored feature space, for a figure.

    ``control: (n, d)`` test control cells, ``observed: (m, d)`` test perturbed cells and
    ``predicted[method]: (n, d)`` each method's prediction for the control cells.
    """

    perturbation: str
    control: np.ndarray
    observed: np.ndarray
    predicted: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    """Outcome of :func:`cellw1.evaluate`.

    Attributes
    ----------
    table
        Tidy results: one row per method, perturbation, repeat and metric, with columns
        ``method``, ``perturbation``, ``repeat``, ``metric``, ``value``. The metric
        ``seconds`` is the fit time of the method.
    settings
        The evaluation's arguments (JSON-able), saved beside the tables.
    embedding
        Cells kept for the embedding figure (or ``None``).
    """

    table: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    embedding: EmbeddingSnapshot | None = None

    @property
    def methods(self) -> list[str]:
        """Methods in the order they were evaluated."""
        return list(dict.fromkeys(self.table["method"]))

    def summary(self) -> pd.DataFrame:
        """Median, quartiles and count of every metric per method (over perturbations and repeats).

        Returns
        -------
        pandas.DataFrame
            Columns ``method``, ``metric``, ``median``, ``q25``, ``q75``, ``n`` (values that
            are not NaN); methods and metrics in evaluation order.
        """
        rows = []
        for (method, metric), group in self.table.groupby(["method", "metric"], sort=False):
            values = group["value"].to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75]) if values.size else (np.nan,) * 3
            rows.append(
                {"method": method, "metric": metric, "median": median, "q25": q25, "q75": q75, "n": values.size}
            )
        return pd.DataFrame(rows, columns=["method", "metric", "median", "q25", "q75", "n"])

    def wilcoxon(self, reference: str = "w1") -> pd.DataFrame:
        """Wilcoxon rank-sum test of ``reference`` against every other method, per metric.

        As in the paper (Fig. 3), the values over perturbations and repeats of the reference
        are compared with those of each other method by :func:`scipy.stats.ranksums` (two-sided;
        a positive ``statistic`` means the reference's values tend to be larger).

        Returns
        -------
        pandas.DataFrame
            Columns ``metric``, ``reference``, ``method``, ``statistic``, ``pvalue``,
            ``median_reference``, ``median_method``, ``higher_is_better`` and ``better``: the
            method whose median is better for that metric (``"tie"`` when equal, ``""`` when a
            side has no values).
        """
        methods = self.methods
        if reference not in methods:
            raise ConfigError(f"reference method {reference!r} was not evaluated; choose one of {methods}.")
        columns = [
            "metric",
            "reference",
            "method",
            "statistic",
            "pvalue",
            "median_reference",
            "median_method",
            "higher_is_better",
            "better",
        ]
        rows = []
        for metric in dict.fromkeys(self.table["metric"]):
            higher = _higher_is_better(metric)
            if higher is None:  # a descriptive row, not a score
                continue
            by_method = self.table[self.table["metric"] == metric]
            ref = by_method.loc[by_method["method"] == reference, "value"].to_numpy(dtype=float)
            ref = ref[~np.isnan(ref)]
            for other in methods:
                if other == reference:
                    continue
                alt = by_method.loc[by_method["method"] == other, "value"].to_numpy(dtype=float)
                alt = alt[~np.isnan(alt)]
                if ref.size == 0 or alt.size == 0:
                    stat = pval = m_ref = m_alt = float("nan")
                    better = ""
                else:
                    test = ranksums(ref, alt)
                    stat, pval = float(test.statistic), float(test.pvalue)
                    m_ref, m_alt = float(np.median(ref)), float(np.median(alt))
                    better = "tie" if m_ref == m_alt else (reference if (m_ref > m_alt) == higher else other)
                rows.append([metric, reference, other, stat, pval, m_ref, m_alt, higher, better])
        return pd.DataFrame(rows, columns=columns)

    def comparisons(self, reference: str = "w1", confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
        """Compare ``reference`` with every baseline, per metric: wins, median improvement, bootstrap CI, Wilcoxon p.

        Paired over the same perturbations and splits (:mod:`cellw1.eval.confidence`); the row of
        each metric's best baseline has ``best`` True and its ``verdict`` is the report's.
        """
        self._check_reference(reference, confidence)
        return _comparisons(self.table, _higher_is_better, reference, confidence, seed)

    def per_perturbation(self, reference: str = "w1", confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
        """Compare ``reference`` with every baseline per perturbation and metric, with an interval over splits."""
        self._check_reference(reference, confidence)
        return _per_perturbation(self.table, _higher_is_better, reference, confidence, seed)

    def _check_reference(self, reference: str, confidence: float) -> None:
        """A ConfigError unless ``reference`` is a method's name (one not evaluated gives no rows) and a level."""
        check_confidence(confidence)
        if not isinstance(reference, str) or not reference:
            raise ConfigError(f"reference={reference!r} must be the name of an evaluated method, e.g. 'w1'.")

    def verdicts(self, reference: str = "w1", confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
        """Return the rows of :meth:`comparisons` against each metric's best baseline."""
        table = self.comparisons(reference, confidence, seed)
        return table[table["best"].astype(bool)].reset_index(drop=True)

    def save(self, directory: str | os.PathLike, reference: str = "w1", confidence: float = 0.95) -> list[Path]:
        """Write the tables, ``settings.json``, the figures and the summary page ``report.md`` / ``report.html``.

        ``reference`` is the method compared with every baseline (``w1`` by default; another
        evaluated method, or an external tool's name, can take its place) and ``confidence`` the
        level of the bootstrap intervals.

        Tables: ``results.csv`` (every row), ``summary.csv``, ``wilcoxon.csv`` (rank sums, ``w1``
        against the others), ``comparisons.csv`` (:meth:`comparisons`) and
        ``per_perturbation.csv`` (:meth:`per_perturbation`); without ``reference`` the last three
        hold only their header. Figures: ``metrics.png`` (:func:`cellw1.pl.metric_bars`),
        ``forest.png`` (:func:`cellw1.pl.forest`, when there are comparisons) and, when cells
        were kept, ``embedding.png`` and ``mean_change.png``; one of these three that an earlier
        report left in ``directory`` and this one does not write is removed. Every file is written
        atomically.

        Returns
        -------
        list of pathlib.Path
            The files written.
        """
        from ..pl import forest
        from ..pl.report import report_figures
        from .report import report_blocks, to_html, to_markdown

        directory = Path(directory)
        written = [
            _write_csv(self.table, directory / "results.csv"),
            _write_csv(self.summary(), directory / "summary.csv"),
        ]
        if reference in self.methods:
            wilcoxon = self.wilcoxon(reference)
        else:
            logger.info("%s was not evaluated; wilcoxon.csv is written without rows.", reference)
            wilcoxon = pd.DataFrame(columns=["metric", "reference", "method", "statistic", "pvalue"])
        written.append(_write_csv(wilcoxon, directory / "wilcoxon.csv"))
        compared, per = self.comparisons(reference, confidence), self.per_perturbation(reference, confidence)
        written.append(_write_csv(compared, directory / "comparisons.csv"))
        written.append(_write_csv(per, directory / "per_perturbation.csv"))
        written.append(atomic_write_bytes(directory / "settings.json", json.dumps(self.settings, indent=2).encode()))
        own = self.table["metric"].isin(
            [*METRICS, *SPLIT_METRICS, SECONDS, CONTROL_SHIFT, GATED]
        )  # cell-eval's stay in the tables
        written.extend(report_figures(SimpleNamespace(table=self.table[own], embedding=self.embedding), directory))
        if len(compared):
            written.append(directory / "forest.png")
            forest(compared, save=written[-1])
        _remove_stale_figures(directory, written)
        names = [p.name for p in written] + ["report.md", "report.html"]
        blocks = report_blocks(
            self.settings, self.summary(), compared, per, "forest.png" if len(compared) else None, names
        )
        written.append(atomic_write_bytes(directory / "report.md", to_markdown(blocks).encode()))
        written.append(atomic_write_bytes(directory / "report.html", to_html(blocks).encode()))
        logger.info("evaluation saved to %s (%d files)", directory, len(written))
        return written


def tabulate(
    rows: Sequence[tuple[str, str, int, str, float]], settings: dict[str, Any], embedding: EmbeddingSnapshot | None
) -> EvaluationResult:
    """Make the result of a run: its rows as the long table, the settings with the gated splits, the kept cells."""
    table = pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS))
    gated = table[(table["metric"] == GATED) & (table["value"] > 0)]
    settings["gated"] = sorted({(str(p), int(r)) for p, r in zip(gated["perturbation"], gated["repeat"], strict=True)})
    logger.info(
        "test for a response (effect_alpha=%s): %d of %d perturbation splits gated, predicted as their controls",
        settings["effect_alpha"],
        len(settings["gated"]),
        len(settings["perturbations"]) * settings["n_splits"],
    )
    table["repeat"] = table["repeat"].astype(int)
    table["value"] = table["value"].astype(float)
    return EvaluationResult(table=table, settings=settings, embedding=embedding)


#: figures a report writes only in some runs (forest: with comparisons; the others: with kept cells)
OPTIONAL_FIGURES: tuple[str, ...] = ("forest.png", "embedding.png", "mean_change.png")


def _remove_stale_figures(directory: Path, written: Sequence[Path]) -> None:
    """Remove a report figure an earlier save left in ``directory`` that this save did not write.

    Otherwise a report saved over another would sit beside the other run's figures.
    """
    for name in OPTIONAL_FIGURES:
        path = directory / name
        if path not in written and path.is_file():
            path.unlink()
            logger.info("removed %s: it came from an earlier report saved to %s.", path, directory)


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return atomic_write_bytes(path, buffer.getvalue().encode())
