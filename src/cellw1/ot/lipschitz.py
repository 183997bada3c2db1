"""1-Lipschitz building blocks: GroupSort, orthonormal linear layers, the potential network.

A network ``x -> W_L s(... s(W_1 x + b_1) ...) + b_L`` is 1-Lipschitz when every ``W_l``
has spectral norm <= 1 and the activation ``s`` is 1-Lipschitz (paper eqs. 9-12). With
*orthonormal* weights and the *GroupSort* activation (whose Jacobian is a permutation) the
gradient norm is also preserved, so the network can reach ``|grad f| = 1``, which the optimal
Kantorovich potential of W1 has almost everywhere (Anil et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError

Orthonormalization = Literal["cayley", "bjorck"]
ORTHONORMALIZATIONS: tuple[str, ...] = ("cayley", "bjorck")


class GroupSort(nn.Module):
    """Sort the features within consecutive groups of ``group_size`` units.

    Parameters
    ----------
    group_size
        Number of units per group (the paper uses 4 on width 64). ``group_size=2`` is
        MaxMin; ``group_size == width`` is a full sort. ``group_size=1`` would be the identity
        (a linear network) and is refused.
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        if not isinstance(group_size, int) or group_size < 2:
            raise ConfigError(
                f"group_size={group_size!r}: GroupSort needs at least 2 units per group "
                "(group_size=1 is the identity and makes the potential linear); use e.g. 4."
            )
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sort ``x: (n, width)`` ascending within each group; returns ``(n, width)``."""
        width = x.shape[-1]
        if width % self.group_size:
            raise ConfigError(
                f"width {width} is not divisible by group_size {self.group_size}; "
                "choose a group size that divides every hidden width."
            )
        grouped = x.reshape(*x.shape[:-1], width // self.group_size, self.group_size)
        if self.group_size == 2:
            low, high = grouped.unbind(-1)
            return torch.stack((torch.minimum(low, high), torch.maximum(low, high)), -1).flatten(-2)
        return grouped.sort(dim=-1).values.flatten(-2)

    def extra_repr(self) -> str:
        """The group size, shown in the module's repr."""
        return f"group_size={self.group_size}"


def _taylor_coefficients(order: int) -> list[float]:
    """Coefficients of the Taylor series of ``(1 - q)^(-1/2)``: 1, 1/2, 3/8, 5/16, ..."""
    return [math.comb(2 * j, j) / 4**j for j in range(order + 1)]


