"""The evaluation's split context: what one split may know about the other perturbations.

Some baselines and metrics need more than one perturbation's cells: the mean of all training
perturbed cells (:mod:`cellw1.eval.baselines`), the centroid of all perturbed cells and the
other perturbations' observed centroids (:mod:`cellw1.eval.systema`). For split ``r`` of
perturbation ``p`` they read the **same split index** ``r`` of every evaluated perturbation:

- every evaluated perturbation's **training** cells of split ``r`` (never a test cell of
  ``p``: the labels differ), and the training controls of ``p``'s own split;
- every evaluated perturbation's **held-out** cells of split ``r``, only through their mean,
  as the candidates of the centroid accuracy (a truth the prediction is compared with, never
  an input of a method);
- for a member of a combination ``"A+B"`` that is not evaluated, all of its cells (none of
  them is a test cell).

All of it is read in the units of the split's scoring model (its log-normalised expression, or
the obsm features), one group at a time, and only the means are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .splits import shared_control_rng, split_group, split_rngs

if TYPE_CHECKING:
    import anndata as ad

#: rows preprocessed at once when a group's mean is taken
MEAN_ROWS = 8_192


@dataclass(frozen=True)
class SplitRows:
    """Rows of ``adata`` of one perturbation's split: training and held-out control and perturbed cells."""

    train_control: np.ndarray
    train_perturbed: np.ndarray
    test_control: np.ndarray
    test_perturbed: np.ndarray

    @property
    def train(self) -> np.ndarray:
        """Every training row, sorted."""
        return np.sort(np.concatenate([self.train_control, self.train_perturbed]))


def split_rows(
    labels: np.ndarray,
    control: str,
    perturbations: Sequence[str],
    held_out: np.ndarray | None,
    seed: int,
    repeat: int,
    shared_control: bool = False,
) -> dict[str, SplitRows]:
    """Split ``repeat`` of every perturbation (:mod:`cellw1.eval.splits`; or the held-out covariate)."""
    control_rows = np.flatnonzero(labels == control)
    out: dict[str, SplitRows] = {}
    for perturbation in perturbations:
        pert_rows = np.flatnonzero(labels == perturbation)
        if held_out is None:
            rng_c, rng_p = split_rngs(seed, repeat, perturbation)
            train_c, test_c = split_group(
                control_rows.size, shared_control_rng(seed, repeat) if shared_control else rng_c
            )
            train_p, test_p = split_group(pert_rows.size, rng_p)
            out[perturbation] = SplitRows(
                control_rows[train_c], pert_rows[train_p], control_rows[test_c], pert_rows[test_p]
            )
        else:
            c, p = held_out[control_rows], held_out[pert_rows]
            out[perturbation] = SplitRows(control_rows[~c], pert_rows[~p], control_rows[c], pert_rows[p])
    return out


@dataclass
class SplitContext:
    """One split (``perturbation``, ``repeat``) and the same split of every evaluated perturbation."""

    adata: ad.AnnData
    labels: np.ndarray
    perturbation: str
    repeat: int
    splits: dict[str, SplitRows]
    _means: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> SplitRows:
        """The rows of this split."""
        return self.splits[self.perturbation]

    @property
    def perturbations(self) -> list[str]:
        """Every evaluated perturbation, this one included, in evaluation order."""
        return list(self.splits)

    def mean(self, model: Any, rows: np.ndarray, key: tuple[str, str]) -> np.ndarray:
        """Mean of ``rows`` in ``model``'s units (``model.preprocess``), read in blocks and cached under ``key``."""
        if key not in self._means:
            total = np.zeros(len(model.features), dtype=np.float64)
            for start in range(0, len(rows), MEAN_ROWS):
                block = np.sort(rows[start : start + MEAN_ROWS])
                total += np.asarray(model.preprocess(self.adata[block]), dtype=np.float64).sum(axis=0)
            self._means[key] = total / max(len(rows), 1)
        return self._means[key]

    def control_mean(self, model: Any) -> np.ndarray:
        """Mean of this split's training control cells."""
        return self.mean(model, self.rows.train_control, ("control", "train"))

    def train_mean(self, model: Any, perturbation: str) -> np.ndarray:
        """Mean of a perturbation's training cells of this split index (all its cells if it is not evaluated)."""
        if perturbation in self.splits:
            return self.mean(model, self.splits[perturbation].train_perturbed, (perturbation, "train"))
        return self.mean(model, np.flatnonzero(self.labels == perturbation), (perturbation, "all"))

    def test_mean(self, model: Any, perturbation: str) -> np.ndarray:
        """Mean of an evaluated perturbation's held-out cells of this split index."""
        return self.mean(model, self.splits[perturbation].test_perturbed, (perturbation, "test"))

    def perturbed_centroid(self, model: Any) -> np.ndarray:
        """Mean of the training cells of every evaluated perturbation, pooled over cells."""
        sizes = np.array([len(self.splits[p].train_perturbed) for p in self.perturbations], dtype=np.float64)
        means = np.stack([self.train_mean(model, p) for p in self.perturbations])
        return (sizes[:, None] * means).sum(axis=0) / sizes.sum()

    def has_label(self, label: str) -> bool:
        """Whether some cell carries ``label``."""
        return bool((self.labels == label).any())
