"""Synthetic data sets.

The paper's 2-D toy transport problems (:mod:`cellw1.datasets.toys`),
a synthetic single-cell perturbation experiment (:mod:`cellw1.datasets.synthetic`), synthetic
doses and embedded perturbations (:mod:`cellw1.datasets.conditions`), a synthetic CyTOF
stimulation with values of any sign (:mod:`cellw1.datasets.cytometry`) and a synthetic pooled
screen (:mod:`cellw1.datasets.screen`).
"""

from __future__ import annotations

from .combinations import synthetic_combinations, synthetic_gene_targets
from .conditions import synthetic_doses, synthetic_embedded_perturbations
from .cytometry import synthetic_cytometry
from .screen import synthetic_screen
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
    "synthetic_cytometry",
    "synthetic_doses",
    "synthetic_gene_targets",
    "synthetic_embedded_perturbations",
    "synthetic_perturbation",
    "synthetic_screen",
]
