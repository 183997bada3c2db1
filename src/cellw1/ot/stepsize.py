"""Phase 2: how far each cell travels along the transport direction.

The W1 potential fixes the direction ``u(x) = grad f(x) / |grad f(x)|`` but not the distance:
any ``T(x) = x - eta(x) u(x)`` that pushes the source onto the target is W1-optimal (paper
eq. 5), and the bookshelf shows many such maps exist. The learners of ``eta >= 0``:

``"ot_energy"`` (default)
    ``"minibatch_ot"``, then ``energy_iters`` steps of gradient descent on the minibatch
    energy distance between transported and target cells, from the regression's state. The
    regression starts the steps near the monotone map; matching whole distributions then
    corrects the regression's shrinkage (a pairing blurred by the minibatch, projected on an
    imperfect direction, is shorter than the true step). No adversary.
``"minibatch_ot"``
    For the strictly convex costs ``|x - y|^p``, ``p > 1``, the optimal map is unique and
    monotone, and it converges to the monotone W1 map as ``p -> 1`` (Caffarelli, Feldman &
    McCann 2002). Each pass pairs every training source cell with a target cell by exact
    discrete OT (POT's ``ot.emd``) on random minibatches under ``|x - y|^1.1``; the pair's
    displacement projected on the direction, ``(x - y) . u(x)``, is that cell's step. The mean
    over passes is the regression target of the step-size network (least squares).
``"gan"``
    The paper's adversarial learner (eqs. 15-16): the step-size network is the generator of
    ``T(x)``, a discriminator tells transported from target cells.
``"ot_gan"``
    The minibatch-OT regression, then ``refine_iters`` adversarial steps starting from it.

All keep the state whose transported validation cells are closest to the validation target
cells in energy distance (a refinement's starting state stays a candidate, so refining never
worsens the validation match), and stop early once that distance stops improving. Outside the
training cells the regression's ``eta`` is capped at the largest step seen in training.
Measured comparisons are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import W1Config
from .energy import POOL_CELLS, EnergyPool, StepSizeSelector, ValidationMatch, distinct_rows, refine_energy
from .lipschitz import LipschitzPotential
from .mlp import mlp
from .potential import adam_kernel, direction, dual_value
from .sampling import Cells, as_cells, minibatches
from .training import History

logger = logging.getLogger(__name__)


class Standardize(nn.Module):
    """Fixed rescaling ``(x - loc) / scale`` with one scale for all features (saved buffers).

    The scale is the root mean feature variance, shared by all features: per-feature scaling
    would blow up genes that barely vary in the training cells, and a network fed those values
    extrapolates wildly on new cells (measured in ``docs/benchmarks.md``, "Genes directly").
    """

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))

    def fit(self, x: torch.Tensor) -> Standardize:
        """Set ``loc`` and ``scale`` from cells ``x: (n, d)``; returns the module."""
        self.loc.copy_(x.mean(0))
        if len(x) > 1:
            self.scale.copy_(x.var(0).mean().sqrt().clamp_min(1e-6))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale ``x: (n, d)``."""
        return (x - self.loc) / self.scale


