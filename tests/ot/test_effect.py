"""The test for a response (cellw1.ot.effect) and what a map does without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from cellw1 import W1Config, fit_map
from cellw1.errors import ConfigError
from cellw1.ot.effect import effect_test, resolved_share
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


def test_resolved_share_estimates_the_signal_share_of_the_mean_shift():
    """``|delta|^2 / (|delta|^2 + noise)``: 0 without a shift, 1/2 when the shift equals the
    noise of the means, near 1 for a shift far above it (20 dimensions, 400 cells a side).
    """
    d, n = 20, 400
    noise = 2 * d / n  # tr(I)/n + tr(I)/n
    rng = np.random.default_rng(0)

    def share(shift: float) -> float:
        x = torch.from_numpy(rng.normal(size=(n, d)))
        y = torch.from_numpy(rng.normal(size=(n, d)) + np.eye(d)[0] * shift)
        return resolved_share(x, y, n, n)

    null = [share(0.0) for _ in range(40)]
    half = [share(np.sqrt(noise)) for _ in range(40)]
    assert np.median(null) < 0.1
    assert min(null) >= 0.0
    assert 0.4 <= np.mean(half) <= 0.6
    assert share(5.0) > 0.99


def test_resolved_share_counts_the_noise_of_the_whole_groups():
    """Sampled cells measure the spread; the noise is that of the means of all the groups' cells."""
    x, y = (torch.from_numpy(a) for a in groups(4, 0.3, n=300, m=300, d=10))
    signal = float(((y.mean(0) - x.mean(0)) ** 2).sum()) - float(x.var(0).sum() + y.var(0).sum()) / 300
    sampled = resolved_share(x, y, 3_000, 3_000)
    assert sampled == pytest.approx(signal / (signal + float(x.var(0).sum() + y.var(0).sum()) / 3_000))
    assert sampled > resolved_share(x, y, 300, 300) > 0


def test_a_response_in_spread_is_resolved_by_the_energy_distance():
    """Cells that spread out without moving their mean: the mean shift resolves little of the
    difference, the energy distance most of it, and the test reports the larger.
    """
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(500, 40)), 1.5 * rng.normal(size=(500, 40))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    distances = torch.cdist(torch.cat((tx, ty)), torch.cat((tx, ty)))
    n = 500
    energy = 2 * float(distances[:n, n:].mean()) - 2 * float(distances[:n, :n].sum() + distances[n:, n:].sum()) / (
        2 * n * (n - 1)
    )
    within = float(distances[:n, :n].sum() + distances[n:, n:].sum()) / (n * (n - 1) * n)
    assert resolved_share(tx, ty, n, n) < 0.5  # 0.09-0.24 on 20 seeds
    assert resolved_share(tx, ty, n, n, distances) == pytest.approx(energy / (energy + within))
    assert energy / (energy + within) > 0.8
    result = effect_test(cells(x), cells(y), resamples=19)
    assert result.resolved == pytest.approx(resolved_share(tx, ty, n, n, distances), rel=1e-3)  # float32 distances


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
    assert tmap.moves
    assert tmap.info["effect"]["p_value"] <= 0.05
    moved = tmap.transport(x.astype(np.float32)).mean(0) - x.mean(0)
    assert moved[0] > 0.5


def test_config_checks_the_level():
    for bad in (0.0, 1.0, -0.1, "0.05"):
        with pytest.raises(ConfigError, match="effect_alpha"):
            W1Config(effect_alpha=bad)
    assert W1Config.paper().effect_alpha is None
