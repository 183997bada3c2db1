"""The evaluation's splits: seeded, per-group train/test partitions and the held-out covariate."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, InputError
from ..pp.labels import label_series, label_text, present_labels

if TYPE_CHECKING:
    import anndata as ad

#: Bounds of the test-set size rule (see :func:`n_test_cells`).
TEST_FRACTION, MIN_TEST, MAX_TEST = 0.2, 500, 1000


def n_test_cells(n: int) -> int:
    """Test cells drawn from a group of ``n`` cells: ``min(max(round(0.2 n), 500), 1000, n // 3)``.

    A fifth of the group, clamped to [500, 1000] cells, but never more than a third of the
    group. ``round`` is Python's (halves to even). Examples: 48 -> 16, 1000 -> 333,
    2386 -> 500, 6000 -> 1000.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"a group size must be a non-negative integer, got {n!r}.")
    return int(min(max(round(TEST_FRACTION * n), MIN_TEST), MAX_TEST, n // 3))


def split_group(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into sorted ``(train, test)`` indices, ``n_test_cells(n)`` in test."""
    order = rng.permutation(n)
    n_test = n_test_cells(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def shared_control_rng(seed: int, repeat: int) -> np.random.Generator:
    """Return the generator of the control split shared by every perturbation of a repeat (``w1_conditional``)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(repeat), zlib.crc32(b"shared control split")]))


def split_rngs(seed: int, repeat: int, perturbation: str) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the control and perturbed splits of one (perturbation, repeat).

    Seeded by the perturbation's *name* (CRC-32), so a split does not depend on which other
    perturbations are evaluated or in what order.
    """
    seq = np.random.SeedSequence([int(seed), int(repeat), zlib.crc32(perturbation.encode())])
    control_seq, perturbed_seq = seq.spawn(2)
    return np.random.default_rng(control_seq), np.random.default_rng(perturbed_seq)


def holdout_mask(adata: ad.AnnData, holdout: tuple[str, str]) -> np.ndarray:
    """Boolean mask of the held-out cells; clear errors for a bad key or value."""
    if not isinstance(holdout, (tuple, list)) or len(holdout) != 2:
        raise ConfigError(f"holdout must be a (covariate_key, value) pair, got {holdout!r}.")
    key, value = holdout
    if key not in adata.obs:
        raise InputError(f"holdout key {key!r} is not a column of adata.obs; available: {list(adata.obs.columns)}.")
    covariate = label_series(adata.obs[key], key=key, warn=False)
    available = present_labels(covariate)
    if label_text(value) not in available:
        raise InputError(f"holdout value {value!r} is not a value of obs[{key!r}]; available values: {available}.")
    return (covariate == label_text(value)).to_numpy()


def check_group_sizes(counts: Mapping[str, int], min_train: int) -> None:
    """Raise an InputError naming the groups too small to give a test cell and ``min_train`` training cells."""
    small = {name: n for name, n in counts.items() if n_test_cells(n) < 1 or n - n_test_cells(n) < min_train}
    if small:
        raise InputError(
            f"groups too small to split into training and test cells: {small}; each needs at least "
            f"{min_train} training cells and one test cell. Leave them out with perturbations=[...]."
        )
