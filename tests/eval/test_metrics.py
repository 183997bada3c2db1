"""Known answers for the evaluation metrics and the DE-gene selection."""

from __future__ import annotations

import logging

import numpy as np
import ot
import pytest
import scipy.sparse as sp
import torch
from scipy.spatial.distance import cdist

from cellw1.errors import ConfigError, InputError
from cellw1.eval.degenes import top_de_genes
from cellw1.eval.metrics import (
    DEFAULT_GAMMAS,
    METRICS,
    Metric,
    compute_metrics,
    energy_distance,
    l2,
    mmd,
    r2,
    subsample_rows,
    wasserstein1,
)


@pytest.fixture
def clouds() -> tuple[np.ndarray, np.ndarray]:
    """Uneven, seeded samples (17 vs 29 cells, 5 features) so shape bugs surface."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(17, 5)), rng.normal(loc=0.5, size=(29, 5))


def naive_mmd(x: np.ndarray, y: np.ndarray, gammas: np.ndarray) -> float:
    """One full kernel matrix per gamma and block, as in the plain definition."""
    values = []
    for g in gammas:
        kxx = np.exp(-g * cdist(x, x, "sqeuclidean")).mean()
        kyy = np.exp(-g * cdist(y, y, "sqeuclidean")).mean()
        kxy = np.exp(-g * cdist(x, y, "sqeuclidean")).mean()
        values.append(kxx + kyy - 2 * kxy)
    return float(np.mean(values))


# -- r2 and l2 ----------------------------------------------------------------------------------
def test_r2_is_one_for_identical_and_affinely_related_means(clouds):
    x, _ = clouds
    assert r2(x, x) == pytest.approx(1.0, abs=1e-12)
    assert r2(2 * x + 1, x) == pytest.approx(1.0, abs=1e-12)


def test_r2_is_the_squared_pearson_correlation(clouds):
    x, y = clouds
    r = np.corrcoef(x.mean(0), y.mean(0))[0, 1]
    assert r2(x, y) == pytest.approx(r**2, rel=1e-12)
    assert r2(x, -y) == pytest.approx(r**2, rel=1e-12)  # squared: the sign of r is lost
    assert r2(x, y) < 0.99


def test_r2_of_constant_means_is_nan_with_a_warning(caplog):
    x = np.ones((10, 4))
    y = np.random.default_rng(1).normal(size=(12, 4))
    with caplog.at_level(logging.WARNING, logger="cellw1.eval.metrics"):
        assert np.isnan(r2(x, y))
        assert np.isnan(r2(y[:, :1], y[:, :1]))  # one feature: no correlation exists
    assert "undefined" in caplog.text


def test_l2_of_a_translation_is_its_length(clouds):
    x, _ = clouds
    t = np.array([3.0, -4.0, 0.0, 0.0, 12.0])
    assert l2(x + t, x) == pytest.approx(13.0, rel=1e-12)
    assert l2(x, x) == 0.0


# -- mmd -----------------------------------------------------------------------------------------
def test_mmd_zero_on_identical_samples_symmetric_and_growing_with_shift(clouds):
    x, y = clouds
    assert abs(mmd(x, x)) < 1e-10
    assert mmd(x, y) == pytest.approx(mmd(y, x), rel=1e-12)
    shifts = [mmd(x + s, x) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(shifts, shifts[1:], strict=False))
    assert shifts[0] > 0


def test_mmd_equals_the_naive_loop_over_gammas(clouds):
    x, y = clouds
    expected = naive_mmd(x, y, DEFAULT_GAMMAS)
    assert expected > 0.01
    assert mmd(x, y) == pytest.approx(expected, rel=1e-10)
    assert mmd(x, y, gammas=[0.3, 2.0]) == pytest.approx(naive_mmd(x, y, np.array([0.3, 2.0])), rel=1e-10)


@pytest.mark.parametrize(("scale", "shift"), [(6.0, 0.0), (1.0, 40.0)])
def test_mmd_matches_the_naive_loop_where_kernels_underflow(scale, shift):
    """Wide clouds (partly underflowing kernels) and far-apart clouds (all of K_xy underflows)."""
    rng = np.random.default_rng(2)
    x, y = scale * rng.normal(size=(23, 4)), scale * rng.normal(size=(31, 4)) + shift
    assert cdist(x, y, "sqeuclidean").max() * DEFAULT_GAMMAS[0] > 746  # the fast paths are used
    assert mmd(x, y) == pytest.approx(naive_mmd(x, y, DEFAULT_GAMMAS), rel=1e-10)


def test_mmd_chunking_matches_one_block(monkeypatch):
    """Many row blocks (upper-triangle bookkeeping) give the same sum as one block."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(53, 3)), rng.normal(size=(41, 3)) * 1.5
    expected = naive_mmd(x, y, DEFAULT_GAMMAS)
    monkeypatch.setattr("cellw1.eval.metrics.CHUNK_ELEMENTS", 100)  # 1-2 rows per block
    assert mmd(x, y) == pytest.approx(expected, rel=1e-10)
    assert energy_distance(x, y) == pytest.approx(
        2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean(), rel=1e-10
    )


