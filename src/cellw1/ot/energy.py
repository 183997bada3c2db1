"""The energy distance as a loss of the step size alone, at a cost independent of the dimension.

The refinement of :mod:`cellw1.ot.stepsize` descends the minibatch energy distance
``2 E|T(x) - y| - E|T(x) - T(x')|`` in the step sizes ``eta``, with ``T(x) = x - eta(x) u(x)``
and ``u`` fixed. Every squared distance involved is a quadratic in the ``eta`` of its cells:

    |T(x_i) - y_j|^2    = |x_i - y_j|^2 - 2 eta_i u_i.(x_i - y_j) + eta_i^2 |u_i|^2
    |T(x_i) - T(x_k)|^2 = |x_i - x_k|^2 - 2 eta_i u_i.(x_i - x_k) - 2 eta_k u_k.(x_k - x_i)
                          + eta_i^2 |u_i|^2 + eta_k^2 |u_k|^2 - 2 eta_i eta_k u_i.u_k

so a :class:`EnergyPool` computes the inner products of a pool of cells once (five matrix
products), and each step then gathers a minibatch's blocks: ``O(b^2)`` per step, where
``torch.cdist`` on the moved cells costs ``O(b^2 d)`` forward and again backward. In few
dimensions the distances of the moved cells are cheaper than the bookkeeping, and the pool
computes them directly; both give the same loss and gradient.
"""

from __future__ import annotations

import torch

#: cells per side of a pool; a step draws its minibatch from the pool
POOL_CELLS = 1_024
#: steps drawn from one pool before the next is taken
POOL_STEPS = 250
#: added under each square root, so equal cells have a finite gradient
EPS = 1e-12
#: from this dimension on, the pool works from inner products rather than distances
GRAM_MIN_DIM = 256


def energy_distance(x: torch.Tensor, y: torch.Tensor, yy: float | None = None) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between two samples ``(n, d)``, ``(m, d)``.

    Means over all pairs, diagonal included (the V-statistic of
    :func:`cellw1.eval.metrics.energy_distance`, which computes it in float64 from arrays
    for scoring). ``yy``: ``E|Y - Y'|`` when already known (a fixed validation target).
    """
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = float(torch.cdist(y, y).mean()) if yy is None else yy
    return float(2 * xy - xx) - yy


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

    def loss(self, i: torch.Tensor, j: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """Energy distance (without the target's own term) of source rows ``i`` moved by ``eta``
        against target rows ``j``; ``i`` must not repeat a row."""
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
