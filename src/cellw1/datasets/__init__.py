"""Synthetic data sets: the paper's 2-D toy transport problems (:mod:`cellw1.datasets.toys`)."""

from __future__ import annotations

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
]
