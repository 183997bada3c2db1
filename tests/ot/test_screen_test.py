"""The screen's response test (cellw1.ot.screen_test): uniform p-values without effect, also for heavy-tailed cells, tiny ones with, BH q-values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cellw1.ot.screen_test import ControlReference, Cumulants, cumulants, q_values, response_p_value, response_test


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


def _null_statistics(reference: ControlReference, cells: np.ndarray, n: int, groups: int, rng) -> np.ndarray:
    """Hotelling's ``T^2`` of ``groups`` random groups of ``n`` rows of ``cells`` against ``reference``."""
    white = (cells - reference.mean) @ reference.whiten
    mean = white[rng.integers(0, len(cells), size=(groups, n))].mean(1)
    return np.einsum("ij,ij->i", mean, mean) / (1.0 / n + 1.0 / reference.n_cells)


def test_without_excess_cumulants_the_p_value_is_the_f_test(gaussian) -> None:
    reference, _, _ = gaussian
    m, d = reference.n_cells, reference.rank
    t2 = np.array([1.0, 8.0, 20.0, 40.0, 80.0])
    f_test = stats.f.sf((m - d) / (d * (m - 1)) * t2, d, m - d)
    # Gaussian cells: the estimated cumulants are sampling noise, the p-values about the F test's
    np.testing.assert_allclose(response_p_value(reference, t2, 20), f_test, rtol=0.15)
    reference.cumulants, estimated = Cumulants(0.0, 0.0, 0.0, 0.0), reference.cumulants
    try:
        np.testing.assert_allclose(response_p_value(reference, t2, 20), f_test, rtol=1e-12)
    finally:
        reference.cumulants = estimated


def test_cumulants_of_exponential_cells_known_answer() -> None:
    # independent centred Exp(1) coordinates: cumulants (r - 1)!, so k3a = k3b = 4d, k4 = 6d, k6 = 120d
    d = 3
    z = np.random.default_rng(1).exponential(size=(6_000, d)) - 1.0
    k = cumulants(z)
    np.testing.assert_allclose([k.third_cross, k.third_trace, k.fourth], [4 * d, 4 * d, 6 * d], rtol=0.25)
    assert 30 * d < k.sixth < 300 * d  # a sixth cumulant from 6,000 cells is rough


def test_moments_of_the_statistic_against_simulation() -> None:
    # E T^2 = d, Var T^2 = 2d + k4 / n, third cumulant 8d + (12 k4 + 6 k3b + 4 k3a) / n + k6 / n^2
    d, n, draws = 3, 5, 200_000
    rng = np.random.default_rng(2)
    u = (rng.exponential(size=(draws, n, d)) - 1.0).mean(1)
    t2 = n * np.einsum("ij,ij->i", u, u)
    assert abs(t2.mean() - d) < 0.03
    assert abs(t2.var() / (2 * d + 6 * d / n) - 1) < 0.03
    third = np.mean((t2 - t2.mean()) ** 3)
    assert abs(third / (8 * d + (12 * 6 * d + 6 * 4 * d + 4 * 4 * d) / n + 120 * d / n**2) - 1) < 0.1


def test_heavy_tailed_null_p_values_keep_their_level() -> None:
    # skewed, heavy-tailed cells (independent Exp(1) coordinates, like counts): the mean of 20
    # cells is far from Gaussian in its tail
    rng = np.random.default_rng(3)
    d, n, groups = 20, 20, 20_000

    def cells(k: int) -> np.ndarray:
        return rng.exponential(size=(k, d))

    reference = ControlReference(cells(5_000))
    t2 = _null_statistics(reference, cells(50_000), n, groups, rng)
    m = reference.n_cells
    f_test = stats.f.sf((m - d) / (d * (m - 1)) * t2, d, m - d)
    low, high = stats.binom.ppf([0.0005, 0.9995], groups, 0.01) / groups  # 99.9% interval of the rate at 0.01
    assert np.mean(f_test <= 0.01) > high  # the F test alone calls too many
    assert low <= np.mean(response_p_value(reference, t2, n) <= 0.01) <= high
