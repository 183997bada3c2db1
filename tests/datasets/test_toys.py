"""Toy generators and monotonicity measures, against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from cellw1.datasets import TOYS, Toy, circles, load_toy
from cellw1.errors import InputError
from cellw1.eval.metrics import energy_distance
from cellw1.eval.monotonicity import (
    bookshelf_spearman,
    circles_inner_to_inner,
    exact_w1,
    label_preservation,
    toy_scores,
)


# -- generators ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TOYS))
def test_shapes_dtypes_and_seeds(name: str) -> None:
    toy = load_toy(name, n=17, seed=3)
    assert isinstance(toy, Toy)
    assert toy.name == name
    for arr in (toy.source, toy.target):
        assert arr.shape == (17, 2)
        assert arr.dtype == np.float32
        assert np.isfinite(arr).all()
    for labels, points in ((toy.source_labels, toy.source), (toy.target_labels, toy.target)):
        if labels is not None:
            assert labels.shape == (len(points),)
            assert np.issubdtype(labels.dtype, np.integer)
    again = load_toy(name, n=17, seed=3)
    assert np.array_equal(toy.source, again.source)
    assert np.array_equal(toy.target, again.target)
    other = load_toy(name, n=17, seed=4)
    assert not np.array_equal(toy.source, other.source)


def test_unknown_toy_lists_the_names() -> None:
    with pytest.raises(InputError, match="circles") as info:
        load_toy("spiral")
    assert "spiral" in str(info.value)
    assert "bookshelf" in str(info.value)


@pytest.mark.parametrize("n", [0, -5, 2.5, True])
def test_bad_n_is_an_input_error(n: object) -> None:
    with pytest.raises(InputError, match="n="):
        load_toy("moons", n=n)  # type: ignore[arg-type]


def test_bookshelf_strips() -> None:
    toy = load_toy("bookshelf", n=2000, seed=1)
    assert toy.source[:, 0].min() >= 0.0
    assert toy.source[:, 0].max() <= 1.0
    assert toy.target[:, 0].min() >= 2.0
    assert toy.target[:, 0].max() <= 3.0
    assert abs(np.std(toy.source[:, 1]) - 0.001) < 2e-4
    assert np.abs(toy.target[:, 1]).max() < 0.01


def test_circle_radii_and_labels() -> None:
    toy = circles(n=2001, seed=2)
    assert (toy.source_labels == 0).sum() == 1001
    assert (toy.source_labels == 1).sum() == 1000
    for points, labels, radii in (
        (toy.source, toy.source_labels, (0.5, 1.0)),
        (toy.target, toy.target_labels, (1.5, 3.0)),
    ):
        radius = np.linalg.norm(points, axis=1)
        for label, expected in enumerate(radii):
            r = radius[labels == label]
            assert abs(r.mean() - expected) < 0.01  # noise 0.03 per coordinate
            assert np.abs(r - expected).max() < 0.2


def test_moons_are_the_two_half_circles() -> None:
    toy = load_toy("moons", n=1000, seed=0)
    assert np.abs(np.linalg.norm(toy.source, axis=1) - 1.0).max() < 0.3
    assert np.abs(np.linalg.norm(toy.target - [1.0, 0.5], axis=1) - 1.0).max() < 0.3
    # upper moon above, lower moon below: mean heights 2/pi and 0.5 - 2/pi
    assert abs(toy.source[:, 1].mean() - 2 / np.pi) < 0.05
    assert abs(toy.target[:, 1].mean() - (0.5 - 2 / np.pi)) < 0.05


def test_swiss_roll_scale() -> None:
    toy = load_toy("swiss_roll", n=1000, seed=0)
    radius = np.linalg.norm(toy.target, axis=1)  # t / 7 with t in [1.5 pi, 4.5 pi], noise 0.5 / 7
    assert 1.5 * np.pi / 7 - 0.4 < radius.min()
    assert radius.max() < 4.5 * np.pi / 7 + 0.4
    assert abs(toy.source.std() - 1.0) < 0.1


def test_eight_gaussians_components() -> None:
    toy = load_toy("8gaussians", n=800, seed=0)
    angle = toy.target_labels * np.pi / 4
    centres = 4.0 * np.column_stack([np.cos(angle), np.sin(angle)])
    assert np.linalg.norm(toy.target - centres, axis=1).max() < 1.2  # std 0.2, ~5 sigma
    assert set(toy.target_labels.tolist()) == set(range(8))
    assert abs(toy.source.std() - 0.5) < 0.05


def test_checkerboard_black_cells_only() -> None:
    toy = load_toy("checkerboard", n=4000, seed=0)
    assert np.abs(toy.target).max() <= 2.0
    cells = np.floor(toy.target + 2.0).astype(int)
    assert np.all((cells.sum(1) % 2) == 0)
    assert len({tuple(c) for c in cells}) == 8


# -- monotonicity measures ----------------------------------------------------------------------
def test_spearman_kept_and_reversed_order() -> None:
    toy = load_toy("bookshelf", n=300, seed=0)
    shifted = toy.source + np.array([2.0, 0.0], dtype=np.float32)
    assert bookshelf_spearman(toy.source, shifted) == pytest.approx(1.0)
    reversed_ = toy.source.copy()
    reversed_[:, 0] = 3.0 - toy.source[:, 0]
    assert bookshelf_spearman(toy.source, reversed_) == pytest.approx(-1.0)
    with pytest.raises(InputError, match="same shape"):
        bookshelf_spearman(toy.source, shifted[:-1])


def test_circles_radial_map_and_swapped_map() -> None:
    toy = circles(n=400, seed=0)
    radial = toy.source * 3.0  # radius 0.5 -> 1.5 and 1.0 -> 3.0: the monotone map
    assert circles_inner_to_inner(toy, radial) == 1.0
    assert label_preservation(toy.source_labels, radial, toy.target, toy.target_labels) == 1.0
    factor = np.where(toy.source_labels == 0, 6.0, 1.5)[:, None]  # inner -> outer, outer -> inner
    swapped = toy.source * factor
    assert circles_inner_to_inner(toy, swapped) == 0.0
    assert label_preservation(toy.source_labels, swapped, toy.target, toy.target_labels, label=1) == 0.0


def test_label_preservation_input_errors() -> None:
    toy = circles(n=40, seed=0)
    with pytest.raises(InputError, match="label 7"):
        label_preservation(toy.source_labels, toy.source, toy.target, toy.target_labels, label=7)
    with pytest.raises(InputError, match="source_labels"):
        label_preservation(toy.source_labels[:-1], toy.source, toy.target, toy.target_labels)
    with pytest.raises(InputError, match="no labels"):
        circles_inner_to_inner(load_toy("moons", n=40), toy.source)


def test_energy_distance_known_values() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(57, 2))
    assert energy_distance(x, x.copy()) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(x, x + [1.0, 0.0]) > 0.1
    assert energy_distance(x, x + [2.0, 0.0]) > energy_distance(x, x + [1.0, 0.0])
    # two point masses at distance 5: 2 * 5 - 0 - 0
    assert energy_distance(np.zeros((7, 2)), np.tile([3.0, 4.0], (11, 1))) == pytest.approx(10.0)
    # subsampling keeps the answer for point masses
    assert energy_distance(np.zeros((50, 2)), np.tile([3.0, 4.0], (60, 1)), max_points=10) == pytest.approx(10.0)


def test_exact_w1_of_a_translation() -> None:
    x = np.random.default_rng(1).normal(size=(29, 2))
    assert exact_w1(x, x + [3.0, 4.0]) == pytest.approx(5.0, rel=1e-9)
    assert exact_w1(x, 2.0 * x) == pytest.approx(2.0 * exact_w1(x / 2.0, x), rel=1e-9)


def test_toy_scores_of_the_monotone_bookshelf_map() -> None:
    toy = load_toy("bookshelf", n=300, seed=0)
    scores = toy_scores(toy, toy.source + np.array([2.0, 0.0], dtype=np.float32))
    assert scores["spearman"] == pytest.approx(1.0)
    assert scores["exact_w1"] == pytest.approx(2.0, abs=0.05)
    assert 0.0 <= scores["energy_distance"] < 0.05
    assert "inner_to_inner" not in scores
