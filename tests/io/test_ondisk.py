"""On-disk AnnData: reading rows from .h5ad/.zarr/backed data, writing predictions atomically."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr
from anndata.io import write_elem

from cellw1.errors import InputError
from cellw1.io.readers import open_disk_data
from cellw1.io.source import is_on_disk
from cellw1.io.writer import PredictionWriter

N_CELLS, N_GENES = 301, 13  # uneven so shape mix-ups surface

# Row sets exercising every read path: exactly contiguous, dense span (one slice then select),
# a few runs (slices per run), many scattered rows (fancy indexing), one row, the edges.
ROW_SETS = {
    "contiguous": np.arange(40, 97),
    "span": np.arange(10, 200, 3),
    "runs": np.r_[5:9, 120:124, 290:301],
    "scattered": np.arange(0, N_CELLS, 23),
    "single": np.array([150]),
    "edges": np.array([0, N_CELLS - 1]),
}


@pytest.fixture(autouse=True)
def _quiet_zarr_v2_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Writing zarr v2 data", category=UserWarning)
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        yield


def _adata(sparse: bool, seed: int = 0) -> anndata.AnnData:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.4, size=(N_CELLS, N_GENES)).astype(np.float32)
    obs = pd.DataFrame(
        {"condition": pd.Categorical(rng.choice(["ctrl", "drug"], N_CELLS)), "depth": rng.normal(size=N_CELLS)},
        index=[f"cell{i}" for i in range(N_CELLS)],
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(N_GENES)])
    adata = anndata.AnnData(sp.csr_matrix(counts) if sparse else counts, obs=obs, var=var)
    adata.layers["logged"] = np.log1p(counts)
    return adata


def _dense(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _write(adata: anndata.AnnData, path: Path) -> Path:
    if path.suffix == ".zarr":
        adata.write_zarr(path)
    else:
        adata.write_h5ad(path)
    return path


@pytest.fixture(params=["h5ad-dense", "h5ad-csr", "zarr-dense", "zarr-csr", "backed-dense", "backed-csr"])
def stored(request, tmp_path: Path):
    """(what to pass to open_disk_data, the same AnnData in memory)."""
    kind, layout = request.param.split("-")
    adata = _adata(sparse=layout == "csr")
    path = _write(adata, tmp_path / ("data.zarr" if kind == "zarr" else "data.h5ad"))
    if kind != "backed":
        yield path, adata
        return
    backed = anndata.read_h5ad(path, backed="r")
    yield backed, adata
    backed.file.close()


def test_read_rows_equal_in_memory_rows(stored) -> None:
    data, adata = stored
    expected = _dense(adata.X)
    with open_disk_data(data) as disk:
        mat = disk.matrix()
        assert mat.shape == (N_CELLS, N_GENES)
        assert mat.is_sparse == sp.issparse(adata.X)
        assert mat.dtype == np.float32
        for name, rows in ROW_SETS.items():
            got = mat.read(rows)
            assert isinstance(got, sp.csr_matrix if mat.is_sparse else np.ndarray), name
            assert got.dtype == np.float32, name
            np.testing.assert_array_equal(_dense(got), expected[rows], err_msg=name)
        np.testing.assert_array_equal(_dense(mat.read_slice(17, 42)), expected[17:42])
        assert mat.read(np.array([], dtype=np.int64)).shape == (0, N_GENES)


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_scattered_csr_rows_read_in_many_small_windows(tmp_path: Path, monkeypatch, suffix: str) -> None:
    import cellw1.io.readers

    monkeypatch.setattr(cellw1.io.readers, "SPARSE_GAP", 0)
    monkeypatch.setattr(cellw1.io.readers, "SPARSE_WINDOW", 10)  # values; a row has ~5
    adata = _adata(sparse=True)
    counts = adata.X.toarray()
    counts[7] = 0.0  # an empty row among the selected ones
    adata.X = sp.csr_matrix(counts)
    rows = np.unique(np.r_[0:N_CELLS:7, 2, 3, 4, 300])
    with open_disk_data(_write(adata, tmp_path / f"d{suffix}")) as disk:
        got = disk.matrix().read(rows)
        assert got.shape == (rows.size, N_GENES)
        assert got[4].nnz == 0
        assert rows[4] == 7
        np.testing.assert_array_equal(got.toarray(), adata.X[rows].toarray())


def test_obs_var_names_and_layers(stored) -> None:
    data, adata = stored
    with open_disk_data(data) as disk:
        assert (disk.n_obs, disk.n_vars) == (N_CELLS, N_GENES)
        pd.testing.assert_frame_equal(disk.obs, adata.obs)
        pd.testing.assert_index_equal(disk.var_names, adata.var_names)
        logged = disk.matrix("logged")
        assert not logged.is_sparse
        rows = ROW_SETS["span"]
        np.testing.assert_allclose(logged.read(rows), adata.layers["logged"][rows])
        assert disk.matrix("logged") is logged  # opened once
        with pytest.raises(InputError, match=r"layer 'counts' is not in .*available layers: \['logged'\]"):
            disk.matrix("counts")


def test_read_returns_copies_not_views(tmp_path: Path) -> None:
    adata = _adata(sparse=False)
    with open_disk_data(_write(adata, tmp_path / "d.h5ad")) as disk:
        mat = disk.matrix()
        block = mat.read(np.arange(0, 30))
        block[:] = -1.0
        np.testing.assert_array_equal(mat.read(np.arange(0, 30)), adata.X[:30])


def test_integer_counts_are_read_as_float32(tmp_path: Path) -> None:
    adata = _adata(sparse=True)
    adata.X = adata.X.astype(np.int32)
    with open_disk_data(_write(adata, tmp_path / "int.h5ad")) as disk:
        mat = disk.matrix()
        got = mat.read(ROW_SETS["runs"])
        assert mat.dtype == np.float32
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.toarray(), adata.X[ROW_SETS["runs"]].toarray())


def test_zarr_v3_store_is_read(tmp_path: Path) -> None:
    adata = _adata(sparse=True)
    with anndata.settings.override(zarr_write_format=3):
        adata.write_zarr(tmp_path / "v3.zarr")
    with open_disk_data(tmp_path / "v3.zarr") as disk:
        np.testing.assert_array_equal(
            disk.matrix().read(ROW_SETS["scattered"]).toarray(), adata.X[ROW_SETS["scattered"]].toarray()
        )


@pytest.mark.parametrize(
    "bad", [np.array([5, 3]), np.array([3, 3]), np.array([0, N_CELLS]), np.array([-1, 2]), np.array([0.0, 1.0])]
)
def test_read_rejects_unsorted_duplicate_out_of_range_rows(tmp_path: Path, bad: np.ndarray) -> None:
    with (
        open_disk_data(_write(_adata(sparse=True), tmp_path / "d.h5ad")) as disk,
        pytest.raises(InputError, match="internal misuse"),
    ):
        disk.matrix().read(bad)


def test_is_on_disk(tmp_path: Path) -> None:
    path = _write(_adata(sparse=False), tmp_path / "d.h5ad")
    assert is_on_disk(path)
    assert is_on_disk(str(path))
    assert not is_on_disk(np.zeros((3, 2)))
    assert not is_on_disk(_adata(sparse=False))
    backed = anndata.read_h5ad(path, backed="r")
    try:
        assert is_on_disk(backed)
    finally:
        backed.file.close()


def test_backed_anndata_still_usable_after_close(tmp_path: Path) -> None:
    adata = _adata(sparse=True)
    path = _write(adata, tmp_path / "d.h5ad")
    backed = anndata.read_h5ad(path, backed="r")
    try:
        held = backed.file["X"]  # an object the user already holds
        disk = open_disk_data(backed)
        assert disk.obs is backed.obs  # reused, not copied
        np.testing.assert_array_equal(
            disk.matrix().read(ROW_SETS["runs"]).toarray(), adata.X[ROW_SETS["runs"]].toarray()
        )
        disk.close()
        disk.close()  # idempotent
        with pytest.raises(InputError, match="closed"):
            disk.matrix().read(np.arange(3))
        assert backed.file.is_open
        np.testing.assert_array_equal(backed.X[5:9].toarray(), adata.X[5:9].toarray())
        np.testing.assert_array_equal(held["indptr"][:5], adata.X.indptr[:5])
        np.testing.assert_array_equal(backed.layers["logged"][:4], adata.layers["logged"][:4])
    finally:
        backed.file.close()


def test_backed_view_is_refused(tmp_path: Path) -> None:
    backed = anndata.read_h5ad(_write(_adata(sparse=False), tmp_path / "d.h5ad"), backed="r")
    try:
        with pytest.raises(InputError, match="view of a backed AnnData"):
            open_disk_data(backed[:10])
    finally:
        backed.file.close()


# -- errors opening files -------------------------------------------------------------------


def test_missing_path_and_bad_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        open_disk_data(tmp_path / "nope.h5ad")
    (tmp_path / "cells.csv").write_text("a,b\n")
    with pytest.raises(InputError, match=r"suffix '\.csv'.*\.h5ad \(HDF5\) and \.zarr"):
        open_disk_data(tmp_path / "cells.csv")


def test_truncated_h5ad(tmp_path: Path) -> None:
    data = _write(_adata(sparse=True), tmp_path / "d.h5ad").read_bytes()
    (tmp_path / "short.h5ad").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable HDF5 file.*truncated or still being written"):
        open_disk_data(tmp_path / "short.h5ad")


def test_h5ad_being_written_by_another_process(tmp_path: Path) -> None:
    path = _write(_adata(sparse=False), tmp_path / "d.h5ad")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import h5py, time; f = h5py.File({str(path)!r}, 'a'); print('open', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        try:
            h5py.File(path, "r").close()
        except OSError:
            pass
        else:
            pytest.skip(
                "HDF5 file locking is disabled here (e.g. HDF5_USE_FILE_LOCKING=FALSE), so a writer cannot be detected"
            )
        with pytest.raises(InputError, match="being written by another process.*wait until"):
            open_disk_data(path)
    finally:
        holder.kill()
        holder.wait()


def test_csc_matrix_is_refused_with_the_fix(tmp_path: Path) -> None:
    adata = _adata(sparse=True)
    adata.X = adata.X.tocsc()
    adata.layers["csc"] = sp.csc_matrix(adata.layers["logged"])
    for path in (_write(adata, tmp_path / "d.h5ad"), _write(adata, tmp_path / "d.zarr")):
        with open_disk_data(path) as disk:
            with pytest.raises(InputError, match=r"CSC.*rows cannot be read efficiently.*tocsr\(\)"):
                disk.matrix()
            with pytest.raises(InputError, match="layer 'csc' .*CSC"):
                disk.matrix("csc")


def test_non_numeric_x_is_refused(tmp_path: Path) -> None:
    adata = _adata(sparse=False)
    path = tmp_path / "strings.h5ad"
    with h5py.File(path, "w") as f:
        write_elem(f, "obs", adata.obs)
        write_elem(f, "var", adata.var)
        ds = f.create_dataset("X", data=np.full((N_CELLS, N_GENES), b"x"))
        ds.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    with open_disk_data(path) as disk, pytest.raises(InputError, match="dtype \\|S1; it must hold numbers"):
        disk.matrix()


def test_h5ad_without_x_names_the_layers(tmp_path: Path) -> None:
    adata = _adata(sparse=False)
    adata.X = None
    with open_disk_data(_write(adata, tmp_path / "nox.h5ad")) as disk:
        with pytest.raises(InputError, match=r"has no X .*layers \['logged'\]"):
            disk.matrix()
        assert disk.matrix("logged").shape == (N_CELLS, N_GENES)


def test_zarr_with_the_wrong_layout(tmp_path: Path) -> None:
    adata = _adata(sparse=False)
    # A directory that is not a zarr group at all.
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=r"not a zarr group.*notes\.txt.*adata\.write_zarr"):
        open_disk_data(tmp_path / "plain.zarr")
    # A zarr group holding only an array: no obs/var.
    group = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    group.create_array("X", data=adata.X)
    with pytest.raises(InputError, match=r"no obs or var \(it has \['X'\]\).*adata\.write_zarr"):
        open_disk_data(tmp_path / "bare.zarr")
    # obs/var written by anndata, X a plain zarr array without anndata's encoding attributes.
    group = zarr.open_group(str(tmp_path / "noattrs.zarr"), mode="w")
    write_elem(group, "obs", adata.obs)
    write_elem(group, "var", adata.var)
    group.create_array("X", data=adata.X)
    with (
        open_disk_data(tmp_path / "noattrs.zarr") as disk,
        pytest.raises(InputError, match="without anndata's encoding attributes.*adata.write_zarr"),
    ):
        disk.matrix()
    # A complete store but without X.
    adata.X = None
    with open_disk_data(_write(adata, tmp_path / "nox.zarr")) as disk, pytest.raises(InputError, match="has no X"):
        disk.matrix()


# -- PredictionWriter -------------------------------------------------------------------------


def _read_back(path: Path) -> anndata.AnnData:
    return anndata.read_zarr(path) if path.suffix == ".zarr" else anndata.read_h5ad(path)


def _write_rows(path: Path, adata: anndata.AnnData, blocks: list[tuple[int, np.ndarray]], fail: bool = False) -> None:
    """Write ``(start, rows)`` blocks of a prediction for ``adata``'s cells; ``fail``: raise "boom" after them."""
    with PredictionWriter(path, obs=adata.obs, var=adata.var) as writer:
        for start, rows in blocks:
            writer.write(start, rows)
        if fail:
            raise RuntimeError("boom")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_prediction_writer_round_trip_out_of_order(tmp_path: Path, suffix: str) -> None:
    adata = _adata(sparse=False, seed=1)
    pred = np.random.default_rng(2).normal(size=(N_CELLS, N_GENES))  # float64 in, float32 out
    uns = {"method": "w1", "perturbation": "drug", "n_iters": 300}
    path = tmp_path / f"pred{suffix}"
    with PredictionWriter(path, obs=adata.obs, var=adata.var, uns=uns) as writer:
        for start, stop in [(200, N_CELLS), (0, 64), (128, 200), (64, 128)]:
            writer.write(start, pred[start:stop])
    back = _read_back(path)
    assert isinstance(back.X, np.ndarray)
    assert back.X.dtype == np.float32
    np.testing.assert_array_equal(back.X, pred.astype(np.float32))
    pd.testing.assert_frame_equal(back.obs, adata.obs)
    pd.testing.assert_frame_equal(back.var, adata.var)
    assert back.uns == uns
    assert _leftovers(tmp_path) == []
    with open_disk_data(path) as disk:  # and cellw1 can read it back by rows
        np.testing.assert_array_equal(disk.matrix().read(ROW_SETS["runs"]), pred.astype(np.float32)[ROW_SETS["runs"]])


