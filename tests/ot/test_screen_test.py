"""The screen's response test (cellw1.ot.screen_test): uniform p-values without effect, tiny ones with, BH q-values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cellw1.ot.screen_test import ControlReference, q_values, response_test


@pytest.fixture(scope="module")
def gaussian() -> tuple[ControlReference, np.random.Generator, np.ndarray]:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(8, 8))
    return ControlReference(rng.normal(size=(2_000, 8)) @ mixing), rng, mixing


def test_null_p_values_are_uniform(gaussian) -> None:
    reference, rng, mixing = gaussian
    p = [
        response_test(reference, rng.normal(size=(int(rng.integers(20, 120)), 8)) @ mixing).p_value for _ in range(400)
    ]
    assert stats.kstest(p, "uniform").pvalue > 0.05
    assert 0.02 < np.mean(np.array(p) <= 0.05) < 0.09  # about 5% at level 0.05 (400 groups)


def test_a_shift_reaches_far_below_1e5(gaussian) -> None:
    reference, rng, mixing = gaussian
    shifted = rng.normal(size=(50, 8)) @ mixing + 2.0 * mixing[0]
    test = response_test(reference, shifted)
    assert test.p_value < 1e-10
    assert test.energy > 0.1
    assert test.cells == 50


def test_bh_q_values_known_answer() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.02, 0.05, 0.9])
    # BH: q_(i) = min_{j >= i} p_(j) m / j with m = 6: the five small ones all 0.06, the last 0.9
    np.testing.assert_allclose(q_values(p), [0.06, 0.06, 0.06, 0.06, 0.06, 0.9])
    np.testing.assert_allclose(q_values(p), multipletests(p, method="fdr_bh")[1])


def test_reference_needs_cells() -> None:
    with pytest.raises(ValueError, match="more cells"):
        ControlReference(np.zeros((5, 8)))
