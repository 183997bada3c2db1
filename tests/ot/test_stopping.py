"""Early stopping: the plateau rule, and fits that stop once validation stops improving."""

from __future__ import annotations

import numpy as np
import torch

import cellw1
from cellw1.ot.potential import fit_potential
from cellw1.ot.training import Plateau


def test_plateau_counts_evaluations_without_significant_improvement() -> None:
    plateau = Plateau(patience=2, min_delta=0.01, mode="max")
    assert plateau.update(1.0)
    assert not plateau.stop
    # best so far, but not significant
    assert plateau.update(1.005)
    assert not plateau.stop
    # two evaluations without +1%
    assert not plateau.update(0.9)
    assert plateau.stop
    fresh = Plateau(patience=2, min_delta=0.01, mode="min")
    assert fresh.update(1.0)
    assert fresh.update(0.5)
    assert fresh.update(0.4)
    assert not fresh.stop
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
    full = fit_potential(
        x, y, config.replace(potential_iters=300, patience=None), generator=torch.Generator().manual_seed(0)
    )
    assert full.history["stopped_at"][0] == 300


def test_fit_uses_the_configured_cpu_threads_and_restores_them() -> None:
    seen = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        original = torch.optim.Adam.step

        def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(torch.get_num_threads())
            return original(self, *args, **kwargs)

        torch.optim.Adam.step = spy  # type: ignore[method-assign]
        x = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
        config = cellw1.W1Config(hidden=(8,), potential_iters=5, regression_iters=5, energy_iters=5)  # every phase
        cellw1.fit_map(x, x + 1, config)
        assert set(seen) == {1}
        assert torch.get_num_threads() == 2
        seen.clear()
        cellw1.fit_map(x, x + 1, config.replace(cpu_threads=None))
        assert set(seen) == {2}
    finally:
        torch.optim.Adam.step = original  # type: ignore[method-assign]
        torch.set_num_threads(before)