def test_prediction_x_is_chunked_by_rows(tmp_path: Path) -> None:
    n_cells, n_genes = 20_000, 50
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"g{j}" for j in range(n_genes)])
    block = np.ones((5_000, n_genes), dtype=np.float32)
    with PredictionWriter(tmp_path / "big.h5ad", obs=obs, var=var) as writer:
        for start in range(0, n_cells, 5_000):
            writer.write(start, block * start)
    with h5py.File(tmp_path / "big.h5ad", "r") as f:
        assert f["X"].chunks == (4096, n_genes)
        assert dict(f["X"].attrs) == {"encoding-type": "array", "encoding-version": "0.2.0"}
        assert f["X"][19_999, 0] == 15_000.0


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_prediction_writer_failure_keeps_existing_output(tmp_path: Path, suffix: str) -> None:
    old = _adata(sparse=False, seed=3)
    path = _write(old, tmp_path / f"pred{suffix}")
    with pytest.raises(RuntimeError, match="boom"):
        _write_rows(path, old, [(0, np.zeros((N_CELLS, N_GENES)))], fail=True)
    np.testing.assert_array_equal(_read_back(path).X, old.X)
    assert _leftovers(tmp_path) == []
    # A failure with nothing there before leaves nothing behind.
    fresh = tmp_path / f"fresh{suffix}"
    with pytest.raises(RuntimeError, match="boom"):
        _write_rows(fresh, old, [], fail=True)
    assert not fresh.exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_prediction_writer_replaces_existing_output(tmp_path: Path, suffix: str) -> None:
    old = _adata(sparse=False, seed=4)
    path = _write(old, tmp_path / f"pred{suffix}")
    with PredictionWriter(path, obs=old.obs, var=old.var) as writer:
        writer.write(0, np.full((N_CELLS, N_GENES), 7.0))
    back = _read_back(path)
    assert (back.X == 7.0).all()
    assert "logged" not in back.layers
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_prediction_writer_missing_or_repeated_rows(tmp_path: Path, suffix: str) -> None:
    adata = _adata(sparse=False)
    path = tmp_path / f"pred{suffix}"
    with pytest.raises(InputError, match=r"rows 100\.\.149 of 301 were never written"):
        _write_rows(path, adata, [(0, np.zeros((100, N_GENES))), (150, np.zeros((N_CELLS - 150, N_GENES)))])
    assert not path.exists()
    assert _leftovers(tmp_path) == []
    with pytest.raises(InputError, match=r"rows 50\.\.99 overlap"):
        _write_rows(path, adata, [(0, np.zeros((100, N_GENES))), (50, np.zeros((50, N_GENES)))])
    assert not path.exists()
    assert _leftovers(tmp_path) == []


