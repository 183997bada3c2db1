"""The one energy distance (cellw1.ot.energy): known answers, both paths, the metric and the selector call it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from torch import nn

from cellw1.eval import metrics
from cellw1.ot.config import W1Config
from cellw1.ot.energy import StepSizeSelector, ValidationMatch, energy_distance, mean_distance


@pytest.fixture
def clouds() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    return rng.normal(size=(17, 3)), rng.normal(size=(29, 3)) + [1.0, 0.0, -0.5]


def test_known_answer_on_both_paths() -> None:
    """Seven cells at the origin against eleven at (3, 4): 2 * 5 - 0 - 0 = 10."""
    x, y = np.zeros((7, 2)), np.tile([3.0, 4.0], (11, 1))
    assert energy_distance(x, y) == pytest.approx(10.0, rel=1e-12)
    assert energy_distance(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)) == (
        pytest.approx(10.0, rel=1e-6)
    )


def test_arrays_are_the_v_statistic(clouds: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = clouds
    expected = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-12)


def test_blocks_give_the_one_block_sum(clouds: tuple[np.ndarray, np.ndarray]) -> None:
    """One or two rows a block (upper-triangle bookkeeping within a sample) change only round-off."""
    x, y = clouds
    assert mean_distance(x, block_elements=20) == pytest.approx(cdist(x, x).mean(), rel=1e-12)
    assert mean_distance(x, y, block_elements=20) == pytest.approx(cdist(x, y).mean(), rel=1e-12)


def test_tensors_and_arrays_agree(clouds: tuple[np.ndarray, np.ndarray]) -> None:
    """The training path (float32 tensors) and the scoring path (float64 arrays) compute one quantity."""
    x, y = clouds
    as_tensor = energy_distance(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))
    assert as_tensor == pytest.approx(energy_distance(x, y), rel=1e-5)


def test_the_metric_calls_it(clouds: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = clouds
    assert metrics.energy_distance(x, y) == energy_distance(x, y)
    assert metrics.energy_distance(x, x) == 0.0


class _Constant(nn.Module):
    """A step size of ``value`` for every cell."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(len(x))


def test_selector_scores_the_weighted_sum_over_maps() -> None:
    """Two maps weighted 0.25 and 0.75: the score is the weighted sum of their energy distances."""
    generator = torch.Generator().manual_seed(0)
    step = _Constant(1.0)
    u = torch.zeros(40, 2)
    u[:, 0] = -1.0  # cells move by +1 along the first axis
    x = torch.randn(40, 2, generator=generator)
    targets = [
        torch.randn(30, 2, generator=generator) + torch.tensor([1.0, 0.0]),
        torch.randn(25, 2, generator=generator),
    ]
    matches = [ValidationMatch(step, x, u, y, w) for y, w in zip(targets, (0.25, 0.75), strict=True)]
    selector = StepSizeSelector(step, matches, W1Config())
    score = selector(10, torch.tensor(0.0))
    moved = x + torch.tensor([1.0, 0.0])
    expected = 0.25 * energy_distance(moved, targets[0]) + 0.75 * energy_distance(moved, targets[1])
    assert score == pytest.approx(expected, rel=1e-6)
    assert selector.history["val_energy"] == [score]
    assert selector.best_step == 10
