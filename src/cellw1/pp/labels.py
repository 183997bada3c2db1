"""Condition labels compared one way everywhere: as text, with missing labels left out.

An obs column may hold strings, categories, integers, or floats (integers with a missing
value become floats in pandas). A label given by the user (``control=0``, ``"0"``) and a
label read from obs are both turned into text by :func:`label_text`, so ``0``, ``0.0`` and
``"0"`` name the same group. Missing labels (NaN, None) are never a group.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

logger = logging.getLogger(__name__)


def label_text(value: Any) -> str:
    """Write one label as text: integral numbers without a decimal point (``1.0`` -> ``"1"``)."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return str(math.trunc(value))
    return str(value)


def label_series(column: pd.Series, *, key: str, warn: bool = True) -> pd.Series:
    """``column`` as text labels (object dtype); missing labels become ``None``.

    Parameters
    ----------
    column
        An ``obs`` column (not modified).
    key
        Its name, for the warning.
    warn
        Log one warning saying how many cells have no label and are left out.
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=True)  # a missing label has code -1
    names = np.array([label_text(u) for u in uniques] + [None], dtype=object)
    text = names[codes]
    missing = codes < 0
    if warn and missing.any():
        logger.warning(
            "%d of %d cells have no label in obs[%r] (NaN or None); they are left out.",
            int(missing.sum()),
            len(missing),
            key,
        )
    return pd.Series(text, index=column.index, dtype=object, name=column.name)


def present_labels(labels: pd.Series) -> list[str]:
    """List the distinct labels of ``labels`` (from :func:`label_series`), sorted, missing ones left out."""
    return sorted({v for v in labels if v is not None})


def condition_labels(adata: Any, condition_key: str, *, warn: bool = True) -> pd.Series:
    """``adata.obs[condition_key]`` as text labels (:func:`label_series`); missing ones are ``None``.

    ``adata`` is an AnnData or an open :class:`~cellw1.io.source.Source` (anything with ``obs``,
    ``n_obs`` and ``n_vars``). Clear errors for empty data or a missing key; with ``warn``,
    cells without a label are counted in one logged warning (they belong to no group).
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"the AnnData is empty ({adata.n_obs} cells x {adata.n_vars} features).")
    if condition_key not in adata.obs:
        raise InputError(
            f"condition key {condition_key!r} is not a column of adata.obs; available: {list(adata.obs.columns)}."
        )
    return label_series(adata.obs[condition_key], key=condition_key, warn=warn)


def check_label(labels: pd.Series, value: str, what: str, key: str) -> None:
    """Raise an InputError listing the available labels when ``value`` (text) is not in ``labels``."""
    if value not in set(present_labels(labels)):
        counts = labels.value_counts()
        shown = ", ".join(f"{k} ({v})" for k, v in counts.head(30).items())
        more = f" and {len(counts) - 30} more" if len(counts) > 30 else ""
        raise InputError(f"{what} {value!r} is not a value of obs[{key!r}]; available: {shown}{more}.")