def test_mmd_rejects_bad_gammas(clouds):
    x, y = clouds
    with pytest.raises(ConfigError, match="gammas"):
        mmd(x, y, gammas=[1.0, -2.0])
    with pytest.raises(ConfigError, match="gammas"):
        mmd(x, y, gammas=[])


# -- energy distance -----------------------------------------------------------------------------
def test_energy_distance_known_answers(clouds):
    x, y = clouds
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    expected = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-12)
    assert energy_distance(y, x) == pytest.approx(expected, rel=1e-12)
    # One point each, a distance 5 apart: 2 * 5 - 0 - 0.
    assert energy_distance([[0.0, 0.0]], [[3.0, 4.0]]) == pytest.approx(10.0)


# -- wasserstein1 --------------------------------------------------------------------------------
def test_w1_of_a_translation_is_its_length(clouds):
    _, y = clouds
    t = np.array([1.0, 2.0, 2.0, 0.0, 0.0])  # |t| = 3
    assert wasserstein1(y + t, y) == pytest.approx(3.0, rel=1e-9)
    assert wasserstein1(y, y) == pytest.approx(0.0, abs=1e-12)


def test_w1_equals_pot_emd2_and_is_symmetric(clouds):
    x, y = clouds
    expected = ot.emd2(np.full(17, 1 / 17), np.full(29, 1 / 29), cdist(x, y))
    assert wasserstein1(x, y) == pytest.approx(expected, rel=1e-10)
    assert wasserstein1(y, x) == pytest.approx(expected, rel=1e-10)


def test_w1_scales_with_the_data(clouds):
    x, y = clouds
    assert wasserstein1(2.5 * x, 2.5 * y) == pytest.approx(2.5 * wasserstein1(x, y), rel=1e-9)


# -- subsampling ---------------------------------------------------------------------------------
def test_subsample_rows_respects_max_points_and_seed():
    x = np.arange(200.0).reshape(100, 2)
    a = subsample_rows(x, 30, np.random.default_rng(5))
    b = subsample_rows(x, 30, np.random.default_rng(5))
    c = subsample_rows(x, 30, np.random.default_rng(6))
    assert a.shape == (30, 2)
    assert len(np.unique(a[:, 0])) == 30  # without replacement
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert subsample_rows(x, 100, np.random.default_rng(5)) is x
    assert subsample_rows(x, None, np.random.default_rng(5)) is x


def test_metric_subsampling_is_seeded_and_uses_max_points():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(80, 3)), rng.normal(size=(90, 3)) + 0.3
    stream = np.random.default_rng(7)
    xs, ys = subsample_rows(x, 25, stream), subsample_rows(y, 25, stream)
    expected = ot.emd2(np.full(25, 1 / 25), np.full(25, 1 / 25), cdist(xs, ys))
    assert wasserstein1(x, y, max_points=25, seed=7) == pytest.approx(expected, rel=1e-10)
    assert wasserstein1(x, y, max_points=25, seed=7) == wasserstein1(x, y, max_points=25, seed=7)
    assert wasserstein1(x, y, max_points=25, seed=8) != wasserstein1(x, y, max_points=25, seed=7)
    assert mmd(x, y, max_points=25, seed=7) == pytest.approx(naive_mmd(xs, ys, DEFAULT_GAMMAS), rel=1e-10)
    assert energy_distance(x, y, max_points=25, seed=7) != energy_distance(x, y)
    with pytest.raises(ConfigError, match="max_points"):
        mmd(x, y, max_points=0)


# -- registry and inputs ---------------------------------------------------------------------------
def test_registry_lists_the_five_metrics():
    assert list(METRICS) == ["r2", "l2", "mmd", "energy", "w1"]
    assert all(isinstance(m, Metric) and m.name == k for k, m in METRICS.items())
    assert METRICS["r2"].higher_is_better
    assert not any(METRICS[k].higher_is_better for k in ("l2", "mmd", "energy", "w1"))
    with pytest.raises(AttributeError):
        METRICS["r2"].name = "other"  # frozen


def test_compute_metrics_matches_the_functions(clouds):
    x, y = clouds
    out = compute_metrics(x, y)
    assert list(out) == list(METRICS)
    assert out["l2"] == l2(x, y)
    assert out["mmd"] == mmd(x, y)
    assert out["w1"] == wasserstein1(x, y)
    assert compute_metrics(x, y, ["w1", "r2"]) == {"w1": wasserstein1(x, y), "r2": r2(x, y)}
    assert compute_metrics(x, y, "l2") == {"l2": l2(x, y)}