def test_prediction_writer_bad_arguments(tmp_path: Path) -> None:
    adata = _adata(sparse=False)
    with pytest.raises(InputError, match=r"suffix must be \.h5ad or \.zarr"):
        PredictionWriter(tmp_path / "pred.csv", obs=adata.obs, var=adata.var)
    with pytest.raises(InputError, match=r"shape \(k, 13\)"):
        _write_rows(tmp_path / "p.h5ad", adata, [(0, np.zeros((5, 4)))])
    with pytest.raises(InputError, match="outside the 301 cells"):
        _write_rows(tmp_path / "p.h5ad", adata, [(300, np.zeros((2, N_GENES)))])
    assert not (tmp_path / "p.h5ad").exists()
    assert _leftovers(tmp_path) == []


def test_prediction_writer_zarr_v3(tmp_path: Path) -> None:
    adata = _adata(sparse=False)
    pred = np.arange(N_CELLS * N_GENES, dtype=np.float32).reshape(N_CELLS, N_GENES)
    with (
        anndata.settings.override(zarr_write_format=3),
        PredictionWriter(tmp_path / "v3.zarr", obs=adata.obs, var=adata.var, uns={"a": 1}) as writer,
    ):
        writer.write(100, pred[100:])
        writer.write(0, pred[:100])
    assert zarr.open_group(str(tmp_path / "v3.zarr"), mode="r").metadata.zarr_format == 3
    back = anndata.read_zarr(tmp_path / "v3.zarr")
    np.testing.assert_array_equal(back.X, pred)
    pd.testing.assert_frame_equal(back.obs, adata.obs)
    assert back.uns == {"a": 1}
