"""The one array check of every layer, ``cellw1.checks.as_array``: what it accepts, refuses and copies."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellw1 import InputError
from cellw1.checks import as_array, as_points


def test_accepts_arrays_lists_tensors_and_sparse_matrices() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    for given in (x, x.tolist(), torch.from_numpy(x), sp.csr_matrix(x), sp.coo_matrix(x)):
        out = as_array(given, "x")
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.float64
        assert np.array_equal(out, x)


def test_sparse_stays_sparse_and_dtype_none_keeps_integers() -> None:
    counts = sp.random(20, 5, density=0.3, format="coo", random_state=0, dtype=np.float64).astype(np.int64)
    out = as_array(counts, "X", dtype=None, sparse=True)
    # COO becomes CSR, integers stay integers
    assert out.format == "csr"
    assert out.dtype == np.int64
    csc = counts.tocsc()
    assert as_array(csc, "X", dtype=None, sparse=True) is csc  # no copy when nothing changes


def test_copy_never_shares_memory_and_otherwise_avoids_copies() -> None:
    x = np.ones((5, 2))
    assert as_array(x, "x") is x
    assert not np.may_share_memory(as_array(x, "x", copy=True), x)
    t = torch.ones(5, 2)
    assert not np.may_share_memory(as_array(t, "t", dtype=np.float32, copy=True), t.numpy())
    p = as_points(np.asfortranarray(np.ones((12, 3))), "p")
    assert p.dtype == torch.float32
    assert p.is_contiguous()


@pytest.mark.parametrize(
    ("given", "kwargs", "match"),
    [
        (np.array([["a", "b"]] * 3), {}, "x has dtype <U1; pass numeric values"),
        (np.ones((3, 2), dtype=complex), {}, "x is complex"),
        (torch.ones(3, 2, dtype=torch.complex64), {}, "x is complex"),
        (np.ones(4), {}, r"x must be 2-D \(n_cells, n_features\), got shape \(4,\)"),
        (np.ones((0, 3)), {}, r"x is empty \(shape \(0, 3\)\); at least one cell is needed"),
        (
            np.ones((3, 3)),
            {"min_rows": 10, "purpose": " to fit a map"},
            "x has 3 cells; at least 10 cells are needed to fit a map",
        ),
        (np.ones((3, 0)), {}, "x has no features"),
        ([[1.0], [2.0, 3.0]], {}, "x could not be read as an array"),
    ],
)
def test_bad_input_names_the_problem(given, kwargs, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match):
        as_array(given, "x", **kwargs)


def test_non_finite_rows_are_counted_in_dense_and_sparse_input() -> None:
    x = np.zeros((8, 3))
    x[2, 1], x[5, 0], x[5, 2] = np.nan, np.inf, -np.inf
    for given in (x, sp.csr_matrix(x), sp.csc_matrix(x)):
        with pytest.raises(InputError, match=r"NaN or inf in 2 rows \(first: \[2, 5\]\)"):
            as_array(given, "x", sparse=True)
    assert as_array(x, "x", finite=False) is x
    with pytest.raises(InputError, match="NaN or inf in 1 rows"):  # overflows float32
        as_array(np.array([[1e300, 0.0], [0.0, 0.0]]), "x", dtype=np.float32)


def test_an_anndata_where_values_go_is_named_as_such() -> None:
    """``pl.embedding(adata, ...)`` and the like: the error says it is an AnnData and what to pass."""
    import anndata as ad

    cells = ad.AnnData(np.ones((3, 2), dtype=np.float32))
    with pytest.raises(InputError, match=r"control is an AnnData; pass its values as an array: its \.X"):
        as_array(cells, "control")
