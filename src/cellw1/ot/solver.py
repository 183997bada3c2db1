"""``fit_map``: data in, a fitted :class:`~cellw1.ot.transport.TransportMap` out."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from ..checks import check_pair, check_seed, resolve_device
from ..errors import ConfigError
from .config import W1Config
from .effect import EffectTest, effect_test
from .potential import fit_potential
from .sampling import checked_cells
from .stepsize import StepSize, fit_step_size
from .training import combine, fit_threads
from .transport import TransportMap

logger = logging.getLogger(__name__)


def fit_map(
    source: Any,
    target: Any,
    config: W1Config | None = None,
    seed: int = 0,
    *,
    progress: bool = False,
    effect: EffectTest | None = None,
) -> TransportMap:
    """Fit the W1 transport map from ``source`` cells to ``target`` cells.

    Phase 1 (:func:`~cellw1.ot.potential.fit_potential`) learns the potential ``f``; phase 2
    (:func:`~cellw1.ot.stepsize.fit_step_size`) learns the step size ``eta``. A seeded share
    ``config.val_fraction`` of each side is held out to pick the best state of each phase.
    First, the two groups are tested for a response (:mod:`cellw1.ot.effect`): when the target
    cells cannot be told from the source cells at level ``config.effect_alpha``, phase 2 is
    skipped and the step size is 0 (the map leaves cells where they are).

    Parameters
    ----------
    source, target
        ``(n, d)`` and ``(m, d)`` numpy arrays or torch tensors (never modified), or
        :class:`~cellw1.ot.sampling.Cells` (for example cells streamed by rows,
        :class:`~cellw1.ot.sampling.StreamedCells`).
    config
        Solver configuration; :class:`~cellw1.ot.config.W1Config` defaults when ``None``.
    seed
        Seed of initialisation, splits, minibatches and pairings: the same seed gives
        identical results on the CPU.
    progress
        Show progress bars.
    effect
        The test for a response already made on these cells (:func:`cellw1.fit` makes it once per
        perturbation for every method); ``None``: made here when ``config.effect_alpha`` is set.

    Returns
    -------
    TransportMap
    """
    config = config or W1Config()
    if not isinstance(config, W1Config):
        raise ConfigError(f"config must be a W1Config, got {type(config).__name__}.")
    seed = check_seed(seed)
    device = resolve_device(config.device)
    src, tgt = (checked_cells(x, name, device) for x, name in ((source, "source"), (target, "target")))
    check_pair(src.dim, tgt.dim)
    if config.effect_alpha is None:
        effect = None
    elif effect is None:
        effect = effect_test(src, tgt, seed=seed)
    moves = effect is None or effect.detected(config.effect_alpha)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_src, val_src = src.split(config.val_fraction, generator)
    train_tgt, val_tgt = tgt.split(config.val_fraction, generator)
    n_source, n_target = src.n_cells, tgt.n_cells
    del src, tgt  # the split holds the cells now; the unsplit copies would only add to peak memory
    with torch.random.fork_rng(devices=[]), fit_threads(config.cpu_threads, device):
        torch.manual_seed(seed)
        start = time.perf_counter()
        phase1 = fit_potential(
            train_src, train_tgt, config, generator=generator, val_source=val_src, val_target=val_tgt, progress=progress
        )
        mid = time.perf_counter()
        phase2 = (
            fit_step_size(
                phase1.potential,
                train_src,
                train_tgt,
                config,
                generator=generator,
                rng=rng,
                val_source=val_src,
                val_target=val_tgt,
                progress=progress,
            )
            if moves
            else None
        )
        end = time.perf_counter()
    info = {
        "seed": seed,
        "n_source": n_source,
        "n_target": n_target,
        "potential_steps": int(phase1.history["stopped_at"][0]),
        "step_size_steps": 0 if phase2 is None else int(phase2.history["stopped_at"][0]),
        "potential_best_step": phase1.best_step,
        "potential_val_dual": phase1.best_dual,
        "potential_seconds": mid - start,
        "step_size_seconds": end - mid,
        "effect": None if effect is None else effect.to_dict(),
    }
    if phase2 is None:  # no response: the step size is 0 for every cell (eta = min(..., eta_max))
        assert effect is not None
        logger.warning(
            "no response detected: the target cells cannot be told from the source cells (energy distance "
            "%.3g, permutation p = %.3g > effect_alpha = %g), so the map leaves cells where they are; "
            "set W1Config(effect_alpha=None) to move them anyway.",
            effect.energy,
            effect.p_value,
            config.effect_alpha,
        )
        step_size = StepSize(phase1.potential.dim, config.step_hidden).to(device)
        step_size.eta_max.fill_(0.0)
        return TransportMap(phase1.potential, step_size, config, info, history=combine(potential=phase1.history))
    info.update(step_size_best_step=phase2.best_step, step_size_val_energy=phase2.best_energy)
    logger.info("fitted W1 map in %.2f s (dual %.4f)", end - start, phase1.best_dual)
    history = combine(potential=phase1.history, step_size=phase2.history)
    return TransportMap(phase1.potential, phase2.step_size, config, info, history=history)
