"""The networks of one W1 map for many conditions: ``T(x, c) = x - eta(x, c) grad_x f(x, c) / |grad_x f(x, c)|``.

Why the condition must enter together with the cell: a potential ``f(x) + g(c)`` is no
conditional model. ``g(c)`` cancels in the dual, ``E_mu[f + g(c)] - E_nu_c[f + g(c)] =
E_mu f - E_nu_c f``, and leaves ``grad_x`` unchanged, so every condition would get the same
direction. Here ``f(x, c)`` reads the cell ``x`` and the condition code ``e(c)``
(:mod:`cellw1.ot.conditional.encoder`) together, in one of two ways, both 1-Lipschitz in ``x`` for every
``c`` (``tests/ot/test_conditional.py`` certifies it on random cells and conditions):

``"concat"``
    the Lipschitz GroupSort network of :mod:`cellw1.ot.lipschitz` on ``[x, e(c)]``: 1-Lipschitz
    jointly, hence in ``x`` alone, whatever ``e(c)`` is.
``"bias"``
    the same network on ``x``, with a condition-dependent bias ``A_l e(c)`` added before every
    GroupSort: adding a constant (in ``x``) to a layer does not change its Lipschitz constant
    in ``x``, and the condition can move every layer's sorting pattern, not only the first.

The step size ``eta(x, c) >= 0`` is :class:`~cellw1.ot.stepsize.StepSize` on ``[x, e(c)]``,
with ``e(c)`` the frozen potential's code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..config import ConditionalConfig
from ..lipschitz import GroupSort, LipschitzPotential, OrthonormalLinear
from ..potential import build_potential
from ..stepsize import StepSize


class ConditionalPotential(nn.Module):
    """``f(x, c)``, 1-Lipschitz in ``x: (n, d)`` for every code ``e: (n, k)``; returns ``(n,)``.

    Parameters
    ----------
    dim, condition_dim
        ``d`` and ``k``.
    config
        Widths, group size, orthonormalisation and ``parametrisation``.
    """

    input_mask: torch.Tensor

    def __init__(self, dim: int, condition_dim: int, config: ConditionalConfig) -> None:
        super().__init__()
        self.dim, self.condition_dim = int(dim), int(condition_dim)
        self.parametrisation = config.parametrisation
        if self.parametrisation == "concat":
            self.net: LipschitzPotential = build_potential(self.dim + self.condition_dim, config)
        else:
            widths = (self.dim, *config.hidden, 1)
            self.layers = nn.ModuleList(
                OrthonormalLinear(
                    a,
                    b,
                    orthonormalization=config.orthonormalization,
                    bjorck_order=config.bjorck_order,
                    bjorck_iters=config.bjorck_iters,
                )
                for a, b in zip(widths[:-1], widths[1:], strict=False)
            )
            self.shifts = nn.ModuleList(nn.Linear(self.condition_dim, h, bias=False) for h in config.hidden)
            self.activation = GroupSort(config.group_size)
        # features constant in training are left out (a 0/1 mask keeps f 1-Lipschitz in x)
        self.register_buffer("input_mask", torch.ones(self.dim))

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``f(x, c)`` for cells ``x: (n, d)`` and their condition codes ``code: (n, k)``; ``(n,)``."""
        x = x * self.input_mask
        if self.parametrisation == "concat":
            return self.net(torch.cat((x, code), 1))
        for layer, shift in zip(self.layers[:-1], self.shifts, strict=False):
            x = self.activation(layer(x) + shift(code))
        return self.layers[-1](x).squeeze(-1)


class ConditionalStepSize(nn.Module):
    """``eta(x, c) >= 0``: :class:`~cellw1.ot.stepsize.StepSize` on ``[x, e(c)]``."""

    def __init__(self, dim: int, condition_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = StepSize(int(dim) + int(condition_dim), hidden)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``eta(x, c)`` for cells ``x: (n, d)`` and their condition codes ``code: (n, k)``; ``(n,)``."""
        return self.net(torch.cat((x, code), 1))


class ConditionBoundModule(nn.Module):
    """A conditional network with its condition fixed: the module ``x -> net(x, e)``.

    So the functions of :mod:`cellw1.ot.potential` (``evaluate``, ``direction``,
    ``potential_step``) apply unchanged.

    Parameters
    ----------
    net
        A conditional network, ``net(x: (n, d), code: (n, k))``.
    code
        One condition's code ``e: (k,)`` for every cell, or ``(n, k)``: one per cell (the
        conditions of a minibatch's cells).
    """

    def __init__(self, net: nn.Module, code: torch.Tensor) -> None:
        super().__init__()
        self.net, self.code = net, code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``net(x, e)`` for ``x: (n, d)``."""
        return self.net(x, self.code.expand(len(x), -1) if self.code.dim() == 1 else self.code)
