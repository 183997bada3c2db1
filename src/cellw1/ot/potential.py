"""Phase 1: the Kantorovich potential, by maximising the Kantorovich-Rubinstein dual.

``W1(mu, nu) = sup_{f 1-Lipschitz} E_mu f - E_nu f`` (paper eq. 4). ``f`` is a
:class:`~cellw1.ot.lipschitz.LipschitzPotential`; each step ascends the minibatch dual (eq. 13)
with one forward pass over the concatenated source and target batch, so every orthonormal
weight is computed once per step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import W1Config
from .lipschitz import LipschitzPotential
from .sampling import Cells, as_cells, minibatches
from .training import History, Training

logger = logging.getLogger(__name__)

#: rows evaluated at once when a function is applied to many cells
CHUNK = 16_384


#: a feature whose variance is below this share of the mean feature variance counts as constant
CONSTANT_VARIANCE = 1e-8


def constant_features(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Boolean ``(d,)``: features that take one value in all of ``source`` and ``target`` together."""
    var = torch.cat((source, target)).double().var(0)
    return var <= CONSTANT_VARIANCE * max(float(var.mean()), 1e-30)


def adam_kernel(device: torch.device) -> dict[str, Any]:
    """Adam's fastest implementation here: one fused kernel for all parameters."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


def build_potential(dim: int, config: W1Config) -> LipschitzPotential:
    """Build the potential network that ``config`` describes, for inputs of dimension ``dim``."""
    return LipschitzPotential(
        dim,
        config.hidden,
        group_size=config.group_size,
        orthonormalization=config.orthonormalization,
        bjorck_order=config.bjorck_order,
        bjorck_iters=config.bjorck_iters,
    )


@torch.no_grad()
def evaluate(fn: torch.nn.Module, x: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Apply ``fn`` to ``x: (n, d)`` in chunks without building a graph; returns ``(n, ...)``."""
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, max(len(x), 1), chunk)])


def dual_value(potential: nn.Module, source: torch.Tensor, target: torch.Tensor) -> float:
    """Compute the dual objective ``mean f(source) - mean f(target)``: a lower bound on W1."""
    return float(evaluate(potential, source).mean() - evaluate(potential, target).mean())


