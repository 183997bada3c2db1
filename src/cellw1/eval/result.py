"""The result of :func:`cellw1.evaluate`: one long table of scores, its summary and Wilcoxon tests."""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ranksums

from .._io import atomic_write_bytes
from ..errors import ConfigError
from .celleval import higher_is_better as cell_eval_direction
from .metrics import METRICS

logger = logging.getLogger(__name__)

#: Name of the metric row holding each method's fit time (lower is better).
SECONDS = "seconds"
#: Descriptive row, not a score: distance between the mean prediction and the mean test control
#: cell (scored features). Near 0 for a method that predicts no response; for a target with no
#: real effect a good method keeps it near the observed shift. Left out of the Wilcoxon tests.
CONTROL_SHIFT = "control_shift"
#: Descriptive row, not a score: 1 where the perturbation's test for a response found none on the
#: split's training cells and the method predicted the controls unchanged (:mod:`cellw1.ot.effect`;
#: the same decision for every method that moves cells), else 0.
GATED = "gated"
TABLE_COLUMNS = ("method", "perturbation", "repeat", "metric", "value")


def _higher_is_better(metric: str) -> bool | None:
    """``True``/``False`` for a score, ``None`` for a descriptive row (left out of the Wilcoxon tests)."""
    if metric in METRICS:
        return METRICS[metric].higher_is_better
    if metric in (SECONDS, CONTROL_SHIFT, GATED):
        return False if metric == SECONDS else None  # seconds: lower is better
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
                    if m_ref == m_alt:
                        better = "tie"
                    else:
                        better = reference if (m_ref > m_alt) == higher else other
                rows.append([metric, reference, other, stat, pval, m_ref, m_alt, higher, better])
        return pd.DataFrame(rows, columns=columns)

    def save(self, directory: str | os.PathLike) -> list[Path]:
        """Write ``results.csv``, ``summary.csv``, ``wilcoxon.csv``, ``settings.json`` and figures.

        The figures are ``metrics.png`` (:func:`cellw1.pl.metric_bars`) and, when cells were
        kept, ``embedding.png`` and ``mean_change.png`` (:func:`cellw1.pl.embedding`,
        :func:`cellw1.pl.mean_change`). Every file is written atomically. ``wilcoxon.csv`` compares ``w1`` with the others; when
        ``w1`` was not evaluated it holds only its header.

        Returns
        -------
        list of pathlib.Path
            The files written.
        """
        from ..pl.report import report_figures

        directory = Path(directory)
        written = [
            _write_csv(self.table, directory / "results.csv"),
            _write_csv(self.summary(), directory / "summary.csv"),
        ]
        if "w1" in self.methods:
            wilcoxon = self.wilcoxon("w1")
        else:
            logger.info("w1 was not evaluated; wilcoxon.csv is written without rows.")
            wilcoxon = pd.DataFrame(columns=["metric", "reference", "method", "statistic", "pvalue"])
        written.append(_write_csv(wilcoxon, directory / "wilcoxon.csv"))
        written.append(atomic_write_bytes(directory / "settings.json", json.dumps(self.settings, indent=2).encode()))
        own = self.table["metric"].isin([*METRICS, SECONDS, CONTROL_SHIFT, GATED])  # cell-eval's stay in the tables
        written.extend(report_figures(SimpleNamespace(table=self.table[own], embedding=self.embedding), directory))
        logger.info("evaluation saved to %s (%d files)", directory, len(written))
        return written


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return atomic_write_bytes(path, buffer.getvalue().encode())
