"""Early stopping: the plateau rule, and fits that stop once validation stops improving."""

from __future__ import annotations

import numpy as np
import torch

import cellw1
from cellw1.potential import fit_potential
from cellw1.stopping import Plateau


def test_plateau_counts_evaluations_without_significant_improvement() -> None:
    plateau = Plateau(patience=2, min_delta=0.01, mode="max")
    assert plateau.update(1.0) and not plateau.stop
    assert plateau.update(1.005) and not plateau.stop  # best so far, but not significant
    assert not plateau.update(0.9) and plateau.stop  # two evaluations without +1%
    fresh = Plateau(patience=2, min_delta=0.01, mode="min")
    assert fresh.update(1.0) and fresh.update(0.5) and fresh.update(0.4) and not fresh.stop
    never = Plateau(patience=None, min_delta=0.0, mode="min")
    for _ in range(100):
        never.update(1.0)
    assert not never.stop


def test_potential_stops_early_and_full_schedule_without_patience() -> None:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(400, 2)), dtype=torch.float32)
    y = x + torch.tensor([3.0, 0.0])
    config = cellw1.W1Config(potential_iters=3000, eval_every=50, patience=3, min_delta=1e-3)
    early = fit_potential(x, y, config, generator=torch.Generator().manual_seed(0))
    assert early.history["stopped_at"][0] < 3000
    assert abs(early.best_dual - 3.0) < 0.1  # stopped because it had converged
    full = fit_potential(x, y, config.replace(potential_iters=300, patience=None), generator=torch.Generator().manual_seed(0))
    assert full.history["stopped_at"][0] == 300
