"""The paper's 2-D toy problems (Chen et al., Methods 4.3 and Fig. 2), generated with numpy.

Every generator has the signature ``fn(n=1000, seed=0) -> Toy`` and returns ``n`` source and
``n`` target points as ``float32`` arrays of shape ``(n, 2)``. The same ``seed`` gives the same
points on every machine (numpy's PCG64 ``default_rng``).

Scales
------
bookshelf
    Source ``x ~ U(0, 1)``, target ``x ~ U(2, 3)``, both with ``y ~ N(0, 0.001^2)``
    (the paper's two thin strips; W1 = 2).
circles
    Two concentric noisy circles per side (noise 0.03, half the points on each): source
    radii 0.5 and 1.0, target radii 1.5 and 3.0. Labels: 0 = inner, 1 = outer.
swiss_roll
    Source ``N(0, I)``; target the ``(x, z)`` plane of a swiss roll,
    ``t ~ 1.5 pi (1 + 2 U)``, ``(t cos t, t sin t) + N(0, 0.5^2)``, divided by 7 so both
    clouds span roughly ``[-2, 2]``.
moons
    The two interleaving half circles of radius 1 (noise 0.05): source the upper moon
    (centre ``(0, 0)``), target the lower moon (centre ``(1, 0.5)``).
8gaussians
    Source ``N(0, 0.5^2 I)``; target an equal mixture of 8 Gaussians (std 0.2) centred on the
    circle of radius 4 at angles ``k pi / 4``. Target labels: the component ``k``.
checkerboard
    Source ``N(0, I)``; target uniform on the 8 "black" cells (row + column even) of a 4x4
    checkerboard covering ``[-2, 2]^2``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True, eq=False)
class Toy:
    """A toy transport problem.

    Attributes
    ----------
    name
        Registry key, e.g. ``"circles"``.
    source
        Source points ``(n, 2)``, ``float32``.
    target
        Target points ``(m, 2)``, ``float32``.
    source_labels, target_labels
        Integer group of each point (``(n,)`` and ``(m,)``), or ``None`` when the toy has none.
    """

    name: str
    source: np.ndarray
    target: np.ndarray
    source_labels: np.ndarray | None = None
    target_labels: np.ndarray | None = None


def _check(n: int, seed: int, *, min_points: int = 2) -> np.random.Generator:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < min_points:
        raise InputError(f"n={n!r} must be an integer >= {min_points} (the number of points per side).")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed={seed!r} must be an integer.")
    return np.random.default_rng(int(seed))


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def bookshelf(n: int = 1000, seed: int = 0) -> Toy:
    """Two thin horizontal strips: ``x ~ U(0, 1)`` moves to ``x ~ U(2, 3)`` (Methods 4.3).

    Every map that moves each point to the right is W1-optimal; only the monotone one keeps
    the order of the points (the "books").
    """
    rng = _check(n, seed, min_points=1)
    source = np.column_stack([rng.uniform(0.0, 1.0, n), rng.normal(0.0, 0.001, n)])
    target = np.column_stack([rng.uniform(2.0, 3.0, n), rng.normal(0.0, 0.001, n)])
    return Toy("bookshelf", _f32(source), _f32(target))


def _two_circles(
    n: int, radii: tuple[float, float], noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n_outer = n // 2
    labels = np.concatenate([np.zeros(n - n_outer, dtype=np.int64), np.ones(n_outer, dtype=np.int64)])
    radius = np.where(labels == 0, radii[0], radii[1])
    angle = rng.uniform(0.0, 2 * np.pi, n)
    points = radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
    return points + rng.normal(0.0, noise, size=(n, 2)), labels


def circles(n: int = 1000, seed: int = 0) -> Toy:
    """Concentric circles: radii (0.5, 1.0) move to (1.5, 3.0) around the same centre.

    Transport rays are radial, so inner->inner and inner->outer are both W1-optimal; only the
    monotone map sends the inner source circle (label 0) to the inner target circle.
    """
    rng = _check(n, seed)
    source, source_labels = _two_circles(n, (0.5, 1.0), 0.03, rng)
    target, target_labels = _two_circles(n, (1.5, 3.0), 0.03, rng)
    return Toy("circles", _f32(source), _f32(target), source_labels, target_labels)


def swiss_roll(n: int = 1000, seed: int = 0) -> Toy:
    """Standard Gaussian to the ``(x, z)`` plane of a swiss roll, scaled by 1/7."""
    rng = _check(n, seed, min_points=1)
    source = rng.normal(size=(n, 2))
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    target = (np.column_stack([t * np.cos(t), t * np.sin(t)]) + rng.normal(0.0, 0.5, size=(n, 2))) / 7.0
    return Toy("swiss_roll", _f32(source), _f32(target))


def moons(n: int = 1000, seed: int = 0) -> Toy:
    """Two interleaving half circles: the upper moon moves onto the lower one."""
    rng = _check(n, seed, min_points=1)
    a = rng.uniform(0.0, np.pi, n)
    b = rng.uniform(0.0, np.pi, n)
    source = np.column_stack([np.cos(a), np.sin(a)]) + rng.normal(0.0, 0.05, size=(n, 2))
    target = np.column_stack([1.0 - np.cos(b), 0.5 - np.sin(b)]) + rng.normal(0.0, 0.05, size=(n, 2))
    return Toy("moons", _f32(source), _f32(target))


def eight_gaussians(n: int = 1000, seed: int = 0) -> Toy:
    """``N(0, 0.5^2 I)`` to 8 Gaussians (std 0.2) on the circle of radius 4."""
    rng = _check(n, seed, min_points=1)
    source = rng.normal(0.0, 0.5, size=(n, 2))
    labels = rng.integers(0, 8, n)
    angle = labels * (np.pi / 4)
    target = 4.0 * np.column_stack([np.cos(angle), np.sin(angle)]) + rng.normal(0.0, 0.2, size=(n, 2))
    return Toy("8gaussians", _f32(source), _f32(target), None, labels.astype(np.int64))


def checkerboard(n: int = 1000, seed: int = 0) -> Toy:
    """``N(0, I)`` to the uniform law on the black cells of a 4x4 board on ``[-2, 2]^2``."""
    rng = _check(n, seed, min_points=1)
    source = rng.normal(size=(n, 2))
    black = np.array([(row, col) for row in range(4) for col in range(4) if (row + col) % 2 == 0], dtype=float)
    cell = black[rng.integers(0, len(black), n)]
    target = -2.0 + cell[:, ::-1] + rng.uniform(size=(n, 2))  # x from the column, y from the row
    return Toy("checkerboard", _f32(source), _f32(target))


TOYS: dict[str, Callable[..., Toy]] = {
    "bookshelf": bookshelf,
    "circles": circles,
    "swiss_roll": swiss_roll,
    "moons": moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
}


def check_toy_names(names: list[str]) -> list[str]:
    """Return ``names`` unchanged, or raise :class:`~cellw1.errors.InputError` on an unknown one."""
    unknown = [name for name in names if name not in TOYS]
    if unknown:
        raise InputError(f"unknown toy {', '.join(map(repr, unknown))}; choose from {', '.join(TOYS)}.")
    return list(names)


def load_toy(name: str, n: int = 1000, seed: int = 0) -> Toy:
    """Generate the toy ``name`` (a key of :data:`TOYS`) with ``n`` points per side."""
    check_toy_names([name])
    return TOYS[name](n=n, seed=seed)
