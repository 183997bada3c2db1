"""The W2 baseline: Brenier maps from input convex neural networks (OT-ICNN / CellOT).

Makkuva et al. (2020) write the squared W2 distance as a min-max over two convex functions
(paper eq. 7)::

    W2^2(mu, nu) = sup_{f convex} inf_{g convex}
                   - E_nu f(y) - E_mu [ <x, grad g(x)> - f(grad g(x)) ] + C(mu, nu)

with ``C`` a constant of the data. For a fixed ``f`` the inner infimum is reached when
``grad g(x)`` maximises ``<x, y> - f(y)`` over ``y``, i.e. when ``g`` is the convex conjugate
``f*``; the outer supremum then makes ``f`` the Brenier potential of the map from the target
to the source, and ``T(x) = grad g(x)`` is the Brenier map from the source ``mu`` to the target
``nu`` (paper eq. 8). Signs, as descended here:

* ``g`` minimises ``E_mu [ f(grad g(x)) - <x, grad g(x)> ]``       (:func:`g_step`)
* ``f`` minimises ``E_nu f(y) - E_mu f(grad g(x))`` (``g`` fixed)   (:func:`f_step`)

so ``f`` is pushed down on target cells and up where ``g`` sends source cells, and ``g``
moves its images towards low ``f``. Each outer step takes ``n_inner`` steps of ``g`` (paper:
10) and one of ``f``.

Convexity. An :class:`ICNN` is convex in its input when the weights acting on the hidden
"z-path" are non-negative. As in OT-ICNN and CellOT, ``f`` is projected (negative z-weights
clamped to 0) after every step, so it is convex at all times; ``g`` is only pushed towards
convexity by the soft penalty ``penalty * sum relu(-W)^2`` added to its loss (CellOT's
``fnorm_penalty``, weight 1), so the inner problem stays a plain unconstrained descent. The
fitted ``g`` may thus be slightly non-convex: ``info["g_min_weight"]`` reports its most
negative z-weight (about -0.01 to -0.08 in our runs); ``g.clamp_()`` projects it.

Three deviations from OT-ICNN / CellOT make short runs safe on single-cell data: a quadratic
skip term (``W2Config.quadratic``), isotropic standardisation (``W2Config.standardize``) and
the initial state as a validation candidate; docs/method.md gives the reasons and the
measurements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .config import W2Config

#: below this scale the data are treated as constant and not rescaled
MIN_SCALE = 1e-8


class ICNN(nn.Module):
    """Input convex neural network ``R^d -> R`` (Amos et al. 2017), convex in ``x``.

    ::

        z_1     = leaky_relu(A_0 x + b_0) ** 2
        z_{k+1} = leaky_relu(W_k z_k + A_k x + b_k)       k = 1 .. L-1
        out     = W_L z_L + A_L x + b_L  [+ 0.5 * a * |x|^2]

    ``z_1`` is convex (a convex function of an affine map); each next layer is a non-negative
    combination of convex functions plus an affine term, passed through a convex
    non-decreasing activation, so it stays convex **as long as every z-path weight ``W_k`` is
    non-negative** (and ``a``, the weight of the convex feature ``|x|^2 / 2``). :meth:`clamp_`
    projects onto that set; :meth:`negative_weight_penalty` measures the distance to it. The
    skip weights ``A_k`` are unconstrained and computed for all layers in one matrix product.

    Parameters
    ----------
    dim
        Input dimension ``d``.
    hidden
        Widths of the hidden layers; paper: ``(64, 64, 64, 64)``.
    negative_slope
        LeakyReLU slope for negative inputs; paper: 0.2.
    quadratic
        Add the skip term ``0.5 * a * |x|^2`` with a learnable ``a`` (initially 1) and start the
        affine output term ``A_L x + b_L`` at zero, so ``grad f(x) ~ x`` at initialisation (see
        docs/method.md). ``False`` (default): the plain ICNN of the paper, whose Hessian
        has rank at most ``hidden[0]``.
    """

    quadratic_weight: nn.Parameter | None

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64, 64),
        negative_slope: float = 0.2,
        quadratic: bool = False,
    ) -> None:
        super().__init__()
        self.dim = int(dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.negative_slope = float(negative_slope)
        self.skip = nn.Linear(self.dim, sum(self.hidden) + 1)
        widths = (*self.hidden, 1)
        self.z_weights = nn.ParameterList(
            nn.Parameter(torch.empty(widths[k + 1], widths[k])) for k in range(len(self.hidden))
        )
        if quadratic:
            self.quadratic_weight = nn.Parameter(torch.empty(1))
        else:
            self.register_parameter("quadratic_weight", None)
        self.reset_parameters()

    @property
    def quadratic(self) -> bool:
        """Whether the network has the skip term ``0.5 * a * |x|^2``."""
        return self.quadratic_weight is not None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw the initial weights.

        Skip layer: PyTorch's default; z-path: ``U(0, 2 / fan_in)`` so each unit starts as a
        positive average of the previous layer (mean weight ``1 / fan_in``). With the quadratic
        term: ``a = 1`` and the affine output term ``A_L x + b_L`` starts at zero.
        """
        self.skip.reset_parameters()
        for w in self.z_weights:
            w.uniform_(0.0, 2.0 / w.shape[1])
        if self.quadratic_weight is not None:
            self.quadratic_weight.fill_(1.0)
            self.skip.weight[-1].zero_()
            self.skip.bias[-1].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` for ``x: (n, d)``; returns ``(n,)``."""
        parts = self.skip(x).split((*self.hidden, 1), dim=1)
        z = nn.functional.leaky_relu(parts[0], self.negative_slope).square()
        for w, ax in zip(self.z_weights[:-1], parts[1:-1], strict=False):
            z = nn.functional.leaky_relu(torch.addmm(ax, z, w.t()), self.negative_slope)
        out = torch.addmm(parts[-1], z, self.z_weights[-1].t()).squeeze(-1)
        if self.quadratic_weight is not None:
            out = out + 0.5 * self.quadratic_weight * x.square().sum(1)
        return out

    def constrained_weights(self) -> list[torch.Tensor]:
        """The weights that must be non-negative: the z-path and, if present, ``a``."""
        weights = list(self.z_weights)
        if self.quadratic_weight is not None:
            weights.append(self.quadratic_weight)
        return weights

    @torch.no_grad()
    def clamp_(self) -> ICNN:
        """Set negative constrained weights to 0 (the projection that makes the network convex)."""
        for w in self.constrained_weights():
            w.clamp_(min=0.0)
        return self

    def negative_weight_penalty(self) -> torch.Tensor:
        """``sum relu(-W)^2`` over the constrained weights: 0 exactly when the network is convex."""
        return sum(nn.functional.relu(-w).square().sum() for w in self.constrained_weights())  # type: ignore[return-value]

    def min_weight(self) -> float:
        """Most negative constrained weight (``>= 0`` means convex by construction)."""
        return min(float(w.detach().min()) for w in self.constrained_weights())


def build_icnn(dim: int, config: W2Config) -> ICNN:
    """The ICNN that ``config`` describes, for inputs of dimension ``dim``."""
    return ICNN(dim, config.hidden, config.negative_slope, config.quadratic)


def standardization(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Shift ``m`` and scale ``s`` of the isotropic standardisation ``z = (x - m) / s``.

    ``m`` is the midpoint of the two means (each group weighs the same whatever its size) and
    ``s^2`` the average over features and groups of the within-group variance, so standardised
    cells have unit variance per feature on average. One scale for all features keeps the
    Brenier map: ``T(x) = m + s * T_z((x - m) / s)``. Constant data get ``s = 1``.

    Returns
    -------
    shift: (d,), scale: float
    """
    shift = 0.5 * (source.mean(0) + target.mean(0))
    variance = 0.5 * (source.var(0, correction=0).mean() + target.var(0, correction=0).mean())
    scale = float(variance.sqrt())
    return shift, (scale if math.isfinite(scale) and scale > MIN_SCALE else 1.0)


def g_step(
    f: ICNN,
    g: ICNN,
    g_optimizer: torch.optim.Optimizer,
    source_batch: torch.Tensor,
    penalty: float = 1.0,
) -> torch.Tensor:
    """One descent step of ``g`` on ``E_mu [f(grad g(x)) - <x, grad g(x)>] + penalty * P(g)``.

    ``grad g`` is built with ``create_graph=True`` so the loss can be differentiated through
    it (a second-order step). Only ``g``'s parameters receive gradients; ``f`` is untouched.
    Returns the loss without the penalty (detached).
    """
    x = source_batch.detach().requires_grad_(True)
    (moved,) = torch.autograd.grad(g(x).sum(), x, create_graph=True)
    loss = (f(moved) - (source_batch * moved).sum(1)).mean()
    params = list(g.parameters())
    g_optimizer.zero_grad(set_to_none=True)
    total = loss + penalty * g.negative_weight_penalty() if penalty > 0 else loss
    total.backward(inputs=params)
    g_optimizer.step()
    return loss.detach()


def f_step(
    f: ICNN,
    g: ICNN,
    f_optimizer: torch.optim.Optimizer,
    source_batch: torch.Tensor,
    target_batch: torch.Tensor,
) -> torch.Tensor:
    """One descent step of ``f`` on ``E_nu f(y) - E_mu f(grad g(x))``, then the clamp.

    ``grad g(x)`` is computed without a graph to ``g``'s weights; targets and transported cells
    go through ``f`` in one forward pass. Returns the loss (detached).
    """
    x = source_batch.detach().requires_grad_(True)
    (moved,) = torch.autograd.grad(g(x).sum(), x)
    values = f(torch.cat((target_batch, moved)))
    loss = values[: len(target_batch)].mean() - values[len(target_batch) :].mean()
    f_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    f_optimizer.step()
    f.clamp_()
    return loss.detach()