class OrthonormalLinear(nn.Module):
    """Affine layer ``x -> x W^T + b`` whose weight ``W: (d_out, d_in)`` is orthonormal.

    ``W`` has orthonormal rows when ``d_out <= d_in`` and orthonormal columns otherwise, so
    ``|W|_2 = 1`` for any shape.

    Two parametrisations:

    ``"cayley"``
        Cayley transform on the Stiefel manifold. With ``k = min(d_in, d_out)``,
        ``n = max(d_in, d_out)``, a skew-symmetric ``B: (k, k)`` and a free ``C: (n-k, k)``,
        the skew matrix ``A = [[B, -C^T], [C, 0]]`` (``B = S - S^T`` for a free ``S``) gives ``Q = (I - A)(I + A)^{-1}[I_k; 0]``.
        By a Schur complement this needs one ``k x k`` inverse, ``Z = (I + B + C^T C)^{-1}``:
        ``Q = [2Z - I; -2 C Z]``. Exactly orthonormal up to float rounding.
    ``"bjorck"``
        Björck-Bowie iterations of the given Taylor ``order`` on a rescaled free matrix
        (rescaled by ``sqrt(|W|_1 |W|_inf) >= |W|_2``, so every iterate has norm <= 1).

    The orthonormal weight is cached: computed once per optimisation step in training (one
    forward pass, one backward) and once in all at inference. The cache is dropped when a
    backward pass accumulates a gradient into a weight parameter (before any optimiser can
    update it, fused or not) and whenever a parameter's version counter or storage changes
    (``load_state_dict``, in-place edits, ``.to(device)``), so it is never stale.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        orthonormalization: Orthonormalization = "cayley",
        bjorck_order: int = 1,
        bjorck_iters: int = 20,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if orthonormalization not in ORTHONORMALIZATIONS:
            raise ConfigError(f"unknown orthonormalization {orthonormalization!r}; use one of {ORTHONORMALIZATIONS}.")
        if bjorck_order < 1 or bjorck_iters < 1:
            raise ConfigError("bjorck_order and bjorck_iters must both be >= 1.")
        self.d_in, self.d_out = int(d_in), int(d_out)
        self.orthonormalization = orthonormalization
        self.bjorck_order, self.bjorck_iters = int(bjorck_order), int(bjorck_iters)
        k, n = min(d_in, d_out), max(d_in, d_out)
        if orthonormalization == "cayley":
            # a 1 x 1 skew-symmetric matrix is 0: no parameter for it
            self.skew = nn.Parameter(torch.randn(k, k) / math.sqrt(2 * k)) if k > 1 else None
            self.tail = nn.Parameter(torch.randn(n - k, k) / math.sqrt(n))
        else:
            self.free = nn.Parameter(nn.init.orthogonal_(torch.empty(d_out, d_in)))
        bound = 1.0 / math.sqrt(d_in)
        self.bias = nn.Parameter(torch.empty(d_out).uniform_(-bound, bound)) if bias else None
        self._cache: tuple[tuple, torch.Tensor] | None = None
        self.n_orthonormalizations = 0  # how many times the weight was computed (for tests)
        # A backward pass that reaches the weight parameters means an update is coming (fused
        # optimisers update in place without bumping version counters): drop the cache then.
        for p in self._weight_params():
            p.register_post_accumulate_grad_hook(self._invalidate)

    # -- the orthonormal weight -------------------------------------------------------------
    def _weight_params(self) -> list[torch.Tensor]:
        if self.orthonormalization == "bjorck":
            return [self.free]
        return [self.tail] if self.skew is None else [self.skew, self.tail]

    def _state_key(self) -> tuple:
        return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self._weight_params())

    def _invalidate(self, *_: object) -> None:
        """Drop the cached weight (called after a gradient reaches a weight parameter)."""
        self._cache = None

    def weight(self) -> torch.Tensor:
        """The orthonormal weight ``W: (d_out, d_in)``, computed once per parameter state."""
        key = self._state_key()
        tracking = torch.is_grad_enabled() and any(p.requires_grad for p in self._weight_params())
        if self._cache is not None and self._cache[0] == key:
            cached = self._cache[1]
            if cached.requires_grad or not tracking:
                return cached
        w = self._cayley() if self.orthonormalization == "cayley" else self._bjorck()
        self.n_orthonormalizations += 1
        self._cache = (key, w)
        return w

    def _cayley(self) -> torch.Tensor:
        tail = self.tail
        if self.skew is None:  # k = 1, a unit vector: Z = 1 / (1 + |C|^2), no inverse needed
            z = 1.0 / (1.0 + tail.square().sum())
            q = torch.cat(((2.0 * z - 1.0).reshape(1, 1), -2.0 * z * tail), 0)
        else:
            skew = self.skew - self.skew.T  # B, the skew-symmetric part (times 2) of a free matrix
            eye = torch.eye(skew.shape[0], dtype=skew.dtype, device=skew.device)
            if tail.shape[0] == 0:  # square: plain Cayley transform
                z, _ = torch.linalg.inv_ex(eye + skew)  # I + B is always invertible
                return 2.0 * z - eye
            z, _ = torch.linalg.inv_ex(eye + skew + tail.T @ tail)  # always invertible
            q = torch.cat((2.0 * z - eye, -2.0 * tail @ z), 0)  # (n, k), orthonormal columns
        return q if self.d_out >= self.d_in else q.T

    def _bjorck(self) -> torch.Tensor:
        w: torch.Tensor = self.free
        scale = torch.sqrt(w.abs().sum(0).max() * w.abs().sum(1).max()).clamp_min(1e-12)
        w = w / scale
        coeffs = _taylor_coefficients(self.bjorck_order)
        wide = self.d_out <= self.d_in
        k = min(self.d_in, self.d_out)
        eye = torch.eye(k, dtype=w.dtype, device=w.device)
        for _ in range(self.bjorck_iters):
            q = eye - (w @ w.T if wide else w.T @ w)
            poly = coeffs[-1] * eye
            for c in reversed(coeffs[:-1]):
                poly = c * eye + q @ poly
            w = poly @ w if wide else w @ poly
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x: (n, d_in)``; returns ``(n, d_out)``."""
        w = self.weight()
        if self.bias is None:
            return x @ w.T
        return torch.addmm(self.bias, x, w.T)

    def extra_repr(self) -> str:
        """The layer's widths and orthonormalisation, shown in the module's repr."""
        return f"d_in={self.d_in}, d_out={self.d_out}, orthonormalization={self.orthonormalization!r}"


class LipschitzPotential(nn.Module):
    """A 1-Lipschitz scalar network ``f: R^d -> R`` (the Kantorovich potential of W1).

    Orthonormal affine layers alternate with GroupSort: ``d -> hidden[0] -> ... -> 1``.

    Parameters
    ----------
    dim
        Input dimension ``d``.
    hidden
        Hidden widths; the paper uses ``(64, 64, 64, 64)``.
    group_size
        Units per GroupSort group; must divide every hidden width (paper: 4).
    orthonormalization
        ``"cayley"`` (default, as in the paper) or ``"bjorck"``.
    bjorck_order, bjorck_iters
        Taylor order and number of Björck iterations (ignored for Cayley).
    """

    input_mask: torch.Tensor  # a buffer (see __init__)

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64, 64),
        *,
        group_size: int = 4,
        orthonormalization: Orthonormalization = "cayley",
        bjorck_order: int = 1,
        bjorck_iters: int = 20,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ConfigError(f"hidden={hidden!r}: give at least one positive hidden width.")
        self.activation = GroupSort(group_size)
        for width in hidden:
            if width % group_size:
                raise ConfigError(
                    f"group_size {group_size} does not divide hidden width {width}; "
                    f"pick widths that are multiples of {group_size} or another group size."
                )
        widths = (int(dim), *hidden, 1)
        self.layers = nn.ModuleList(
            OrthonormalLinear(
                a,
                b,
                orthonormalization=orthonormalization,
                bjorck_order=bjorck_order,
                bjorck_iters=bjorck_iters,
            )
            for a, b in zip(widths[:-1], widths[1:], strict=False)
        )
        self.dim = int(dim)
        # 0 for features the potential ignores (constant in training): its gradient there is 0,
        # so cells never move along them; a 0/1 mask keeps f 1-Lipschitz
        self.register_buffer("input_mask", torch.ones(self.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate ``f`` on ``x: (n, d)``; returns ``(n,)``."""
        x = x * self.input_mask
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x).squeeze(-1)