class StepSize(nn.Module):
    """Non-negative step size ``eta: R^d -> [0, eta_max]``.

    ``eta(x) = min(eta_scale * softplus(g((x - loc) / scale)), eta_max)`` with ``g`` an MLP
    (paper: hidden ``(64,)*4``). ``eta_scale`` puts the network's output on the scale of the
    distances travelled, so the same learning rate works for 2-D toys and 1,000 genes.
    """

    eta_scale: torch.Tensor
    eta_max: torch.Tensor

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64, 64, 64)) -> None:
        super().__init__()
        self.inputs = Standardize(dim)
        self.net = mlp((dim, *hidden, 1))
        self.register_buffer("eta_scale", torch.ones(()))
        self.register_buffer("eta_max", torch.tensor(float("inf")))

    def scale_to(self, eta: torch.Tensor) -> None:
        """Put the output on the scale of the step targets ``eta: (n,)``; cap it at their largest."""
        self.eta_scale.fill_(float(eta.mean()) if float(eta.mean()) > 0 else 1.0)
        self.eta_max.fill_(float(eta.max()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Step sizes for ``x: (n, d)``; returns ``(n,)``."""
        eta = self.eta_scale * nn.functional.softplus(self.net(self.inputs(x)).squeeze(-1))
        return eta.clamp_max(self.eta_max)


class Discriminator(nn.Module):
    """Logit of "this cell is a real target cell" for the adversarial learner."""

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64, 64, 64)) -> None:
        super().__init__()
        self.inputs = Standardize(dim)
        self.net = mlp((dim, *hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x: (n, d)``; returns ``(n,)``."""
        return self.net(self.inputs(x)).squeeze(-1)


def ot_step_targets(
    source: torch.Tensor,
    u: torch.Tensor,
    target: torch.Tensor,
    *,
    exponent: float,
    batch_size: int,
    passes: int,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Per-cell step targets from exact minibatch OT pairings under ``|x - y|^exponent``.

    Parameters
    ----------
    source, u
        Source cells ``(n, d)`` and their unit directions ``(n, d)``.
    target
        Target cells ``(m, d)``.
    exponent
        ``p > 1`` of the pairing cost.
    batch_size
        Cells per side of each pairing (fewer when a side is smaller).
    passes
        Each pass pairs every source cell once; targets are averaged over passes.
    rng
        Seeded numpy generator.

    Returns
    -------
    torch.Tensor
        ``(n,)`` non-negative mean projected displacements ``max(0, mean (x - y) . u(x))``.
    """
    import ot  # POT (and the scikit-learn it loads) only once a fit pairs cells: ~0.5 s of every start-up

    n, m = len(source), len(target)
    b = max(1, min(batch_size, n, m))
    xs, us, yt = (t.detach().cpu() for t in (source, u, target))  # float64 a batch at a time, not whole

    def rows(t: torch.Tensor, i: np.ndarray) -> np.ndarray:
        return t[torch.from_numpy(i)].double().numpy()

    total = np.zeros(n)
    for _ in range(passes):
        for idx in np.array_split(rng.permutation(n), math.ceil(n / b)):
            jdx = rng.choice(m, size=len(idx), replace=len(idx) > m)
            x, y = rows(xs, idx), rows(yt, jdx)
            cost = ot.dist(x, y, metric="euclidean") ** exponent
            plan = ot.emd(np.empty(0), np.empty(0), cost)
            total[idx] += np.einsum("ij,ij->i", x - y[plan.argmax(1)], rows(us, idx))
    return torch.from_numpy(np.maximum(total / passes, 0.0)).to(source)


@dataclass
class StepSizeFit:
    """Result of :func:`fit_step_size`: the best step-size network and the history.

    ``history`` (see :mod:`cellw1.ot.training`): ``step`` (counted across the learner's stages),
    ``val_energy`` (energy distance between transported and target validation cells),
    ``loss`` (the learner's training loss at that step), ``best_step`` and ``stopped_at``.
    """

    step_size: StepSize
    best_step: int
    best_energy: float
    history: History = field(default_factory=dict)


def regression_step(
    step_size: StepSize, optimizer: torch.optim.Optimizer, x: torch.Tensor, eta: torch.Tensor
) -> torch.Tensor:
    """One least-squares step of ``eta(x)`` towards the targets ``eta``, in units of ``eta_scale``."""
    optimizer.zero_grad(set_to_none=True)
    loss = ((step_size(x) - eta) / step_size.eta_scale).square().mean()
    loss.backward()
    optimizer.step()
    return loss.detach()


def gan_step(
    step_size: StepSize,
    discriminator: Discriminator,
    opt_step: torch.optim.Optimizer,
    opt_disc: torch.optim.Optimizer,
    x: torch.Tensor,
    u: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One alternating GAN step (paper eqs. 15-16); returns (discriminator, generator) losses.

    The discriminator learns ``BCE(D(y), 1) + BCE(D(T(x)), 0)``; the step size then descends the
    non-saturating loss ``BCE(D(T(x)), 1)`` against the updated discriminator.
    """
    bce = nn.functional.binary_cross_entropy_with_logits
    moved = x - step_size(x)[:, None] * u
    opt_disc.zero_grad(set_to_none=True)
    logits = discriminator(torch.cat((y, moved.detach())))
    labels = torch.cat((torch.ones(len(y), device=y.device), torch.zeros(len(x), device=x.device)))
    disc_loss = bce(logits, labels)
    disc_loss.backward()
    opt_disc.step()
    opt_step.zero_grad(set_to_none=True)
    fake = discriminator(moved)
    gen_loss = bce(fake, torch.ones_like(fake))
    params = [p for p in step_size.parameters() if p.requires_grad]
    for p, g in zip(params, torch.autograd.grad(gen_loss, params), strict=False):
        p.grad = g
    opt_step.step()
    return disc_loss.detach(), gen_loss.detach()


#: validation cells of each side on which the step size's states are scored
SELECT_CELLS = 1000
#: passes over a buffer of cells streamed from disk before the next is read: step targets cost
#: an exact OT pairing per cell, so phase 2 reuses each buffer more than phase 1 does
REGRESSION_REUSE = 4


def fit_step_size(
    potential: LipschitzPotential,
    source: Cells | torch.Tensor,
    target: Cells | torch.Tensor,
    config: W1Config | None = None,
    *,
    generator: torch.Generator,
    rng: np.random.Generator,
    val_source: torch.Tensor | None = None,
    val_target: torch.Tensor | None = None,
    progress: bool = False,
) -> StepSizeFit:
    """Phase 2: learn ``eta(x) >= 0`` so that ``x - eta(x) u(x)`` is distributed like the target.

    The directions ``u`` (and step targets) of a buffer of training source cells are computed
    once per buffer, since ``f`` is frozen: the loop never differentiates through the
    potential. In memory the buffer is every training cell.

    Parameters
    ----------
    potential
        The fitted, frozen potential of phase 1.
    source, target
        Training cells: ``(n, d)`` tensors, or :class:`~cellw1.ot.sampling.Cells` (streamed
        from disk, for example).
    config
        ``config.step_size_learner`` picks ``"minibatch_ot"``, ``"gan"`` or ``"ot_gan"``.
    generator, rng
        Seeded torch generator (minibatches) and numpy generator (pairings).
    val_source, val_target
        Held-out cells for state selection; the training cells when omitted.
    progress
        Show a progress bar.
    """
    config = config or W1Config()
    source, target = as_cells(source), as_cells(target)
    first = source.buffer()
    if val_source is None or len(val_source) == 0 or val_target is None or len(val_target) == 0:
        val_source, val_target = first, target.buffer()
    step_size = StepSize(source.dim, config.step_hidden).to(first.device)
    step_size.inputs.fit(first)
    del first  # streamed buffers are replaced as training goes; do not keep the first alive
    validation = ValidationMatch(
        step_size, val_source[:SELECT_CELLS], direction(potential, val_source[:SELECT_CELLS]), val_target[:SELECT_CELLS]
    )
    selector = StepSizeSelector(step_size, [validation], config)
    learner = config.step_size_learner
    steps = 0
    if learner in ("minibatch_ot", "ot_gan", "ot_energy"):
        steps += _regress(step_size, potential, source, target, config, selector, generator, rng, progress)
    if learner == "ot_energy":
        selector.resume()
        pools = SourceTargetPools(step_size, potential, source, target, config.batch_size, generator)
        steps += refine_energy(step_size, pools, selector, config, offset=steps, progress=progress)
    adversarial = (step_size, potential, source, target, config, selector, generator, progress)
    if learner == "ot_gan":
        selector.resume()
        steps += _adversarial(*adversarial, n_iters=config.refine_iters, lr=config.refine_lr, offset=steps)
    if learner == "gan":
        # at the optimum E eta = W1, which the dual estimates: the natural scale of the steps
        step_size.eta_scale.fill_(max(dual_value(potential, source.buffer(), target.buffer()), 1e-3))
        steps += _adversarial(*adversarial, n_iters=config.step_iters, lr=config.step_lr, offset=0)
    history = selector.finish(steps)
    step_size.requires_grad_(False)
    logger.info(
        "step size (%s): best validation energy distance %.5f at step %d",
        config.step_size_learner,
        selector.best_score,
        selector.best_step,
    )
    return StepSizeFit(step_size, selector.best_step, selector.best_score, history)


def _regress(
    step_size: StepSize,
    potential: LipschitzPotential,
    source: Cells,
    target: Cells,
    config: W1Config,
    selector: StepSizeSelector,
    generator: torch.Generator,
    rng: np.random.Generator,
    progress: bool,
) -> int:
    """Least squares on minibatch-OT step targets; returns the steps taken."""

    def step_targets(x: torch.Tensor) -> tuple[torch.Tensor]:
        u = direction(potential, x)
        return (
            ot_step_targets(
                x,
                u,
                target.next_buffer(),
                exponent=config.ot_exponent,
                batch_size=config.ot_batch_size,
                passes=config.ot_passes,
                rng=rng,
            ),
        )

    first = step_targets(source.buffer())
    step_size.scale_to(first[0])
    batches = minibatches(
        source,
        config.batch_size,
        config.regression_iters,
        generator,
        reuse=REGRESSION_REUSE,
        prepare=step_targets,
        prepared=first,
    )
    return regress(step_size, batches, selector, config, progress=progress)


def regress(
    step_size: StepSize,
    batches: Iterator[tuple[torch.Tensor, ...]],
    selector: StepSizeSelector,
    config: W1Config,
    *,
    progress: bool = False,
    desc: str = "step size (regression)",
) -> int:
    """Least squares of ``eta`` on minibatches ``(x, eta targets)``; returns the steps taken.

    Adam with a cosine learning rate over ``config.regression_iters`` steps; the selector
    scores the state every ``config.eval_every`` steps and says when to stop.
    """
    optimizer = torch.optim.Adam(
        step_size.parameters(), lr=config.step_lr, betas=config.step_betas, **adam_kernel(step_size.eta_scale.device)
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.regression_iters, eta_min=config.step_lr / 100
    )
    step = 0
    for step in tqdm(range(1, config.regression_iters + 1), desc=desc, disable=not progress, leave=False):
        x, eta_x = next(batches)
        loss = regression_step(step_size, optimizer, x, eta_x)
        schedule.step()
        if step % config.eval_every == 0 or step == config.regression_iters:
            selector(step, loss)
            if selector.stop:
                break
    return step


def _pool(cells: Cells, size: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``size`` distinct cells of the current buffer (the next one when streaming)."""
    return distinct_rows(cells.buffer() if cells.holds_all else cells.next_buffer(), size, generator)


class SourceTargetPools:
    """:class:`~cellw1.ot.energy.EnergyBatches` of a single map: pools of source and target cells.

    Each pool holds up to ``POOL_CELLS`` distinct cells of the current buffer of each side
    (the next buffer when streaming); a minibatch is ``batch_size`` distinct source cells of
    the pool and as many target cells drawn with replacement.
    """

    def __init__(
        self,
        step_size: StepSize,
        potential: LipschitzPotential,
        source: Cells,
        target: Cells,
        batch_size: int,
        generator: torch.Generator,
    ) -> None:
        self.step_size, self.potential = step_size, potential
        self.source, self.target = source, target
        self.batch_size, self.generator = batch_size, generator
        self.pool: EnergyPool | None = None

    def new_pools(self) -> None:
        """Draw the next pools; the directions of the source cells are computed once per pool."""
        x, y = _pool(self.source, POOL_CELLS, self.generator), _pool(self.target, POOL_CELLS, self.generator)
        self.pool = EnergyPool(x, direction(self.potential, x), y)

    def loss(self) -> torch.Tensor:
        """Compute the energy loss of one minibatch of the current pools."""
        pool = self.pool
        assert pool is not None, "new_pools() draws the pools first"
        i, j = pool.draw(self.batch_size, self.generator)
        return pool.loss(i, j, self.step_size(pool.x[i]))


def _adversarial(
    step_size: StepSize,
    potential: LipschitzPotential,
    source: Cells,
    target: Cells,
    config: W1Config,
    selector: StepSizeSelector,
    generator: torch.Generator,
    progress: bool,
    *,
    n_iters: int,
    lr: float,
    offset: int,
) -> int:
    """Alternating GAN steps (paper eqs. 15-16) from the current step size; returns the steps taken."""
    device = source.buffer().device
    discriminator = Discriminator(source.dim, config.discriminator_hidden).to(device)
    discriminator.inputs.fit(target.buffer())
    opt_step = torch.optim.Adam(step_size.parameters(), lr=lr, betas=config.step_betas, **adam_kernel(device))
    opt_disc = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=config.step_betas, **adam_kernel(device))
    batches = minibatches(source, config.batch_size, n_iters, generator, prepare=lambda x: (direction(potential, x),))
    target_batches = minibatches(target, config.batch_size, n_iters, generator)
    step = 0
    for step in tqdm(range(1, n_iters + 1), desc="step size (adversarial)", disable=not progress, leave=False):
        (x, u), (y,) = next(batches), next(target_batches)
        _, gen_loss = gan_step(step_size, discriminator, opt_step, opt_disc, x, u, y)
        if step % config.eval_every == 0 or step == n_iters:
            selector(offset + step, gen_loss)
            if selector.stop:
                break
    return step
