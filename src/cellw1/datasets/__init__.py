"""Synthetic data sets: the paper's 2-D toy transport problems (:mod:`cellw1.datasets.toys`)
and a synthetic single-cell perturbation experiment (:mod:`cellw1.datasets.synthetic`)."""

from __future__ import annotations

from .combinations import synthetic_combinations, synthetic_gene_targets
from .conditions import synthetic_doses, synthetic_embedded_perturbations
from .synthetic import synthetic_perturbation
from .toys import (
    TOYS,
    Toy,
    bookshelf,
    check_toy_names,
    checkerboard,
    circles,
    eight_gaussians,
    load_toy,
    moons,
    swiss_roll,
)

__all__ = [
    "TOYS",
    "Toy",
    "bookshelf",
    "check_toy_names",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "load_toy",
    "moons",
    "swiss_roll",
    "synthetic_combinations",
    "synthetic_doses",
    "synthetic_gene_targets",
    "synthetic_embedded_perturbations",
    "synthetic_perturbation",
]
