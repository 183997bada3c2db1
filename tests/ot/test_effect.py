"""The test for a response (cellw1.ot.effect) and what a map does without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from cellw1 import W1Config, fit_map
from cellw1.errors import ConfigError
from cellw1.ot.effect import effect_test
from cellw1.ot.sampling import MemoryCells
from cellw1.ot.transport import TransportMap

SHORT = W1Config(potential_iters=100, regression_iters=50, energy_iters=50, eval_every=50)


def cells(x: np.ndarray) -> MemoryCells:
    return MemoryCells(torch.as_tensor(x, dtype=torch.float32))


def groups(seed: int, shift: float, n: int = 300, m: int = 200, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) + np.eye(d)[0] * shift


def test_statistic_is_the_energy_distance():
    x, y = groups(0, 0.5, n=120, m=80)
    expected = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    result = effect_test(cells(x), cells(y), resamples=19)
    assert result.energy == pytest.approx(expected, rel=1e-4)
    assert result.cells == (120, 80)
    assert 1 / 20 <= result.p_value <= 1


def test_level_under_no_effect_and_power_under_a_shift():
    null = [effect_test(*map(cells, groups(s, 0.0)), seed=s).p_value for s in range(30)]
    shifted = [effect_test(*map(cells, groups(s, 0.5)), seed=s).p_value for s in range(10)]
    assert np.mean(np.array(null) <= 0.05) <= 0.15  # about 5% of null pairs are called different
    assert np.median(null) > 0.2
    assert max(shifted) <= 0.01  # half a standard deviation, 200 cells: always found


def test_large_groups_are_sampled_with_the_seed():
    x, y = groups(1, 0.3, n=900, m=700)
    first = effect_test(cells(x), cells(y), max_cells=400, seed=3)
    assert first.cells == (400, 400)
    assert first == effect_test(cells(x), cells(y), max_cells=400, seed=3)


def test_a_map_without_a_response_leaves_cells_where_they_are(tmp_path):
    x, y = groups(2, 0.0, n=600, m=400)
    tmap = fit_map(x, y, SHORT, seed=0)
    assert tmap.info["effect"]["p_value"] > 0.05
    assert not tmap.moves
    assert np.array_equal(tmap.transport(x.astype(np.float32)), x.astype(np.float32))
    assert np.all(tmap.step_size(x) == 0)
    loaded = TransportMap.load(tmap.save(tmp_path / "still.safetensors"))
    assert not loaded.moves
    assert np.array_equal(loaded.transport(x.astype(np.float32)), x.astype(np.float32))
    assert fit_map(x, y, SHORT.replace(effect_alpha=None), seed=0).moves  # the test switched off


def test_a_map_with_a_response_moves_cells():
    x, y = groups(2, 1.0, n=600, m=400)
    tmap = fit_map(x, y, SHORT, seed=0)
    assert tmap.moves and tmap.info["effect"]["p_value"] <= 0.05
    moved = tmap.transport(x.astype(np.float32)).mean(0) - x.mean(0)
    assert moved[0] > 0.5


def test_config_checks_the_level():
    for bad in (0.0, 1.0, -0.1, "0.05"):
        with pytest.raises(ConfigError, match="effect_alpha"):
            W1Config(effect_alpha=bad)
    assert W1Config.paper().effect_alpha is None
