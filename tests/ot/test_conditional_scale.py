"""The conditional fit's per-condition state at scale: built when used, bounded, the same values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cellw1.ot.conditional import Condition, ConditionalConfig, ConditionalPotential, ConditionalStepSize, solver
from cellw1.ot.conditional.solver import ConditionGroups, ConditionPools, _validation_dual
from cellw1.ot.potential import dual_value
from cellw1.ot.sampling import MemoryCells
from cellw1.pp.calibration import SAMPLE_CELLS
from cellw1.tl.conditional.fit import _groups, _pooled_share


def _fixture(n_conditions: int = 7) -> tuple[ConditionalPotential, torch.Tensor, ConditionGroups]:
    torch.manual_seed(0)
    source = MemoryCells(torch.randn(130, 3))
    targets = [MemoryCells(torch.randn(17 + 5 * c, 3) + c) for c in range(n_conditions)]
    config = ConditionalConfig(hidden=(8, 8), condition_dim=2)
    groups = ConditionGroups(source, targets, config, torch.Generator().manual_seed(0))
    return ConditionalPotential(3, 2, config), torch.randn(n_conditions, 2), groups


def test_validation_dual_in_passes_is_the_sum_of_each_condition() -> None:
    potential, codes, groups = _fixture()
    x = groups.val_source
    expected = sum(
        w * dual_value(solver.ConditionBoundModule(potential, codes[c]), x, groups.val_targets[c])
        for c, w in enumerate(groups.pi.tolist())
    )
    for rows in (1, 40, 1 << 15):  # one condition per pass, a few, all of them
        got = _validation_dual(potential, codes, x, groups.val_targets, groups.pi, rows=rows)
        assert abs(got - expected) < 1e-5 * max(1.0, abs(expected))


def test_energy_pools_are_built_when_drawn_and_rebuilt_the_same(monkeypatch) -> None:
    monkeypatch.setattr(solver, "MAX_POOLS", 2)
    potential, codes, groups = _fixture()
    step = ConditionalStepSize(3, 2, (8,))
    pools = ConditionPools(step, potential, codes, groups, ConditionalConfig(), torch.Generator().manual_seed(3))
    pools.new_pools()
    assert not pools.built
    first = pools.pool(4)
    rows_x, rows_y = pools.rows[4]
    assert torch.equal(first.x, groups.source[rows_x])
    assert torch.equal(first.y, groups.targets[4][rows_y])
    pools.pool(0), pools.pool(1)  # the pool of condition 4 is let go
    assert len(pools.built) == 2
    assert 4 not in pools.built
    again = pools.pool(4)
    assert again is not first
    assert torch.equal(again.x, first.x)
    assert torch.equal(again.u, first.u)
    assert torch.equal(again.y, first.y)
    assert torch.isfinite(pools.loss())


def test_groups_sorted_once_are_the_rows_of_each_label() -> None:
    rng = np.random.default_rng(0)
    labels = pd.Series(rng.choice(["a", "b", "c", "ctrl", None], 997), dtype=object)
    doses = rng.choice([1.0, 2.0], 997)
    for given in (None, doses):
        groups = _groups(labels, given, ["c", "a"])
        assert [k[0] for k in groups] == (["c", "a"] if given is None else ["c", "c", "a", "a"])
        for (label, dose), rows in groups.items():
            expected = np.flatnonzero(labels.to_numpy() == label)
            if given is not None:
                expected = expected[given[expected] == dose]
            assert np.array_equal(rows, expected)


def test_the_pooled_calibration_sample_is_bounded() -> None:
    for n in (1, 7, 100, 101, 3_000, 10_000):
        share = _pooled_share(n)
        assert share.shape == (n,)
        assert share.sum() <= 2 * SAMPLE_CELLS
        assert (share[share > 0] >= 50).all()
        if n <= SAMPLE_CELLS // 50:  # few conditions: each gives its share, as before
            assert (share == max(SAMPLE_CELLS // n, 50)).all()


def test_moves_follows_a_new_list_of_unresponsive_conditions() -> None:
    from cellw1.ot.conditional import ConditionalMap, ConditionEncoder

    config = ConditionalConfig(hidden=(8, 8), condition_dim=2)
    cmap = ConditionalMap(
        ConditionEncoder(3, 2), ConditionalPotential(3, 2, config), ConditionalStepSize(3, 2, (8,)), config
    )
    a, b = Condition((0,), None, None), Condition((2, 1), None, None)
    assert cmap.moves(a)
    assert cmap.moves(b)
    cmap.unresponsive = [Condition((1, 2), None, None)]
    assert cmap.moves(a)
    assert not cmap.moves(b)
    cmap.unresponsive = [a]
    assert not cmap.moves(a)
    assert cmap.moves(b)
