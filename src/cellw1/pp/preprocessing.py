"""Expression values in, log-normalised float32 cells out: one transform for both groups.

Raw counts differ between cells mostly by sequencing depth. The usual fix scales every cell
to the same total, ``target_sum``, and takes ``log1p``::

    y_cg = log(1 + target_sum * x_cg / sum_g' x_cg')

A map from control to perturbed cells compares the two groups, so both must go through the
*same* transform: :func:`fit_preprocessor` is fitted once, on the training cells of both
groups together, and ``target_sum`` is a fitted constant (the median total count of those
cells). Normalising each group to its own median would move the groups apart or together by
an amount that has nothing to do with the perturbation.

Three kinds of input, told apart by :func:`detect_input_kind` from a sample of the values
(or given with ``input_kind=``):

============ ===================================================================================
kind         what cellw1 does with it
============ ===================================================================================
counts       raw counts: normalised to ``target_sum`` per cell and log1p-transformed; predictions
             are non-negative log1p expression, calibrated (:mod:`cellw1.pp.calibration`)
log          log-normalised expression (non-negative, already transformed): used as given;
             predictions are non-negative and calibrated
continuous   values of any sign (CyTOF ``arcsinh``, imaging features, z-scores, ``sc.pp.scale``,
             protein CLR, embeddings): used as given; predictions are the map's values, never
             clipped, thresholded or calibrated
============ ===================================================================================

Negative values mean continuous data unless ``input_kind`` says otherwise.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from ..checks import as_array
from ..errors import ConfigError, InputError

logger = logging.getLogger(__name__)

InputKind = Literal["counts", "log", "continuous"]
INPUT_KINDS: tuple[str, ...] = ("counts", "log", "continuous")
#: what a caller may say of its input: a kind, or ``"auto"`` (detected)
Assumption = Literal["auto", "counts", "log", "continuous"]
ASSUMPTIONS: tuple[str, ...] = ("auto", *INPUT_KINDS)
#: kinds whose values are expression, never negative: predictions are calibrated and non-negative
EXPRESSION_KINDS: tuple[str, ...] = ("counts", "log")

#: values looked at by :func:`detect_input_kind`
SAMPLE_SIZE = 100_000
#: integer data whose largest value is at most this are too small to call counts
COUNT_MAX = 20
#: non-integer data larger than this look normalised but not log-transformed
LOG_MAX = 50.0
#: matrix entries densified at once (float64), ~32 MB
BLOCK_ENTRIES = 1 << 22

Matrix = Any  # np.ndarray | scipy.sparse.spmatrix | scipy.sparse.sparray


# -- checks ------------------------------------------------------------------------------------
def _stored_values(X: Matrix) -> np.ndarray:
    """Every value that is not an implicit zero: ``.data`` of a sparse matrix, else all of X."""
    return X.data if sp.issparse(X) else X.reshape(-1)


def _minimum(X: Matrix) -> float:
    values = _stored_values(X)
    return float(values.min()) if values.size else 0.0


def _sample(X: Matrix, size: int = SAMPLE_SIZE) -> np.ndarray:
    """Up to ``size`` stored values of X as float64, drawn with a fixed seed (all when fewer)."""
    rng = np.random.default_rng(0)
    if sp.issparse(X):
        values = X.data
        if values.size > size:
            values = values[rng.integers(values.size, size=size)]
    elif X.size > size:  # index (row, column) pairs: no flattened copy of a non-contiguous X
        values = X[rng.integers(X.shape[0], size=size), rng.integers(X.shape[1], size=size)]
    else:
        values = X.reshape(-1)
    return np.asarray(values, dtype=np.float64)


def _column_range(X: Matrix) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest value of each gene, ``(n_genes,)`` each (implicit zeros count)."""
    if sp.issparse(X):
        return (
            np.asarray(X.min(axis=0).toarray(), dtype=np.float64).reshape(-1),
            np.asarray(X.max(axis=0).toarray(), dtype=np.float64).reshape(-1),
        )
    X = np.asarray(X, dtype=np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():  # an all-NaN column is checked elsewhere
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(X, axis=0), np.nanmax(X, axis=0)


def _no_signal(name: str) -> InputError:
    return InputError(
        f"{name} carries no signal: every gene has the same value in every training cell (e.g. all zero); "
        "check that it holds the expression values (a .zarr store with missing chunks reads as zeros)."
    )


def check_signal_streaming(blocks: Callable[[], Iterator[Matrix]], sample: Matrix, name: str = "X") -> None:
    """Raise an InputError when every gene is constant (e.g. all zero) over the cells: nothing to learn.

    ``sample`` (some of the cells) is checked first; ``blocks()``, consecutive row blocks of
    every cell, is read only when the sample alone shows no signal. In memory, pass the whole
    matrix as the sample.
    """
    low, high = _column_range(as_array(sample, name, dtype=None, sparse=True, finite=False))
    if (high > low).any():
        return
    for block in blocks():
        block_low, block_high = _column_range(as_array(block, "X", dtype=None, sparse=True, finite=False))
        np.fmin(low, block_low, out=low)
        np.fmax(high, block_high, out=high)
        if (high > low).any():
            return
    raise _no_signal(name)


def _dense_blocks(X: Matrix) -> Iterator[tuple[slice, np.ndarray]]:
    """Consecutive row blocks of X, each as a new dense float64 array (never a view of X)."""
    if sp.issparse(X) and X.format == "csc":
        X = X.tocsr()  # fast row slices; a new matrix, the caller's is untouched
    step = max(1, BLOCK_ENTRIES // X.shape[1])
    for start in range(0, X.shape[0], step):
        rows = slice(start, min(start + step, X.shape[0]))
        block = X[rows]
        if sp.issparse(block):
            yield rows, block.toarray().astype(np.float64, copy=False)
        else:
            yield rows, np.array(block, dtype=np.float64)


# -- detection ---------------------------------------------------------------------------------
def detect_input_kind(X: Matrix) -> tuple[InputKind, str]:
    """Guess whether ``X`` holds raw counts, log-normalised expression or continuous values.

    Looks at up to 100,000 values (the stored ``.data`` of a sparse matrix, so implicit zeros
    do not dilute the sample): any negative value means continuous data (any sign: arcsinh,
    scaled, imaging features, embeddings); non-negative integers reaching more than 20 are
    counts; non-negative non-integers are already log-normalised ("log"); small integers (at
    most 20: binary or very shallow data) are ambiguous and treated as "log", with the reason
    saying how to override.

    Parameters
    ----------
    X
        ``(n_cells, n_genes)`` numpy array or scipy sparse matrix (not modified).

    Returns
    -------
    kind, reason
        ``"counts"``, ``"log"`` or ``"continuous"``, and a sentence saying why (callers log it).
    """
    X = as_array(X, "X", dtype=None, sparse=True, finite=False)
    values = _sample(X)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "log", "no finite non-zero values to inspect: treated as already transformed"
    low, high = float(values.min()), float(values.max())
    if low < 0:
        return "continuous", (
            f"values include negatives (down to {low:.4g}): treated as continuous features of any sign, used as "
            "given, never clipped or calibrated; pass input_kind='log' if they are log-normalised expression"
        )
    fractional = values[values != np.round(values)]
    if fractional.size:
        reason = (
            f"values include non-integers (e.g. {fractional[0]:.4g}) up to {high:.4g}: "
            "treated as already log-normalised"
        )
        if high > LOG_MAX:
            reason += (
                f"; values above {LOG_MAX:g} suggest normalised but not log-transformed data, "
                "which cellw1 uses as given (apply log1p first if that is the case)"
            )
        return "log", reason
    if high > COUNT_MAX:
        return "counts", f"values are non-negative integers up to {high:.0f}: treated as raw counts"
    return "log", (
        f"values are non-negative integers up to {high:.0f} (at most {COUNT_MAX}), too small to be sure they are "
        "counts: treated as already transformed; pass input_kind='counts' if they are raw counts"
    )


# -- the fitted transform ----------------------------------------------------------------------
@dataclass(frozen=True)
class Preprocessor:
    """The expression transform shared by every group of cells.

    Attributes
    ----------
    input_kind
        ``"counts"`` (normalise each cell to ``target_sum``, then ``log1p``), ``"log"`` or
        ``"continuous"`` (values are used as they are, as float32).
    target_sum
        For counts, the total every cell is scaled to: the median total count of the cells the
        transform was fitted on (cells with no counts left out). ``None`` otherwise.
    reason
        Why ``input_kind`` was chosen (detected or given).
    n_features
        Number of genes it was fitted on; ``transform`` checks it (``None``: not checked).
    """

    input_kind: InputKind
    target_sum: float | None
    reason: str
    n_features: int | None = None

    def __post_init__(self) -> None:
        """Check the fields and store numbers as Python numbers."""
        if self.input_kind not in INPUT_KINDS:
            raise ConfigError(f"unknown input_kind {self.input_kind!r}; use one of {INPUT_KINDS}.")
        if self.input_kind == "counts":
            if self.target_sum is None or not (math.isfinite(self.target_sum) and self.target_sum > 0):
                raise ConfigError(f"target_sum={self.target_sum!r} must be a positive number for counts.")
            object.__setattr__(self, "target_sum", float(self.target_sum))
        elif self.target_sum is not None:
            raise ConfigError(f"target_sum={self.target_sum!r} must be None for input_kind={self.input_kind!r}.")
        if self.n_features is not None:
            if int(self.n_features) < 1:
                raise ConfigError(f"n_features={self.n_features!r} must be >= 1.")
            object.__setattr__(self, "n_features", int(self.n_features))

    @property
    def expression(self) -> bool:
        """Whether the values are expression (counts or log-normalised), never negative.

        Predictions of expression are calibrated and non-negative; ``False`` for continuous values.
        """
        return self.input_kind in EXPRESSION_KINDS

    def transform(self, X: Matrix) -> np.ndarray:
        """Transform cells into a new dense float32 array ``(n_cells, n_genes)``.

        Counts: ``log1p(target_sum * x / total(x))`` per cell, with the fitted ``target_sum``
        (cells with no counts stay 0). Log and continuous: ``X`` as float32. ``X`` (dense or
        sparse) is never modified; it is densified a block of rows at a time.
        """
        X = as_array(X, "X", dtype=None, sparse=True)
        if self.n_features is not None and X.shape[1] != self.n_features:
            raise InputError(
                f"X has {X.shape[1]} genes but the preprocessor was fitted on {self.n_features}; "
                "pass the same genes in the same order as the training data."
            )
        out = np.empty(X.shape, dtype=np.float32)
        if self.input_kind != "counts":
            for rows, block in _dense_blocks(X):
                out[rows] = block
            return out
        low = _minimum(X)
        if low < 0:
            raise InputError(
                f"X has negative values (minimum {low:.4g}) but the preprocessor expects raw counts; "
                "pass counts, or refit with input_kind='log' (log-normalised) or 'continuous' (values of any sign)."
            )
        totals = _cell_totals(X)
        assert self.target_sum is not None  # counts always have one (__post_init__)
        scale = np.divide(self.target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        for rows, block in _dense_blocks(X):
            block *= scale[rows, None]
            out[rows] = np.log1p(block, out=block)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field."""
        return {
            "input_kind": self.input_kind,
            "target_sum": self.target_sum,
            "reason": self.reason,
            "n_features": self.n_features,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer file format)."""
        unknown = set(data) - {"input_kind", "target_sum", "reason", "n_features"}
        if unknown:
            raise ConfigError(f"unknown Preprocessor fields {sorted(unknown)}; the file may come from a newer cellw1.")
        try:
            return cls(data["input_kind"], data.get("target_sum"), str(data.get("reason", "")), data.get("n_features"))
        except KeyError as exc:
            raise ConfigError(f"Preprocessor description lacks {exc}; the file is incomplete.") from exc


def _cell_totals(X: Matrix) -> np.ndarray:
    """Total of each row in float64, ``(n_cells,)``."""
    return np.asarray(X.sum(axis=1, dtype=np.float64)).reshape(-1)


def _contradicted(given: InputKind, sample: Matrix) -> str | None:
    """A warning when the values contradict the input kind the user gave, else ``None``.

    Counts are whole numbers: given ``"counts"``, non-integer values are data already
    transformed, which would be normalised and log1p-ed a second time. Given ``"log"``, whole
    numbers above ``COUNT_MAX`` look like raw counts, which would be used as log expression.
    """
    detected, _ = detect_input_kind(sample)
    if given == "counts" and detected == "log":
        values = _sample(sample)
        fractional = values[np.isfinite(values) & (values != np.round(values))]
        if fractional.size:
            return (
                f"input_kind='counts' was given but the values include non-integers (e.g. {fractional[0]:.4g}), "
                "which raw counts never are: they will be normalised and log1p-transformed again; pass "
                "input_kind='log' if they are already log-normalised."
            )
    if given == "log" and detected == "counts":
        return (
            f"input_kind='log' was given but the values are non-negative integers up to {_sample(sample).max():.0f}, "
            "which look like raw counts: they are used as log-normalised expression as they are; pass "
            "input_kind='counts' to normalise and log1p-transform them."
        )
    return None


def fit_preprocessor(X: Matrix, assume: Assumption = "auto") -> Preprocessor:
    """Fit the expression transform on the training cells of **both** groups together.

    Parameters
    ----------
    X
        ``(n_cells, n_genes)`` numpy array or scipy sparse matrix holding the control and the
        perturbed training cells (not modified).
    assume
        ``"auto"`` (detect with :func:`detect_input_kind`), ``"counts"``, ``"log"`` or ``"continuous"``.

    Returns
    -------
    Preprocessor
        For counts, ``target_sum`` is the median total count of the cells with any counts.

    Raises
    ------
    InputError
        Empty input, NaN or inf, negative values when counts are given or detected, counts
        where every cell is empty, or no signal (every gene constant, e.g. all zero).
    ConfigError
        An unknown ``assume``.
    """
    X = as_array(X, "X", dtype=None, sparse=True)
    return fit_preprocessor_streaming(lambda: iter([X]), X, assume)


def fit_preprocessor_streaming(
    blocks: Callable[[], Iterator[Matrix]],
    sample: Matrix,
    assume: Assumption = "auto",
) -> Preprocessor:
    """:func:`fit_preprocessor` for cells that arrive a block of rows at a time (from disk).

    The input kind is detected on ``sample`` (rows spread over the data); for counts one pass
    over ``blocks()`` checks every value (finite, non-negative) and collects every cell's
    total, whose median is ``target_sum`` exactly as in memory. Memory: one block plus one
    float per cell. Data already transformed need no pass here (their values are checked as
    they are read for training).

    Parameters
    ----------
    blocks
        Called once (counts only); yields consecutive row blocks (arrays or sparse matrices)
        covering every training cell of both groups once.
    sample
        Some of those cells, for :func:`detect_input_kind`.
    assume
        ``"auto"``, ``"counts"``, ``"log"`` or ``"continuous"``.
    """
    if assume not in ASSUMPTIONS:
        raise ConfigError(f"unknown input kind {assume!r}; use one of {ASSUMPTIONS}.")
    sample = as_array(sample, "the sample of cells", dtype=None, sparse=True, finite=False)
    if assume == "auto":
        kind, reason = detect_input_kind(sample)
    else:
        kind, reason = assume, f"input_kind={assume!r} was given"
        contradiction = _contradicted(assume, sample)
        if contradiction is not None:
            logger.warning(contradiction)
    n_features = sample.shape[1]
    if kind != "counts":
        check_signal_streaming(blocks, sample)
        low = _minimum(sample)
        if kind == "log" and low < 0:  # the user's word counts, but the output will lose the negatives
            logger.warning(
                "input_kind='log' was given but the values include negatives (down to %.4g), which looks like "
                "continuous data: predictions are expression and never negative, so those values are clipped to 0; "
                "pass input_kind='continuous' to keep values of any sign.",
                low,
            )
        elif assume == "auto" and kind == "continuous":  # says which kind was detected, and how to choose
            logger.warning("input: %s (pass input_kind= to choose; this message then goes)", reason)
        else:
            logger.info("input: %s", reason)
        return Preprocessor(kind, None, reason, n_features)
    parts = []
    for block in blocks():
        block = as_array(block, "X", dtype=None, sparse=True)
        low = _minimum(block)
        if low < 0:
            raise InputError(
                f"X has negative values (minimum {low:.4g}) but raw counts were "
                f"{'given' if assume == 'counts' else 'detected'}; "
                "pass input_kind='continuous' for values of any sign, or 'log' for log-normalised expression."
            )
        parts.append(_cell_totals(block))
    totals = np.concatenate(parts) if parts else np.zeros(0)
    totals = totals[totals > 0]
    if totals.size == 0:
        raise InputError("every cell has zero counts; check that X holds the expression values of the cells.")
    check_signal_streaming(blocks, sample)
    target_sum = float(np.median(totals))
    logger.info("expression input: %s; cells normalised to %.6g counts, then log1p", reason, target_sum)
    return Preprocessor("counts", target_sum, reason, n_features)
