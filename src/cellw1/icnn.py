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

Deviations from OT-ICNN / CellOT, and why
-----------------------------------------
The solver, the losses, the network and the hyper-parameters (hidden ``(64,) * 4``, Adam
``1e-4`` with betas ``(0.5, 0.9)``, 10 inner steps, batch 256) are the paper's. Three
changes make short runs safe on single-cell data; ``W2Config(standardize=False,
quadratic=False)`` turns the first two off (the plain OT-ICNN; the third is a safety net
that cannot make a map worse).

1. **A quadratic skip term** (``W2Config.quadratic``). Both networks compute
   ``ICNN(x) + 0.5 * a * |x|^2`` with a learnable weight ``a >= 0`` (initialised to 1, treated
   like a z-path weight: clamped for ``f``, penalised for ``g``), and the affine output term
   of the ICNN starts at zero. Why: (i) *rank*. The only curvature of an ICNN comes from the
   squared first layer, so its Hessian has rank <= ``hidden[0]`` = 64 and ``grad g`` cannot
   represent a map of full rank in gene space (d = 200..1000): at initialisation its Jacobian
   on the synthetic data has rank 64 with singular values ~0.01, i.e. every cell is sent to
   nearly the same point. (ii) *Stability*. A freshly initialised ``f`` is almost flat
   (curvature ~0.01), so the best response of ``g``, the gradient of ``f*``, has curvature
   ~100: the inner problem is nearly unbounded and the map explodes (on the built-in
   synthetic data, 200 genes, the validation energy distance was 42 at initialisation and
   12,000 after 90 outer steps, against ~1 for the identity map). With the skip term ``f`` is
   ``a``-strongly convex, ``f ~ g ~ |x|^2 / 2`` and ``grad g(x) ~ x`` at the start (the
   initial displacement is ~0.1 against cell norms ~14 in standardised units), so training
   starts from the identity map, as W2 solvers that pretrain or initialise their potentials
   to the identity do (Korotin et al. 2021; OTT-JAX's ICNN starts from a Gaussian map). The
   model class only grows: ``a = 0`` is the paper's network. ``a`` is learned, not fixed at
   1, because ``Hess g >= I`` would forbid contracting maps (and ``Hess f >= I`` expanding ones).
   *Learning rate of* ``a``: 10 x ``lr`` (``W2Config.quadratic_lr_scale``). Adam moves a
   weight by about ``lr`` per step; the z-path weights are of order ``1 / 64`` but ``a`` is of
   order 1, and ``f`` takes one step per outer iteration. At the paper's lr, ``a_f`` moved at
   that speed limit throughout (1 -> 0.80 in 2,000 outer steps, 50-dim PCA of the synthetic
   data; it settles near 0.3 when allowed) and the fit lagged the plain ICNN (validation
   energy 0.46 vs 0.28 after 2,000 steps); at 10 x lr: 0.31 (100 x lr: 0.31).
2. **Isotropic standardisation** (``W2Config.standardize``). The networks see
   ``z = (x - m) / s`` with ``m`` the midpoint of the two groups' training means and ``s^2``
   their average per-feature variance; the map is ``T(x) = m + s * grad g(z)``. One scale for
   all features (not one per gene) keeps the problem exactly the same: translating both
   groups by ``m`` and scaling them by ``1 / s`` scales the cost ``|x - y|^2`` by ``1 / s^2``,
   so the Brenier map in original units is recovered exactly. It makes the initialisation
   and the learning rate 1e-4 mean the same thing whatever the units of the data (PCA
   coordinates, log counts, z-scores). ``m`` and ``s`` are stored with the weights.
3. **The initial state is a validation candidate**. The energy distance between transported
   and target validation cells is measured at step 0 too, so the returned state is never
   worse on validation than the (near-identity) starting map.

No gradient clipping is used: with 1. and 2. no run we made diverged (gene space d = 200 and
1,000, 50-dim PCA, up to 2,000 outer steps), so clipping would be a change without evidence.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from ._data import as_points, check_pair, check_seed, like_input, resolve_device, split_validation
from ._io import check_format, load_tensors, save_tensors
from .config import check_fields
from .errors import ConfigError, InputError, ModelFileError
from .potential import CHUNK, evaluate, gradient
from .sampling import minibatch_indices
from .stepsize import energy_distance

logger = logging.getLogger(__name__)

FORMAT = "cellw1.W2Map"
#: 2: quadratic skip term and standardisation (version-1 files load as the plain network)
FORMAT_VERSION = 2
#: validation cells per side used to select the best state (energy distance is O(n^2))
VAL_LIMIT = 1000
#: below this scale the data are treated as constant and not rescaled
MIN_SCALE = 1e-8


@dataclass(frozen=True)
class W2Config:
    """Hyper-parameters of the OT-ICNN solver (Makkuva et al. 2020, as used by CellOT and by the
    W1 paper's baseline, Methods "Hyperparameters and training details").

    Attributes
    ----------
    hidden
        Hidden widths of both ICNNs; paper: ``(64, 64, 64, 64)``.
    negative_slope
        Slope of the LeakyReLU activations for negative inputs; paper/CellOT: 0.2.
    n_iters
        Outer steps (one ``f`` update each); paper: 100,000, which takes hours on a CPU. Use
        :meth:`benchmark` (or ``replace(n_iters=...)``) for shorter runs.
    n_inner
        ``g`` updates per outer step; paper: 10.
    lr, betas
        Adam learning rate and betas of both networks; paper: 1e-4, ``(0.5, 0.9)``.
    batch_size
        Cells per side in each minibatch; paper/CellOT: 256.
    penalty
        Weight of the soft penalty ``sum relu(-W)^2`` on the negative z-path weights of ``g``
        (CellOT's ``fnorm_penalty``: 1). ``f`` is clamped instead.
    val_fraction
        Share of each side held out to select the best state.
    eval_every
        Outer steps between two validation evaluations (energy distance between transported
        validation source cells and validation target cells). The initial state is
        evaluated too.
    device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``... or ``"auto"``.
    standardize
        Fit in isotropically standardised coordinates (deviation 2 of the module docstring;
        the Brenier map is unchanged by it). ``False``: the paper's raw coordinates.
    quadratic
        Add the skip term ``0.5 * a * |x|^2`` (``a >= 0``, initially 1) to both networks so
        training starts from the identity map (deviation 1). ``False``: the paper's ICNN.
    quadratic_lr_scale
        Learning rate of ``a`` relative to ``lr`` (deviation 1: 10, so ``a`` learns at 1e-3).
    """

    hidden: tuple[int, ...] = (64, 64, 64, 64)
    negative_slope: float = 0.2
    n_iters: int = 100_000
    n_inner: int = 10
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    batch_size: int = 256
    penalty: float = 1.0
    val_fraction: float = 0.1
    eval_every: int = 1_000
    device: str = "cpu"
    standardize: bool = True
    quadratic: bool = True
    quadratic_lr_scale: float = 10.0

    def __post_init__(self) -> None:
        check_fields(self)  # before the conversions below, which would hide a 64.5 or a bool
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~cellw1.errors.ConfigError` naming the first invalid field."""
        check_fields(self)
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden={self.hidden!r} must be a non-empty list of positive widths, e.g. (64, 64, 64, 64).")
        for name in ("n_iters", "n_inner", "batch_size", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1.")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r} must be positive; the paper uses 1e-4.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas={self.betas!r} must be two numbers in [0, 1); the paper uses (0.5, 0.9).")
        if not 0.0 <= self.negative_slope < 1.0:
            raise ConfigError(f"negative_slope={self.negative_slope!r} must lie in [0, 1) for a convex, non-decreasing activation.")
        if self.penalty < 0:
            raise ConfigError(f"penalty={self.penalty!r} must be >= 0.")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction={self.val_fraction!r} must lie in [0, 0.5).")
        if not self.quadratic_lr_scale > 0:
            raise ConfigError(f"quadratic_lr_scale={self.quadratic_lr_scale!r} must be positive (default 10).")
        for name in ("standardize", "quadratic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be True or False.")

    @classmethod
    def benchmark(cls, **changes: Any) -> W2Config:
        """A shorter schedule for benchmarks: 5,000 outer steps (paper: 100,000), rest as the paper.

        At ``d = 50`` and batch 256 an outer step (10 inner steps) costs about 40 ms on one CPU
        thread (an inner ``g`` step ~3.3 ms, the ``f`` step ~2.7 ms), so this preset takes a few
        minutes where the paper's schedule, ``W2Config()``, takes over an hour.
        """
        base: dict[str, Any] = dict(n_iters=5_000, eval_every=250)
        base.update(changes)
        return cls(**base)

    def replace(self, **changes: Any) -> W2Config:
        """A copy with some fields changed (the config itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> W2Config:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer file format)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown W2Config fields {sorted(unknown)}; the file may come from a newer cellw1.")
        return cls(**data)


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
        the module docstring). ``False`` (default): the plain ICNN of the paper, whose Hessian
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
        """Skip layer: PyTorch's default; z-path: ``U(0, 2 / fan_in)`` so each unit starts as a
        positive average of the previous layer (mean weight ``1 / fan_in``). With the quadratic
        term: ``a = 1`` and the affine output term ``A_L x + b_L`` starts at zero."""
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
        for w, ax in zip(self.z_weights[:-1], parts[1:-1]):
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


class W2Map:
    """A fitted W2 (Brenier) transport map ``T(x) = m + s * grad g((x - m) / s)``.

    ``g`` is an :class:`ICNN` on standardised coordinates ``z = (x - m) / s``
    (:func:`standardization`; ``m = 0, s = 1`` when the config turns it off).

    Parameters
    ----------
    f, g
        The target-side potential ``f`` and the source-side potential ``g`` (approximately
        ``f*``), both on standardised coordinates; the map is ``grad g`` there.
    config
        The configuration it was fitted with.
    info
        Fit diagnostics: ``seconds``, ``iterations``, ``ms_per_step``, ``best_step`` (0: the
        initial state), ``val_energy`` (energy distance of the selected state, in the units of
        the data), ``initial_val_energy``, ``g_min_weight``, ``quadratic_weight``...
    shift, scale
        The standardisation ``m: (d,)`` (zeros when ``None``) and ``s > 0``.

    Notes
    -----
    Methods accept a numpy array or a torch tensor ``x: (n, d)`` and return the same kind,
    working in chunks of ``batch_size`` rows.
    """

    def __init__(
        self,
        f: ICNN,
        g: ICNN,
        config: W2Config,
        info: dict[str, Any] | None = None,
        *,
        shift: torch.Tensor | None = None,
        scale: float = 1.0,
    ) -> None:
        self.f = f.requires_grad_(False).eval()
        self.g = g.requires_grad_(False).eval()
        self.config = config
        self.info: dict[str, Any] = dict(info or {})
        device = g.skip.weight.device
        if shift is None:
            shift = torch.zeros(g.dim)
        self.shift = shift.detach().to(device, torch.float32).clone()
        if self.shift.shape != (g.dim,):
            raise InputError(f"shift has shape {tuple(self.shift.shape)} but the networks take {g.dim} features.")
        if not (math.isfinite(scale) and scale > 0):
            raise InputError(f"scale={scale!r} must be a positive number.")
        self.scale = float(scale)

    @property
    def dim(self) -> int:
        """Number of features ``d``."""
        return self.g.dim

    @property
    def device(self) -> torch.device:
        """Device holding the networks."""
        return self.g.skip.weight.device

    def to(self, device: str | torch.device) -> W2Map:
        """Move the networks to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``); returns self."""
        dev = resolve_device(device)
        self.f.to(dev)
        self.g.to(dev)
        self.shift = self.shift.to(dev)
        return self

    def __repr__(self) -> str:
        return f"W2Map(dim={self.dim}, hidden={self.config.hidden}, device={self.device})"

    def _points(self, x: Any, name: str = "x") -> torch.Tensor:
        t = as_points(x, name, min_points=1)
        if t.shape[1] != self.dim:
            raise InputError(f"{name} has {t.shape[1]} features but the map was fitted on {self.dim}.")
        return t.to(self.device)

    def transport(self, x: Any, *, batch_size: int = CHUNK) -> Any:
        """Transported points ``T(x) = m + s * grad g((x - m) / s)``; returns ``(n, d)``."""
        z = (self._points(x) - self.shift) / self.scale
        return like_input(gradient(self.g, z, batch_size).mul_(self.scale).add_(self.shift), x)

    def potential(self, x: Any, *, batch_size: int = CHUNK) -> Any:
        """The convex potential ``s^2 g((x - m) / s) + <m, x>``, whose gradient is the map; ``(n,)``."""
        t = self._points(x)
        values = evaluate(self.g, (t - self.shift) / self.scale, batch_size) * self.scale**2 + t @ self.shift
        return like_input(values, x)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """All weights, prefixed ``f.`` and ``g.``, and the standardisation (``standardizer.``)."""
        tensors = {f"f.{k}": v for k, v in self.f.state_dict().items()}
        tensors.update({f"g.{k}": v for k, v in self.g.state_dict().items()})
        tensors["standardizer.shift"] = self.shift
        tensors["standardizer.scale"] = torch.tensor([self.scale], dtype=torch.float64)
        return tensors

    def header(self) -> dict[str, Any]:
        """JSON description of the map (format, dimension, config, fit info)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cellw1_version": __version__,
            "dim": self.dim,
            "config": self.config.to_dict(),
            "info": self.info,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the map to one safetensors file (weights + JSON header), atomically; no pickle."""
        return save_tensors(path, self.state_tensors(), self.header())

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any], *, source: str = "model") -> W2Map:
        """Rebuild a map from :meth:`state_tensors` and :meth:`header` output.

        Version-1 files (before the quadratic term and the standardisation) load as the plain
        network in raw coordinates, which is what they hold.
        """
        version = check_format(header, FORMAT, FORMAT_VERSION, source=source, oldest=1)
        try:
            config = W2Config.from_dict(header["config"])
            if version == 1:
                config = config.replace(standardize=False, quadratic=False)
                shift, scale = None, 1.0
            else:
                shift, scale = tensors["standardizer.shift"], float(tensors["standardizer.scale"].reshape(()))
            f, g = build_icnn(int(header["dim"]), config), build_icnn(int(header["dim"]), config)
            f.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("f.")})
            g.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g.")})
            return cls(f, g, config, header.get("info"), shift=shift, scale=scale)
        except (KeyError, RuntimeError, ValueError, TypeError, ConfigError, InputError) as exc:
            raise ModelFileError(f"{source} does not match its own description ({exc}); save the model again.") from exc

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> W2Map:
        """Load a map written by :meth:`save` (no pickle; checksummed) onto ``device``."""
        tensors, header = load_tensors(path, kind="W2Map")
        return cls.from_state(tensors, header, source=f"W2Map file {str(path)!r}").to(device)


def build_optimizer(net: ICNN, config: W2Config) -> torch.optim.Adam:
    """Adam over ``net``'s parameters with ``config.lr`` and ``config.betas``; the weight ``a`` of
    the quadratic term, if any, in its own group at ``config.lr * config.quadratic_lr_scale``."""
    others = [p for name, p in net.named_parameters() if name != "quadratic_weight"]
    groups: list[dict[str, Any]] = [{"params": others}]
    if net.quadratic_weight is not None:
        groups.append({"params": [net.quadratic_weight], "lr": config.lr * config.quadratic_lr_scale})
    return torch.optim.Adam(groups, lr=config.lr, betas=config.betas, foreach=True)


def fit_w2(
    source: Any,
    target: Any,
    config: W2Config | None = None,
    seed: int = 0,
    *,
    progress: bool = False,
) -> W2Map:
    """Fit the W2 (Brenier) map from ``source`` cells to ``target`` cells with two ICNNs.

    The cells are standardised with :func:`standardization` of the training cells (unless
    ``config.standardize`` is off). Each outer step takes ``config.n_inner`` :func:`g_step` s
    (a fresh source minibatch each) and one :func:`f_step` (fresh source and target
    minibatches). At the start and every ``eval_every`` steps the held-out source cells are
    transported and compared with the held-out target cells by energy distance; the best
    state (possibly the initial one) is kept in memory and returned.

    Parameters
    ----------
    source, target
        ``(n, d)`` and ``(m, d)`` numpy arrays or torch tensors (never modified).
    config
        Solver configuration; :class:`W2Config` (the paper's 100,000 steps) when ``None``.
    seed
        Seed of initialisation, split and minibatches: the same seed gives identical results
        on the CPU.
    progress
        Show a progress bar.

    Returns
    -------
    W2Map
    """
    config = config or W2Config()
    src, tgt = as_points(source, "source"), as_points(target, "target")
    check_pair(src.shape[1], tgt.shape[1])
    device = resolve_device(config.device)
    seed = check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_s, val_s = split_validation(len(src), config.val_fraction, generator)
    train_t, val_t = split_validation(len(tgt), config.val_fraction, generator)
    if len(val_s) == 0 or len(val_t) == 0:
        val_s, val_t = train_s, train_t
    if config.standardize:
        shift, scale = standardization(src[train_s], tgt[train_t])
    else:
        shift, scale = src.new_zeros(src.shape[1]), 1.0
    src, tgt = ((src - shift) / scale).to(device), ((tgt - shift) / scale).to(device)
    x_train, y_train = src[train_s.to(device)], tgt[train_t.to(device)]
    x_val, y_val = src[val_s[:VAL_LIMIT].to(device)], tgt[val_t[:VAL_LIMIT].to(device)]
    yy = float(torch.cdist(y_val, y_val).mean())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        f, g = build_icnn(src.shape[1], config).to(device), build_icnn(src.shape[1], config).to(device)
    f_opt, g_opt = build_optimizer(f, config), build_optimizer(g, config)

    n_iters, n_inner = config.n_iters, config.n_inner
    inner_batches = minibatch_indices(len(x_train), config.batch_size, n_iters * n_inner, generator)
    source_batches = minibatch_indices(len(x_train), config.batch_size, n_iters, generator)
    target_batches = minibatch_indices(len(y_train), config.batch_size, n_iters, generator)
    history: dict[str, list[float]] = {"step": [], "g_loss": [], "f_loss": [], "val_energy": []}
    # energies are measured in standardised units and reported in the units of the data
    initial = energy_distance(gradient(g, x_val), y_val, yy)
    best = (initial, 0, copy.deepcopy(f.state_dict()), copy.deepcopy(g.state_dict()))
    g_sum, f_sum, count = x_train.new_zeros(()), x_train.new_zeros(()), 0
    bar = tqdm(range(1, n_iters + 1), desc="W2 (ICNN)", disable=not progress, leave=False)
    step = 0
    start = time.perf_counter()
    for step in bar:
        for _ in range(n_inner):
            g_sum += g_step(f, g, g_opt, x_train[next(inner_batches).to(device)], config.penalty)
        i, j = next(source_batches).to(device), next(target_batches).to(device)
        f_sum += f_step(f, g, f_opt, x_train[i], y_train[j])
        count += 1
        if step % config.eval_every == 0 or step == n_iters:
            energy = energy_distance(gradient(g, x_val), y_val, yy)
            history["step"].append(step)
            history["g_loss"].append(float(g_sum) / (count * n_inner))
            history["f_loss"].append(float(f_sum) / count)
            history["val_energy"].append(energy * scale)
            g_sum, f_sum, count = g_sum.zero_(), f_sum.zero_(), 0
            if energy < best[0]:
                best = (energy, step, copy.deepcopy(f.state_dict()), copy.deepcopy(g.state_dict()))
            bar.set_postfix(val_energy=f"{energy * scale:.4f}")
            if not math.isfinite(energy):
                logger.warning(
                    "W2 training diverged at step %d (non-finite validation energy); keeping step %d.", step, best[1]
                )
                break
    seconds = time.perf_counter() - start
    f.load_state_dict(best[2])
    g.load_state_dict(best[3])
    info = {
        "seed": seed,
        "n_source": len(src),
        "n_target": len(tgt),
        "iterations": step,
        "inner_iterations": step * n_inner,
        "seconds": seconds,
        "ms_per_step": 1000.0 * seconds / max(step, 1),
        "best_step": best[1],
        "val_energy": best[0] * scale,
        "initial_val_energy": initial * scale,
        "g_min_weight": g.min_weight(),
        "quadratic_weight": None if g.quadratic_weight is None else {
            "f": float(f.quadratic_weight.detach()),  # type: ignore[arg-type]
            "g": float(g.quadratic_weight.detach()),
        },
        "scale": scale,
        "history": history,
    }
    logger.info(
        "fitted W2 map in %.2f s (best validation energy %.4g at step %d; initial %.4g)",
        seconds, best[0] * scale, best[1], initial * scale,
    )
    return W2Map(f, g, config, info, shift=shift, scale=scale)