def test_compute_metrics_unknown_name_lists_the_available_ones(clouds):
    x, y = clouds
    with pytest.raises(InputError, match="available: r2, l2, mmd, energy, w1"):
        compute_metrics(x, y, ["r2", "pearson"])


def test_sparse_and_torch_inputs_give_the_same_numbers(clouds):
    x, y = clouds
    expected = compute_metrics(x, y)
    assert compute_metrics(sp.csr_matrix(x), sp.csr_matrix(y)) == pytest.approx(expected, rel=1e-12)
    got = compute_metrics(torch.tensor(x, requires_grad=True), torch.tensor(y))
    assert got == pytest.approx(expected, rel=1e-12)


def test_inputs_are_not_modified(clouds):
    x, y = clouds
    x0, y0 = x.copy(), y.copy()
    compute_metrics(x, y)
    mmd(x, y, max_points=10)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


@pytest.mark.parametrize("name", list(METRICS))
def test_bad_inputs_raise_input_error(name, clouds):
    x, y = clouds
    fn = METRICS[name].fn
    with pytest.raises(InputError, match="5 features but obs has 4"):
        fn(x, y[:, :4])
    with pytest.raises(InputError, match="2-D"):
        fn(x[:, 0], y[:, 0])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fn(bad, y)
    with pytest.raises(InputError, match="dtype"):
        fn(np.array([["a", "b"]]), y)
    with pytest.raises(InputError, match="at least one cell"):
        fn(np.empty((0, 5)), y)


# -- DE genes --------------------------------------------------------------------------------------
def synthetic_expression(sparse: bool = False):
    rng = np.random.default_rng(4)
    n_genes = 12
    control = np.log1p(rng.poisson(3.0, size=(60, n_genes)).astype(float))
    perturbed = np.log1p(rng.poisson(3.0, size=(45, n_genes)).astype(float))
    perturbed[:, 3] += 2.0
    perturbed[:, 7] += 1.5
    perturbed[:, 5] -= 0.5  # down-regulated: ranked last, not first
    names = [f"g{i}" for i in range(n_genes)]
    if sparse:
        return sp.csr_matrix(control), sp.csr_matrix(perturbed), names
    return control, perturbed, names


@pytest.mark.parametrize("sparse", [False, True])
def test_top_de_genes_finds_the_up_regulated_genes(sparse):
    control, perturbed, names = synthetic_expression(sparse)
    c0, p0 = control.copy(), perturbed.copy()
    top = top_de_genes(control, perturbed, names, n_genes=2)
    assert top == ["g3", "g7"]
    if sparse:
        assert (control != c0).nnz == 0
        assert (perturbed != p0).nnz == 0
    else:
        np.testing.assert_array_equal(control, c0)
        np.testing.assert_array_equal(perturbed, p0)


def test_top_de_genes_returns_all_genes_ranked_when_fewer_than_asked():
    control, perturbed, names = synthetic_expression()
    top = top_de_genes(control, perturbed, names, n_genes=50)
    assert sorted(top) == sorted(names)
    assert top[:2] == ["g3", "g7"]
    assert top[-1] == "g5"
    assert top_de_genes(control, perturbed, names, n_genes=2, method="t-test") == ["g3", "g7"]


def test_top_de_genes_in_either_direction_puts_the_down_regulated_gene_among_the_first():
    control, perturbed, names = synthetic_expression()
    top = top_de_genes(control, perturbed, names, n_genes=3, direction="either")
    assert sorted(top) == ["g3", "g5", "g7"]  # g5 goes down: last when ranked up, third by |score|
    assert top[0] == "g3"


def test_top_de_genes_bad_input():
    control, perturbed, names = synthetic_expression()
    with pytest.raises(InputError, match="gene_names has 11"):
        top_de_genes(control, perturbed, names[:-1])
    with pytest.raises(InputError, match="same genes"):
        top_de_genes(control, perturbed[:, :-1], names)
    with pytest.raises(InputError, match="duplicates"):
        top_de_genes(control, perturbed, ["g"] * 12)
    with pytest.raises(ConfigError, match="method"):
        top_de_genes(control, perturbed, names, method="logreg")
    with pytest.raises(ConfigError, match="n_genes"):
        top_de_genes(control, perturbed, names, n_genes=0)
    with pytest.raises(ConfigError, match="direction 'down'"):
        top_de_genes(control, perturbed, names, direction="down")


def test_top_de_genes_keeps_torch_thread_setting() -> None:
    """Scanpy's ranking resets torch's thread count; an oversubscribed torch is 10x slower."""
    import torch

    from cellw1.eval.degenes import top_de_genes

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = np.random.default_rng(0).random((60, 8)).astype(np.float32)
        top_de_genes(x[:30], x[30:], [f"g{i}" for i in range(8)], 3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
