"""The conditional model's samplers and bound networks (cellw1.ot.conditional.solver, .networks)."""

from __future__ import annotations

import torch

from cellw1.ot.conditional import ConditionalConfig, ConditionalPotential, ConditionBoundModule
from cellw1.ot.conditional.solver import ConditionalBatches, ConditionGroups
from cellw1.ot.sampling import MemoryCells


def _groups(sampling: str) -> ConditionGroups:
    """Controls at 0; condition ``c`` at ``10 (c + 1)`` in the first feature, with 30, 60 and 90 cells."""
    source = MemoryCells(torch.zeros(50, 2))
    targets = [MemoryCells(torch.full((30 * (c + 1), 2), 10.0 * (c + 1))) for c in range(3)]
    config = ConditionalConfig(val_fraction=0.0, condition_sampling=sampling)  # type: ignore[arg-type]
    return ConditionGroups(source, targets, config, torch.Generator().manual_seed(0))


def test_each_target_cell_comes_with_its_condition() -> None:
    batch = ConditionalBatches(_groups("balanced"), 64, torch.Generator().manual_seed(1)).draw()
    assert batch.conditions is not None
    assert torch.equal(batch.target[:, 0], 10.0 * (batch.conditions + 1).float())
    assert torch.equal(batch.source, torch.zeros(64, 2))


def test_balanced_and_proportional_sampling() -> None:
    """Balanced: every condition a third of the draws; proportional: 1/6, 2/6, 3/6 (their cells)."""
    for sampling, expected in (("balanced", [1 / 3] * 3), ("proportional", [1 / 6, 2 / 6, 3 / 6])):
        sampler = ConditionalBatches(_groups(sampling), 4000, torch.Generator().manual_seed(2))
        conditions = sampler.draw().conditions
        assert conditions is not None
        shares = torch.bincount(conditions, minlength=3).double() / 4000
        assert torch.allclose(shares, torch.tensor(expected, dtype=torch.float64), atol=0.03)


def test_a_bound_network_reads_one_code_or_one_per_cell() -> None:
    torch.manual_seed(0)
    potential = ConditionalPotential(3, 2, ConditionalConfig(hidden=(8, 8)))
    x, code = torch.randn(5, 3), torch.randn(2)
    one = ConditionBoundModule(potential, code)(x)
    per_cell = ConditionBoundModule(potential, code.expand(5, -1))(x)
    assert torch.equal(one, potential(x, code.expand(5, -1)))
    assert torch.equal(per_cell, one)
