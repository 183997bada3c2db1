"""How sure a comparison is: paired differences against the baselines, bootstrap intervals, verdicts.

Every method of :func:`cellw1.evaluate` is scored on the same splits, so the reference method
(``w1``) and a baseline are compared **pairwise**: for each perturbation ``p`` and split ``r``
the *improvement* is

    d(p, r) = s * (value(reference) - value(baseline)),   s = +1 if higher is better, else -1,

so ``d > 0`` always means the reference did better. Then, per metric and baseline:

- each perturbation's improvement is its mean over splits; the reference **wins** on ``p`` when
  it is above 0, **loses** when below (:func:`comparisons`: ``k`` wins of ``n`` perturbations);
  values equal up to a relative :data:`RTOL` (two methods that both predict the controls) tie;
- the **median** of the per-perturbation improvements, with a percentile bootstrap confidence
  interval over perturbations (:func:`scipy.stats.bootstrap`, seeded; each resample draws
  perturbations, each carrying the mean of its splits), and the Wilcoxon signed-rank p of the
  per-perturbation improvements (:func:`scipy.stats.wilcoxon`, two-sided);
- per perturbation (:func:`per_perturbation`), the median over its splits with a bootstrap
  interval over splits and a Wilcoxon p over splits (with 5 splits the smallest two-sided p
  is 0.0625: read the interval).

The **best baseline** of a metric is the baseline (:data:`~cellw1.eval.baselines.BASELINES`)
with the best median over the reference's perturbations and splits, among those that scored
all of them; the verdict of a metric is the reference against it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from scipy.stats import bootstrap, wilcoxon

from ..errors import ConfigError
from .baselines import BASELINES

logger = logging.getLogger(__name__)

#: bootstrap resamples of every interval
N_RESAMPLES = 2000
#: an interval bound closer to 0 than this is 0 (round-off of differences of equal values)
TOLERANCE = 1e-12
#: two values this close (relative) are a tie: the same prediction scored twice, up to round-off
RTOL = 1e-6
COMPARISON_COLUMNS = (
    "metric",
    "reference",
    "baseline",
    "best",
    "higher_is_better",
    "n_perturbations",
    "n_pairs",
    "wins",
    "losses",
    "median_improvement",
    "ci_low",
    "ci_high",
    "wilcoxon_p",
    "verdict",
)


def check_confidence(confidence: float, shown: str | None = None) -> float:
    """``confidence`` if it is a level strictly between 0 and 1; else a ConfigError naming it as ``shown``."""
    if not isinstance(confidence, int | float) or isinstance(confidence, bool) or not 0.0 < confidence < 1.0:
        shown = f"confidence={confidence!r}" if shown is None else shown
        raise ConfigError(f"{shown} must be a level between 0 and 1, e.g. 0.95.")
    return float(confidence)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (:func:`scipy.stats.bootstrap`, seeded).

    One value gives ``(v, v)``; identical values give that value twice; none gives NaNs.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1 or np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    res = bootstrap(
        (x,),
        np.median,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilcoxon_p(values: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of ``values`` against 0; 1 when every value is 0, NaN when empty."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    if np.all(x == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small samples: scipy notes the exact distribution
        return float(wilcoxon(x).pvalue)


def improvements(
    table: pd.DataFrame, reference: str, baseline: str, metric: str, higher_is_better: bool
) -> pd.DataFrame:
    """``perturbation``, ``repeat``, ``improvement`` of ``reference`` over ``baseline`` on ``metric`` (pairs with both)."""
    rows = table[(table["metric"] == metric) & table["method"].isin([reference, baseline])]
    wide = rows.pivot_table(index=["perturbation", "repeat"], columns="method", values="value", aggfunc="first")
    if reference not in wide or baseline not in wide:
        return pd.DataFrame(columns=["perturbation", "repeat", "improvement"])
    sign = 1.0 if higher_is_better else -1.0
    ref, base = wide[reference], wide[baseline]
    # equal up to round-off (two methods that both predict the controls): a tie, not a win or a loss
    same = np.isclose(ref.to_numpy(dtype=float), base.to_numpy(dtype=float), rtol=RTOL, atol=0.0)
    out = (sign * (ref - base)).mask(same, 0.0).dropna().rename("improvement").reset_index()
    return out


def _coverage(table: pd.DataFrame, method: str, metric: str) -> set[tuple[str, int]]:
    rows = table[(table["method"] == method) & (table["metric"] == metric)].dropna(subset=["value"])
    return set(zip(rows["perturbation"], rows["repeat"], strict=True))


def best_baseline(table: pd.DataFrame, reference: str, metric: str, higher_is_better: bool) -> str | None:
    """The baseline with the best median on ``metric`` among those scoring every pair the reference scored."""
    needed = _coverage(table, reference, metric)
    best, best_value = None, None
    for baseline in BASELINES:
        if baseline == reference or not needed or not needed <= _coverage(table, baseline, metric):
            continue
        values = table.loc[(table["method"] == baseline) & (table["metric"] == metric), "value"].dropna()
        median = float(np.median(values))
        if best_value is None or (median > best_value if higher_is_better else median < best_value):
            best, best_value = baseline, median
    return best


def _pairs(
    table: pd.DataFrame, direction: Callable[[str], bool | None], reference: str
) -> Iterator[tuple[str, bool, str, pd.DataFrame]]:
    """``(metric, higher_is_better, baseline, improvements)`` for every scored metric and evaluated baseline."""
    methods = list(dict.fromkeys(table["method"]))
    if reference not in methods:
        return
    for metric in dict.fromkeys(table["metric"]):
        higher = direction(metric)
        if higher is None or metric == "seconds":
            continue
        for baseline in (b for b in BASELINES if b in methods and b != reference):
            yield metric, higher, baseline, improvements(table, reference, baseline, metric, higher)


def comparisons(
    table: pd.DataFrame,
    direction: Callable[[str], bool | None],
    reference: str = "w1",
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The reference against every baseline, per metric (columns :data:`COMPARISON_COLUMNS`).

    ``direction(metric)`` says whether higher is better (``None``: a descriptive row, skipped).
    """
    rows = []
    for metric, higher, baseline, diffs in _pairs(table, direction, reference):
        best = best_baseline(table, reference, metric, higher)
        if not diffs.empty:
            per = diffs.groupby("perturbation", sort=False)["improvement"].mean()
            low, high = bootstrap_ci(per.to_numpy(), confidence, seed=seed)
            median = float(np.median(per))
            wins, losses = int((per > 0).sum()), int((per < 0).sum())
            rows.append(
                {
                    "metric": metric,
                    "reference": reference,
                    "baseline": baseline,
                    "best": baseline == best,
                    "higher_is_better": higher,
                    "n_perturbations": len(per),
                    "n_pairs": len(diffs),
                    "wins": wins,
                    "losses": losses,
                    "median_improvement": median,
                    "ci_low": low,
                    "ci_high": high,
                    "wilcoxon_p": wilcoxon_p(per.to_numpy()),
                    "verdict": verdict(
                        reference, baseline, metric, wins, len(per), median, low, high, confidence, losses
                    ),
                }
            )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def verdict(
    reference: str,
    baseline: str,
    metric: str,
    wins: int,
    n: int,
    median: float,
    low: float,
    high: float,
    confidence: float = 0.95,
    losses: int | None = None,
) -> str:
    """One sentence: who wins, on how many perturbations (and loses on how many), by how much, how sure."""
    if low > TOLERANCE:
        call = "beats"
    elif high < -TOLERANCE:
        call = "LOSES to"
    else:
        call = "ties with (CI spans 0)"
    return (
        f"{reference} {call} {baseline} on {metric}: better in {wins} of {n} perturbations"
        + ("" if losses is None else f", worse in {losses}")
        + f"; median improvement {median:.3g} [{confidence:.0%} CI {low:.3g}, {high:.3g}]"
    )


def per_perturbation(
    table: pd.DataFrame,
    direction: Callable[[str], bool | None],
    reference: str = "w1",
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per perturbation, metric and baseline: the median improvement over splits, its CI over splits, Wilcoxon p."""
    rows = []
    for metric, _, baseline, diffs in _pairs(table, direction, reference):
        for perturbation, group in diffs.groupby("perturbation", sort=False):
            values = group["improvement"].to_numpy(dtype=float)
            low, high = bootstrap_ci(values, confidence, seed=seed)
            rows.append(
                {
                    "perturbation": perturbation,
                    "metric": metric,
                    "reference": reference,
                    "baseline": baseline,
                    "n_splits": len(values),
                    "median_improvement": float(np.median(values)),
                    "ci_low": low,
                    "ci_high": high,
                    "wilcoxon_p": wilcoxon_p(values),
                }
            )
    columns = ["perturbation", "metric", "reference", "baseline", "n_splits", "median_improvement"]
    return pd.DataFrame(rows, columns=[*columns, "ci_low", "ci_high", "wilcoxon_p"])
