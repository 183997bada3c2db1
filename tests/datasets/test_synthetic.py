"""The built-in synthetic perturbation data set: shapes, counts, labels, reproducibility, effects."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp

from cellw1.datasets import synthetic_perturbation
from cellw1.errors import ConfigError


def log_normalise(X: sp.csr_matrix) -> np.ndarray:
    """Scale each cell to the median library size, then log1p."""
    dense = X.toarray().astype(np.float64)
    totals = dense.sum(axis=1, keepdims=True)
    return np.log1p(dense / totals * np.median(totals))


@pytest.fixture(scope="module")
def adata():
    return synthetic_perturbation(n_control=700, n_perturbed=500, n_genes=80, n_cell_types=3, n_perturbations=3, seed=3)


def test_shape_labels_and_names(adata):
    assert adata.shape == (700 + 3 * 500, 80)
    cond = adata.obs["condition"].astype(str)
    assert cond.value_counts().to_dict() == {"control": 700, "pertA": 500, "pertB": 500, "NULL": 500}
    assert list(adata.obs["condition"].cat.categories) == ["control", "pertA", "pertB", "NULL"]
    assert set(adata.obs["cell_type"].astype(str)) == {"type0", "type1", "type2"}
    assert set(adata.obs["batch"].astype(str)) == {"batch0", "batch1"}
    assert adata.obs_names.is_unique
    assert list(adata.var_names[:3]) == ["g0000", "g0001", "g0002"]
    assert adata.var_names.is_unique
    assert "SYNTHETIC" in adata.uns["synthetic"]["description"]
    assert adata.uns["synthetic"]["programs"]["NULL"] == []


@pytest.mark.parametrize(
    ("n_perturbations", "expected"),
    [(1, ["pertA"]), (2, ["pertA", "NULL"]), (4, ["pertA", "pertB", "pertC", "NULL"])],
)
def test_perturbation_names(n_perturbations, expected):
    a = synthetic_perturbation(n_control=20, n_perturbed=10, n_genes=12, n_perturbations=n_perturbations)
    assert list(a.obs["condition"].cat.categories) == ["control", *expected]
    assert a.n_obs == 20 + 10 * n_perturbations


def test_counts_are_sparse_non_negative_integers(adata):
    assert sp.isspmatrix_csr(adata.X) or isinstance(adata.X, sp.csr_array)
    data = adata.X.data
    assert np.all(data >= 0)
    np.testing.assert_array_equal(data, np.round(data))
    totals = np.asarray(adata.X.sum(axis=1)).ravel()
    # plausible UMI libraries
    assert totals.min() > 200
    assert 1500 < np.median(totals) < 6000
    assert adata.X.max() > 20  # detected as counts by the preprocessing rule
    zeros = 1.0 - adata.X.nnz / np.prod(adata.shape)
    assert 0.02 < zeros < 0.9


def test_same_seed_same_data_other_seed_other_data():
    a = synthetic_perturbation(n_control=100, n_perturbed=80, n_genes=30, seed=7)
    b = synthetic_perturbation(n_control=100, n_perturbed=80, n_genes=30, seed=7)
    c = synthetic_perturbation(n_control=100, n_perturbed=80, n_genes=30, seed=8)
    assert (a.X != b.X).nnz == 0
    assert a.obs.equals(b.obs)
    assert (a.X != c.X).nnz > 0


def test_null_shift_is_much_smaller_than_real_effects(adata):
    values = log_normalise(adata.X)
    cond = adata.obs["condition"].astype(str).to_numpy()
    control_mean = values[cond == "control"].mean(axis=0)
    shift = {p: np.linalg.norm(values[cond == p].mean(axis=0) - control_mean) for p in ("pertA", "pertB", "NULL")}
    assert shift["NULL"] < 0.3 * shift["pertA"]
    assert shift["NULL"] < 0.3 * shift["pertB"]


def test_response_is_cell_type_specific(adata):
    """The main program of pertA goes up in type0 and down in type1 (nonlinear in the state)."""
    values = log_normalise(adata.X)
    cond = adata.obs["condition"].astype(str).to_numpy()
    ctype = adata.obs["cell_type"].astype(str).to_numpy()
    programs = adata.uns["synthetic"]["programs"]["pertA"]
    genes = adata.var_names.get_indexer(programs)
    change = {}
    for t in ("type0", "type1"):
        pert = values[(cond == "pertA") & (ctype == t)][:, genes].mean(axis=0)
        ctrl = values[(cond == "control") & (ctype == t)][:, genes].mean(axis=0)
        change[t] = pert - ctrl
    # the same genes move in opposite directions in the two types for a sizeable share of them
    opposite = np.mean(np.sign(change["type0"]) != np.sign(change["type1"]))
    assert opposite > 0.3


def test_defaults_are_fast():
    synthetic_perturbation(n_control=50, n_perturbed=50, n_genes=20)  # warm up lazy imports
    start = time.perf_counter()
    a = synthetic_perturbation()
    assert time.perf_counter() - start < 1.0
    assert a.shape == (1500 + 2 * 1500, 200)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_control": 0},
        {"n_genes": 5},
        {"n_perturbations": 0},
        {"n_cell_types": 1.5},
        {"seed": -1},
        {"n_perturbed": True},
    ],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        synthetic_perturbation(**kwargs)
