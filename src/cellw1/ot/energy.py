"""The energy distance: its one definition, the step size's state selection, and its refinement.

:func:`energy_distance` is the energy distance of the package: the metric of
:mod:`cellw1.eval.metrics` and the score by which :class:`StepSizeSelector` keeps the best
state of a step size (of a single map, or of every condition of a conditional map).

As a loss of the step size alone, at a cost independent of the dimension: the refinement of
:mod:`cellw1.ot.stepsize` descends the minibatch energy distance
``2 E|T(x) - y| - E|T(x) - T(x')|`` in the step sizes ``eta``, with ``T(x) = x - eta(x) u(x)``
and ``u`` fixed. Every squared distance involved is a quadratic in the ``eta`` of its cells:

    |T(x_i) - y_j|^2    = |x_i - y_j|^2 - 2 eta_i u_i.(x_i - y_j) + eta_i^2 |u_i|^2
    |T(x_i) - T(x_k)|^2 = |x_i - x_k|^2 - 2 eta_i u_i.(x_i - x_k) - 2 eta_k u_k.(x_k - x_i)
                          + eta_i^2 |u_i|^2 + eta_k^2 |u_k|^2 - 2 eta_i eta_k u_i.u_k

so a :class:`EnergyPool` computes the inner products of a pool of cells once (five matrix
products), and each step then gathers a minibatch's blocks: ``O(b^2)`` per step, where
``torch.cdist`` on the moved cells costs ``O(b^2 d)`` forward and again backward. In few
dimensions the distances of the moved cells are cheaper than the bookkeeping, and the pool
computes them directly; both give the same loss and gradient. :func:`refine_energy` is the
loop of that refinement for both models; each feeds it through :class:`EnergyBatches`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from scipy.spatial.distance import cdist
from torch import nn
from tqdm.auto import tqdm

from .config import W1Config
from .potential import adam_kernel, evaluate
from .training import Training

#: cells per side of a pool; a step draws its minibatch from the pool
POOL_CELLS = 1_024
#: steps drawn from one pool before the next is taken
POOL_STEPS = 250
#: added under each square root, so equal cells have a finite gradient
EPS = 1e-12
#: from this dimension on, the pool works from inner products rather than distances
GRAM_MIN_DIM = 256
#: largest number of distances :func:`pair_sums` holds at once (2^16 doubles = 512 KiB)
BLOCK_ELEMENTS = 1 << 16


def pair_sums(
    x: np.ndarray,
    y: np.ndarray | None,
    reduce: Callable[[np.ndarray], np.ndarray],
    *,
    block_elements: int = BLOCK_ELEMENTS,
) -> np.ndarray:
    """Sum ``reduce`` over all pairs of the squared-distance matrix, one block of rows at a time.

    ``reduce(d)`` maps a flat block of squared distances to a vector of sums (one per kernel).
    With ``y=None`` the pairs are ``(x_i, x_j)`` for all ``i, j``: only the upper triangle
    is computed (diagonal blocks once, the rest twice), halving the work. A block holds at
    most ``block_elements`` entries, so no ``n x m`` matrix is ever held.
    """
    symmetric = y is None
    cols = x if y is None else y
    n = x.shape[0]
    rows_per_block = max(1, block_elements // cols.shape[0])
    total: np.ndarray | None = None
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        if symmetric:
            block = cdist(x[start:stop], x[start:], "sqeuclidean")
            part = reduce(block[:, : stop - start].ravel()) + 2.0 * reduce(block[:, stop - start :].ravel())
        else:
            part = reduce(cdist(x[start:stop], cols, "sqeuclidean").ravel())
        total = part if total is None else total + part
    assert total is not None
    return total


def distance_sums(d: np.ndarray) -> np.ndarray:
    """Reducer of :func:`pair_sums`: the sum of Euclidean distances (square roots of ``d``)."""
    return np.array([np.sqrt(d).sum()]) if d.size else np.zeros(1)


def mean_distance(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray | None = None, *, block_elements: int = BLOCK_ELEMENTS
) -> Any:
    """``E|X - Y|``: the mean distance over all pairs, diagonal included (``y=None``: ``x`` against itself).

    Tensors (training, float32): one ``torch.cdist``, a 0-d tensor. Float64 arrays (scoring):
    exact differences by blocks of rows (:func:`pair_sums`), a numpy float.
    """
    other = x if y is None else y
    if isinstance(x, torch.Tensor):
        return torch.cdist(x, other).mean()  # type: ignore[arg-type]
    sums = pair_sums(x, None if y is None else y, distance_sums, block_elements=block_elements)  # type: ignore[arg-type]
    return sums[0] / (x.shape[0] * other.shape[0])


def energy_distance(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    yy: float | None = None,
    *,
    block_elements: int = BLOCK_ELEMENTS,
) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two samples ``(n, d)``, ``(m, d)``.

    Means over all pairs, diagonal included (the V-statistic), not square-rooted. The one
    definition of the package: the step size's state selection calls it on float32 tensors,
    :func:`cellw1.eval.metrics.energy_distance` on float64 arrays (see :func:`mean_distance`).

    Parameters
    ----------
    x, y
        The two samples, both tensors or both arrays.
    yy
        ``E|Y - Y'|`` when already known (a fixed validation target).
    block_elements
        Largest block of distances held at once (arrays only).
    """
    xy = mean_distance(x, y, block_elements=block_elements)
    xx = mean_distance(x, block_elements=block_elements)
    yy = float(mean_distance(y, block_elements=block_elements)) if yy is None else yy
    return float(2 * xy - xx) - yy