def gradient(potential: nn.Module, x: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """``grad f(x)`` for ``x: (n, d)``, computed in chunks; returns a detached ``(n, d)``."""
    out = []
    for i in range(0, len(x), chunk):
        xi = x[i : i + chunk].detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(potential(xi).sum(), xi)
        out.append(g.detach())
    return torch.cat(out) if out else x.new_zeros(x.shape)


def direction(potential: nn.Module, x: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Compute the unit transport direction ``u(x) = grad f(x) / |grad f(x)|`` (eq. 5); ``(n, d)``.

    Where the gradient vanishes (never at the optimum, where ``|grad f| = 1``) ``u = 0``.
    """
    g = gradient(potential, x, chunk)
    norm = g.norm(dim=1, keepdim=True)
    return torch.where(norm > 1e-12, g / norm.clamp_min(1e-12), torch.zeros_like(g))


def potential_step(
    potential: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    source_batch: torch.Tensor,
    target_batch: torch.Tensor,
) -> torch.Tensor:
    """One ascent step on the minibatch dual ``mean f(x) - mean f(y)``; returns it (detached).

    Source and target go through the network in one forward pass. ``potential`` is the
    network, or a conditional network bound to the conditions of the batch's pairs.
    """
    optimizer.zero_grad(set_to_none=True)
    values = potential(torch.cat((source_batch, target_batch)))
    dual = values[: len(source_batch)].mean() - values[len(source_batch) :].mean()
    (-dual).backward()
    optimizer.step()
    return dual.detach()


@dataclass
class PotentialFit:
    """Result of :func:`fit_potential`: the best potential and the training history.

    ``history`` (see :mod:`cellw1.ot.training`): ``step``, ``train_dual`` (mean minibatch dual
    since the previous evaluation), ``val_dual``, ``best_step`` and ``stopped_at``.
    """

    potential: LipschitzPotential
    best_step: int
    best_dual: float
    history: History = field(default_factory=dict)


def fit_potential(
    source: Cells | torch.Tensor,
    target: Cells | torch.Tensor,
    config: W1Config | None = None,
    *,
    generator: torch.Generator,
    val_source: torch.Tensor | None = None,
    val_target: torch.Tensor | None = None,
    progress: bool = False,
) -> PotentialFit:
    """Phase 1: learn a 1-Lipschitz potential ``f`` maximising ``E_source f - E_target f``.

    Adam with a cosine learning rate over ``config.potential_iters`` steps; every
    ``config.eval_every`` steps the dual is measured on the validation cells, the best state is
    kept in memory, and the phase stops early once the validation dual has not improved by
    ``config.min_delta`` (relative) for ``config.patience`` evaluations (:func:`ascend_dual`).

    Parameters
    ----------
    source, target
        Training cells: ``(n, d)`` tensors, or :class:`~cellw1.ot.sampling.Cells` (streamed
        from disk, for example).
    config
        Solver configuration (paper defaults when ``None``).
    generator
        Seeded CPU generator for initialisation-independent sampling of minibatches.
    val_source, val_target
        Held-out cells to select the best state; the training cells when omitted.
    progress
        Show a progress bar.

    Returns
    -------
    PotentialFit
        The potential in the state with the best validation dual (kept in memory).
    """
    config = config or W1Config()
    source, target = as_cells(source), as_cells(target)
    potential = build_potential(source.dim, config).to(source.buffer().device)
    if config.mask_constant_features:
        mask_constant_features(potential.input_mask, source.buffer(), target.buffer())
    if val_source is None or len(val_source) == 0 or val_target is None or len(val_target) == 0:
        val_source, val_target = source.buffer(), target.buffer()
    sampler = SourceTargetBatches(source, target, config.batch_size, config.potential_iters, generator)
    training = ascend_dual(
        [potential],
        lambda batch: potential,
        sampler,
        lambda: dual_value(potential, val_source, val_target),
        config,
        progress=progress,
    )
    return PotentialFit(potential, training.best_step, training.best_score, training.history)


def mask_constant_features(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> None:
    """Zero the ``(d,)`` input ``mask`` of a potential on the features constant in ``source`` and ``target``."""
    constant = constant_features(source, target)
    mask.copy_((~constant).to(mask))
    if constant.any():
        logger.info(
            "potential: %d of %d features are constant in training and stay fixed", int(constant.sum()), len(mask)
        )


@dataclass
class DualBatch:
    """One minibatch of phase 1: source cells, target cells and, for a conditional map, their conditions.

    Attributes
    ----------
    source, target
        ``(b, d)`` cells of each side.
    conditions
        ``(b,)`` condition of each source-target pair (positions among the fitted
        conditions), or ``None`` for a single map.
    """

    source: torch.Tensor
    target: torch.Tensor
    conditions: torch.Tensor | None = None


class DualSampler(Protocol):
    """Where the minibatches of phase 1 come from: one :class:`DualBatch` a step."""

    def draw(self) -> DualBatch:
        """Draw the next minibatch (streamed cells move on to their next buffer on their own)."""


class SourceTargetBatches:
    """:class:`DualSampler` of a single map: source and target cells drawn independently.

    Each side's cells are drawn uniformly with replacement from its current buffer
    (:func:`~cellw1.ot.sampling.minibatches`).
    """

    def __init__(self, source: Cells, target: Cells, batch_size: int, n_steps: int, generator: torch.Generator):
        self._source = minibatches(source, batch_size, n_steps, generator)
        self._target = minibatches(target, batch_size, n_steps, generator)

    def draw(self) -> DualBatch:
        """Draw the next source and target minibatch."""
        (x,), (y,) = next(self._source), next(self._target)
        return DualBatch(x, y)


def ascend_dual(
    networks: Sequence[nn.Module],
    bind: Callable[[DualBatch], Callable[[torch.Tensor], torch.Tensor]],
    sampler: DualSampler,
    validation_dual: Callable[[], float],
    config: W1Config,
    *,
    progress: bool = False,
    desc: str = "potential",
) -> Training:
    """Ascend the minibatch dual: the loop of phase 1, for the single and the conditional map.

    Parameters
    ----------
    networks
        Trained together (one Adam over all their parameters); their best state is kept.
    bind
        The potential for a batch: the network itself, or the conditional network bound to
        the conditions of the batch's pairs.
    sampler
        One :class:`DualBatch` a step.
    validation_dual
        The dual on held-out cells (the score to maximise).
    config
        Schedule (``potential_iters``, learning rates, ``eval_every``) and early stopping.
    progress, desc
        Show a progress bar, and its label.

    Returns
    -------
    Training
        Finished: the networks are in their best state, frozen; ``history`` has ``step``,
        ``val_dual``, ``train_dual`` (mean minibatch dual since the previous evaluation),
        ``best_step`` and ``stopped_at``.
    """
    device = next(networks[0].parameters()).device
    params = [p for net in networks for p in net.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.potential_lr, betas=config.potential_betas, **adam_kernel(device))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.potential_iters, eta_min=config.potential_lr_min
    )
    training = Training(
        networks, score="val_dual", mode="max", patience=config.patience, min_delta=config.min_delta, name="potential"
    )
    running, count = torch.zeros((), device=device), 0
    step = 0
    bar = tqdm(range(1, config.potential_iters + 1), desc=desc, disable=not progress, leave=False)
    for step in bar:
        batch = sampler.draw()
        running += potential_step(bind(batch), optimizer, batch.source, batch.target)
        count += 1
        schedule.step()
        if step % config.eval_every == 0 or step == config.potential_iters:
            with torch.no_grad():
                val = validation_dual()
            training.evaluate(step, val, train_dual=float(running) / count)
            running, count = running.zero_(), 0
            bar.set_postfix(val_dual=f"{val:.4f}")
            if training.stop:
                logger.info("potential: validation dual stopped improving; early stop at step %d", step)
                break
    training.finish(step)
    for net in networks:
        net.requires_grad_(False)
    logger.info(
        "potential: best validation dual %.5f at step %d (ran %d of %d)",
        training.best_score,
        training.best_step,
        step,
        config.potential_iters,
    )
    return training