def distinct_rows(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``size`` distinct rows of ``x``, drawn at random (a pool of cells)."""
    return x[torch.randperm(len(x), generator=generator)[:size].to(x.device)]


class EnergyPool:
    """Inner products of pooled source cells ``x`` (directions ``u``) and target cells ``y``.

    Parameters
    ----------
    x, u
        Source cells and their unit directions, ``(p, d)``.
    y
        Target cells, ``(q, d)``.
    """

    def __init__(self, x: torch.Tensor, u: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.u, self.y = x, u, y
        self.gram = x.shape[1] >= GRAM_MIN_DIM
        if not self.gram:
            return
        xx, yy, ux = (x * x).sum(1), (y * y).sum(1), (u * x).sum(1)
        self.uu = (u * u).sum(1)
        # squared distances before moving, and u_i.(x_i - y_j), u_i.(x_i - x_k), u_i.u_k
        self.d_xy = xx[:, None] + yy[None, :] - 2 * (x @ y.T)
        self.d_xx = xx[:, None] + xx[None, :] - 2 * (x @ x.T)
        self.a_xy = ux[:, None] - u @ y.T
        self.a_xx = ux[:, None] - u @ x.T
        self.uut = u @ u.T

    def draw(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of one minibatch: ``size`` distinct source rows ``i`` and target rows ``j`` (with replacement)."""
        i = torch.randperm(len(self.x), generator=generator)[:size].to(self.x.device)
        j = torch.randint(len(self.y), (min(size, len(self.y)),), generator=generator).to(self.x.device)
        return i, j

    def loss(self, i: torch.Tensor, j: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """Energy distance (without the target's own term) of source rows ``i`` moved by ``eta``.

        Against target rows ``j``; ``i`` must not repeat a row.
        """
        n = len(i)
        if not self.gram:
            moved = self.x[i] - eta[:, None] * self.u[i]
            return 2 * torch.cdist(moved, self.y[j]).mean() - 2 * torch.pdist(moved).sum() / max(n * (n - 1), 1)

        def block(m: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            return m.index_select(0, i).index_select(1, cols)

        e, e2 = eta[:, None], eta.square() * self.uu[i]
        to_target = block(self.d_xy, j) - 2 * e * block(self.a_xy, j) + e2[:, None]
        along = e * block(self.a_xx, i)  # eta_i u_i.(x_i - x_k)
        within = (
            block(self.d_xx, i) - 2 * (along + along.T) + e2[:, None] + e2[None, :] - 2 * e * e.T * block(self.uut, i)
        )
        within = within.masked_fill(torch.eye(n, dtype=torch.bool, device=eta.device), 0.0)
        between = (to_target.clamp_min(0) + EPS).sqrt().mean()
        # the diagonal (a cell against itself) is EPS under the root: take its sqrt(EPS) back out
        inside = ((within.clamp_min(0) + EPS).sqrt().sum() - n * EPS**0.5) / max(n * (n - 1), 1)
        return 2 * between - inside


@dataclass(frozen=True)
class ValidationMatch:
    """Held-out cells on which one map's step size is scored.

    Attributes
    ----------
    step_size
        ``eta`` of this map: ``(n, d)`` cells in, ``(n,)`` out (a conditional step size bound
        to one condition, :class:`~cellw1.ot.conditional.ConditionBoundModule`).
    source, directions
        Validation source cells ``(n, d)`` and their unit directions ``u(x)``.
    target
        Validation target cells ``(m, d)``.
    weight
        Weight of this map in the score (a condition's share of the training steps).
    """

    step_size: nn.Module
    source: torch.Tensor
    directions: torch.Tensor
    target: torch.Tensor
    weight: float = 1.0


class StepSizeSelector(Training):
    """A :class:`~cellw1.ot.training.Training` of a step size, scored by the energy distance.

    The score of a state is ``sum_k w_k E(x_k - eta_k(x_k) u_k, y_k)`` over the
    :class:`ValidationMatch` of every map (one for a single map, one per condition for a
    conditional map): how well the transported validation cells match the validation targets.

    Parameters
    ----------
    module
        The step-size network whose best state is kept.
    matches
        The held-out cells of each map.
    config
        ``patience`` and ``min_delta`` of early stopping.
    """

    def __init__(self, module: nn.Module, matches: Sequence[ValidationMatch], config: W1Config) -> None:
        super().__init__(
            module,
            score="val_energy",
            mode="min",
            patience=config.patience,
            min_delta=config.min_delta,
            name="step size",
        )
        self.matches = list(matches)
        self.target_spreads = [float(mean_distance(match.target)) for match in self.matches]

    def __call__(self, step: int, loss: torch.Tensor) -> float:
        """Score the current state at ``step``, record it with the training ``loss``; return the score."""
        score = 0.0
        for match, spread in zip(self.matches, self.target_spreads, strict=True):
            moved = match.source - evaluate(match.step_size, match.source)[:, None] * match.directions
            score += match.weight * energy_distance(moved, match.target, spread)
        self.evaluate(step, score, loss=float(loss))
        return score


class EnergyBatches(Protocol):
    """The minibatches of the energy refinement: pools of cells, and one minibatch's loss."""

    def new_pools(self) -> None:
        """Draw the next pools (:class:`EnergyPool`), from the next buffers when streaming."""

    def loss(self) -> torch.Tensor:
        """Compute the energy loss of one minibatch drawn from the pools, through the step size."""


def refine_energy(
    step_size: nn.Module,
    batches: EnergyBatches,
    selector: StepSizeSelector,
    config: W1Config,
    *,
    offset: int,
    progress: bool = False,
    desc: str = "step size (energy)",
) -> int:
    """Descend the minibatch energy distance between ``T(x)`` and target cells; returns the steps taken.

    Only ``eta`` moves (the directions are fixed), so the map stays a W1 map; matching the
    transported distribution as a whole corrects the regression's shrinkage of the steps.
    New pools are drawn every ``POOL_STEPS`` steps; the selector scores the state every
    ``config.eval_every`` steps (counted from ``offset``) and says when to stop.
    """
    device = next(step_size.parameters()).device
    optimizer = torch.optim.Adam(
        step_size.parameters(), lr=config.energy_lr, betas=config.step_betas, **adam_kernel(device)
    )
    step = 0
    for step in tqdm(range(1, config.energy_iters + 1), desc=desc, disable=not progress, leave=False):
        if (step - 1) % POOL_STEPS == 0:
            batches.new_pools()
        optimizer.zero_grad(set_to_none=True)
        loss = batches.loss()
        loss.backward()
        optimizer.step()
        if step % config.eval_every == 0 or step == config.energy_iters:
            selector(offset + step, loss.detach())
            if selector.stop:
                break
    return step
