"""AnnData files on disk, read by rows: the on-disk :class:`~cellw1.io.source.Source`.

Memory stays independent of the number of cells: ``obs`` and ``var`` are read in full (they
are small), the expression matrix stays in the file and is read a batch of rows at a time
through :class:`DiskMatrix`. Predictions are written by :mod:`cellw1.io.writer`.

Both ``.h5ad`` (HDF5) and ``.zarr`` stores written by anndata are supported; the matrix
may be dense or CSR, read with :func:`anndata.io.read_elem` and :func:`anndata.io.sparse_dataset`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, TypeAlias

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr
from anndata.io import read_elem, sparse_dataset

from ..errors import InputError

logger = logging.getLogger(__name__)

SUFFIXES = (".h5ad", ".zarr")
SPAN_FACTOR = 4  # read one contiguous slice when the rows span <= SPAN_FACTOR * len(rows)
RUN_GAP = 16  # rows closer than this are read in one run (the gap is read and dropped)
MAX_RUNS = 8  # at most this many runs are read as slices; more go to fancy indexing
SPARSE_GAP = 8192  # scattered CSR rows whose stored values are closer than this are read in one slice
SPARSE_WINDOW = 1 << 22  # but one slice holds at most this many values (bounds memory)

Store: TypeAlias = h5py.File | zarr.Group  # an open AnnData file or zarr store


class DiskMatrix:
    """Read-only ``(n_cells, n_genes)`` matrix on disk, read by rows.

    Wraps an HDF5 dataset, a zarr array, or an anndata CSR sparse dataset (HDF5 or zarr).
    Values come back as floats: float32/float64 files keep their dtype, integer and boolean
    files are read as float32.

    Attributes
    ----------
    shape : tuple[int, int]
        ``(n_cells, n_genes)``.
    is_sparse : bool
        True for a CSR matrix; :meth:`read` then returns :class:`scipy.sparse.csr_matrix`.
    dtype : numpy.dtype
        The dtype of what :meth:`read` returns.
    """

    def __init__(self, elem: Any, *, name: str) -> None:
        self._name = name
        self._closed = False
        self._indptr: np.ndarray | None = None  # cached by the scattered CSR reader
        self._h5 = isinstance(elem, h5py.Group | h5py.Dataset)
        if isinstance(elem, h5py.Group | zarr.Group):
            self._sparse: Any = sparse_dataset(elem)
            self._dense: Any = None
            self.is_sparse = True
            on_disk = np.dtype(self._sparse.dtype)
        else:
            self._sparse = None
            self._dense = elem
            self.is_sparse = False
            on_disk = np.dtype(elem.dtype)
        shape = tuple(int(s) for s in (elem.shape if self._sparse is None else self._sparse.shape))
        if len(shape) != 2:
            raise InputError(
                f"{name} has shape {shape}; it must be 2-D (n_cells, n_genes). Rewrite the file with anndata."
            )
        if not (
            np.issubdtype(on_disk, np.integer)
            or np.issubdtype(on_disk, np.floating)
            or np.issubdtype(on_disk, np.bool_)
        ):
            raise InputError(
                f"{name} has dtype {on_disk}; it must hold numbers (float or integer counts). "
                "Convert it, e.g. adata.X = adata.X.astype('float32'), and write the file again."
            )
        self.shape: tuple[int, int] = (shape[0], shape[1])
        self.dtype: np.dtype = on_disk if np.issubdtype(on_disk, np.floating) else np.dtype(np.float32)

    def __repr__(self) -> str:
        kind = "CSR" if self.is_sparse else "dense"
        return f"DiskMatrix({self._name}, {kind}, shape={self.shape}, dtype={self.dtype})"

    def read(self, rows: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """Read rows ``rows`` in that order into memory.

        Parameters
        ----------
        rows : (k,) int array
            Sorted, unique row indices in ``[0, n_cells)``.

        Returns
        -------
        numpy.ndarray or scipy.sparse.csr_matrix
            ``(k, n_genes)`` float values, never a view of the file.

        Notes
        -----
        When the rows span at most ``SPAN_FACTOR * k`` rows, the covering slice is read
        once and the rows are selected in memory (one sequential read beats many small
        ones). Otherwise rows closer than ``RUN_GAP`` form runs; up to ``MAX_RUNS`` runs
        are read as slices. More scattered rows are read by fancy indexing (dense) or in
        windows of nearby stored values (CSR, see ``_read_sparse_scattered``).
        """
        rows = self._check_rows(rows)
        if rows.size == 0:
            return self._empty()
        start, stop = int(rows[0]), int(rows[-1]) + 1
        if stop - start <= SPAN_FACTOR * rows.size:
            return self._select(self._read_range(start, stop), rows - start)
        cuts = np.flatnonzero(np.diff(rows) > RUN_GAP) + 1
        if cuts.size < MAX_RUNS:
            blocks = []
            for part in np.split(rows, cuts):
                lo, hi = int(part[0]), int(part[-1]) + 1
                blocks.append(self._select(self._read_range(lo, hi), part - lo))
            return sp.vstack(blocks, format="csr") if self.is_sparse else np.concatenate(blocks)
        return self._read_scattered(rows)

    def read_slice(self, start: int, stop: int) -> np.ndarray | sp.csr_matrix:
        """Read rows ``start <= i < stop`` (``0 <= start <= stop <= n_cells``)."""
        self._check_open()
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.shape[0]:
            raise InputError(
                f"read_slice({start}, {stop}) is outside the {self.shape[0]} rows of {self._name}; "
                "pass 0 <= start <= stop <= n_cells."
            )
        return self._empty() if start == stop else self._read_range(start, stop)

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InputError(f"{self._name} was closed with its DiskData; open the data again to read it.")

    def _check_rows(self, rows: Any) -> np.ndarray:
        self._check_open()
        arr = np.asarray(rows)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise InputError(
                f"rows must be a 1-D integer array, got dtype {arr.dtype} and shape {arr.shape}; "
                "pass sorted unique row indices (internal misuse of DiskMatrix.read)."
            )
        arr = arr.astype(np.int64, copy=False)
        if arr.size == 0:
            return arr
        if arr[0] < 0 or arr[-1] >= self.shape[0] or (arr.size > 1 and not (np.diff(arr) > 0).all()):
            bad = "out of range" if (arr.min() < 0 or arr.max() >= self.shape[0]) else "unsorted or duplicated"
            raise InputError(
                f"rows passed to DiskMatrix.read are {bad} (n_cells={self.shape[0]}, first rows {arr[:5].tolist()}); "
                "pass np.unique(rows) within [0, n_cells) (internal misuse of DiskMatrix.read)."
            )
        return arr

    def _empty(self) -> np.ndarray | sp.csr_matrix:
        if self.is_sparse:
            return sp.csr_matrix((0, self.shape[1]), dtype=self.dtype)
        return np.empty((0, self.shape[1]), dtype=self.dtype)

    def _as_float(self, block: Any) -> np.ndarray | sp.csr_matrix:
        if self.is_sparse:
            block = sp.csr_matrix(block)
            return block if block.dtype == self.dtype else block.astype(self.dtype)
        return np.asarray(block).astype(self.dtype, copy=False)

    def _read_range(self, start: int, stop: int) -> np.ndarray | sp.csr_matrix:
        if self.is_sparse:
            return self._read_sparse_range(start, stop)
        return self._as_float(self._dense[start:stop])

    def _read_sparse_range(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start <= i < stop`` of a CSR matrix: one slice each of ``indptr``, ``data``, ``indices``.

        The matrix anndata's ``sparse_dataset[start:stop]`` gives, without the time it spends
        on each call validating the index (a streamed fit reads thousands of small buffers;
        docs/speed.md).
        """
        group = self._sparse.group
        if self._indptr is not None:
            indptr = self._indptr[start : stop + 1]
        else:
            indptr = np.asarray(group["indptr"][start : stop + 1], dtype=np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        data, indices = np.asarray(group["data"][lo:hi]), np.asarray(group["indices"][lo:hi])
        return self._as_float(sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, self.shape[1])))

    def _select(self, block: np.ndarray | sp.csr_matrix, local: np.ndarray) -> np.ndarray | sp.csr_matrix:
        if local.size == block.shape[0]:  # rows are exactly the slice
            return block
        return block[local]

    def _read_scattered(self, rows: np.ndarray) -> np.ndarray | sp.csr_matrix:
        if self.is_sparse:
            return self._read_sparse_scattered(rows)
        if self._h5:
            return self._as_float(self._dense[rows])  # one hyperslab read; rows increasing
        return self._as_float(self._dense.get_orthogonal_selection((rows, slice(None))))

    def _read_sparse_scattered(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows far apart in a CSR matrix: read the stored values in a few windows.

        anndata reads such rows one by one (HDF5) or by fancy indexing over every stored
        value (zarr, slow). Here rows whose values lie within ``SPARSE_GAP`` (or one zarr
        chunk) of each other share one slice of ``data``/``indices``, so each compressed
        chunk is decoded about once, and a window never exceeds ``SPARSE_WINDOW`` values.
        """
        if self._indptr is None:
            self._indptr = np.asarray(self._sparse.group["indptr"][...], dtype=np.int64)
        data, indices = self._sparse.group["data"], self._sparse.group["indices"]
        chunk = 0 if self._h5 else int(data.chunks[0])
        gap = max(SPARSE_GAP, chunk)
        lo, hi = self._indptr[rows], self._indptr[rows + 1]
        lengths = hi - lo
        out_ptr = np.concatenate([[0], np.cumsum(lengths)])
        out_data = np.empty(out_ptr[-1], dtype=self.dtype)
        out_indices = np.empty(out_ptr[-1], dtype=np.int64)
        i, n = 0, rows.size
        while i < n:
            j = i + 1
            while j < n and lo[j] - hi[j - 1] <= gap and hi[j] - lo[i] <= SPARSE_WINDOW:
                j += 1
            start, stop = int(lo[i]), int(hi[j - 1])
            # Position in the window of each value the rows i..j-1 keep, in output order.
            keep = np.arange(out_ptr[i], out_ptr[j]) + np.repeat(lo[i:j] - start - out_ptr[i:j], lengths[i:j])
            out_data[out_ptr[i] : out_ptr[j]] = data[start:stop][keep]
            out_indices[out_ptr[i] : out_ptr[j]] = indices[start:stop][keep]
            i = j
        index_dtype = np.int32 if self.shape[1] < 2**31 and out_ptr[-1] < 2**31 else np.int64
        return sp.csr_matrix(
            (out_data, out_indices.astype(index_dtype), out_ptr.astype(index_dtype)), shape=(n, self.shape[1])
        )


class DiskData:
    """An AnnData on disk: ``obs`` and ``var_names`` in memory, matrices on disk.

    A :class:`~cellw1.io.source.Source`; open one with :func:`open_disk_data` (or
    :func:`~cellw1.io.source.open_source`). Use it as a context manager, or call
    :meth:`close`, to release the file.

    Attributes
    ----------
    path : pathlib.Path
        The ``.h5ad`` file or ``.zarr`` store.
    obs : pandas.DataFrame
        Cell annotations, read in full.
    var_names : pandas.Index
        Gene names.
    n_obs, n_vars : int
        Number of cells and genes.
    """

    def __init__(self, path: Path, store: Store, obs: pd.DataFrame, var_names: pd.Index) -> None:
        self.path = path
        self._store: Store | None = store
        self.obs = obs
        self.var_names = var_names
        self.n_obs = len(obs)
        self.n_vars = len(var_names)
        self._matrices: dict[str | None, DiskMatrix] = {}

    #: the cells are read from the file (the :class:`~cellw1.io.source.Source` contract)
    in_memory = False

    @property
    def origin(self) -> Path:
        """What another process opens to read the same cells: the path."""
        return self.path

    def __repr__(self) -> str:
        return f"DiskData({str(self.path)!r}, n_obs={self.n_obs}, n_vars={self.n_vars})"

    def matrix(self, layer: str | None = None) -> DiskMatrix:
        """The expression matrix ``X`` (``layer=None``) or ``layers/<layer>``, left on disk."""
        if layer in self._matrices:
            return self._matrices[layer]
        store = self._store
        if store is None:
            raise InputError(f"{self} is closed; open the data again with open_disk_data.")
        if layer is None:
            if "X" not in store:
                raise InputError(
                    f"{self.path} has no X (it has {_keys(store)}); pass layer=... to use one of the layers "
                    f"{_keys(store['layers']) if 'layers' in store else []}, or write X with anndata."
                )
            elem, name = store["X"], f"X of {self.path}"
        else:
            available = _keys(store["layers"]) if "layers" in store else []
            if layer not in available:
                raise InputError(
                    f"layer {layer!r} is not in {self.path}; available layers: {available or 'none'}. "
                    "Pass one of them, or layer=None for X."
                )
            elem, name = store[f"layers/{layer}"], f"layer {layer!r} of {self.path}"
        _check_matrix_encoding(elem, name, self.path)
        mat = DiskMatrix(elem, name=name)
        if mat.shape != (self.n_obs, self.n_vars):
            raise InputError(
                f"{name} has shape {mat.shape} but obs/var have {(self.n_obs, self.n_vars)} entries; "
                "the file is inconsistent, write it again with anndata."
            )
        self._matrices[layer] = mat
        return mat

    def embedding(self, obsm_key: str) -> DiskMatrix:
        """The embedding ``obsm/<obsm_key>`` (a dense or CSR matrix), left on disk."""
        key = f"obsm/{obsm_key}"
        if key in self._matrices:
            return self._matrices[key]
        store = self._store
        if store is None:
            raise InputError(f"{self} is closed; open the data again with open_disk_data.")
        available = _keys(store["obsm"]) if "obsm" in store else []
        if obsm_key not in available:
            raise InputError(f"obsm key {obsm_key!r} not found in {self.path}; available: {available or 'none'}.")
        elem, name = store[key], f"obsm[{obsm_key!r}] of {self.path}"
        if elem.attrs.get("encoding-type") == "dataframe":
            raise InputError(f"{name} is a data frame; fit on a numeric embedding (an array of cells x dimensions).")
        _check_matrix_encoding(elem, name, self.path)
        mat = DiskMatrix(elem, name=name)
        if mat.shape[0] != self.n_obs:
            raise InputError(
                f"{name} has {mat.shape[0]} rows but obs has {self.n_obs}; the file is inconsistent, "
                "write it again with anndata."
            )
        self._matrices[key] = mat
        return mat

    def close(self) -> None:
        """Release the file (idempotent). A wrapped backed AnnData stays usable."""
        for mat in self._matrices.values():
            mat._closed = True
        self._matrices.clear()
        store, self._store = self._store, None
        if isinstance(store, h5py.File):
            store.close()
        logger.debug("closed %s", self.path)

    def __enter__(self) -> DiskData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_in_memory(path: str | os.PathLike) -> anndata.AnnData:
    """Read an ``.h5ad`` file or ``.zarr`` store into memory; a missing or unreadable one is an InputError."""
    path = Path(path)
    zarr_store = path.suffix.lower() == ".zarr"
    if not (path.is_dir() if zarr_store else path.is_file()):
        raise InputError(f"{str(path)!r} does not exist; give the path of an .h5ad file or .zarr store.")
    try:
        return anndata.read_zarr(path) if zarr_store else anndata.read_h5ad(path)
    except Exception as exc:  # h5py / zarr / anndata raise many types for a bad file
        kind = ".zarr store" if zarr_store else ".h5ad file"
        raise InputError(f"{str(path)!r} could not be read as an {kind} ({type(exc).__name__}: {exc}).") from exc


def open_disk_data(data: str | os.PathLike | anndata.AnnData) -> DiskData:
    """Open a ``.h5ad`` file or ``.zarr`` store, or wrap a backed AnnData, without reading X.

    Parameters
    ----------
    data
        A path, or an AnnData from ``anndata.read_h5ad(path, backed='r')``. For the
        latter the file is opened again read-only and ``adata.obs`` / ``adata.var_names``
        are reused (not copied, never modified); closing the :class:`DiskData` leaves the
        AnnData usable.

    Raises
    ------
    InputError
        Missing path, unsupported suffix, a file still being written or truncated, a
        store not written by anndata.
    """
    if isinstance(data, anndata.AnnData):
        return _wrap_backed(data)
    if not isinstance(data, str | os.PathLike):
        raise InputError(
            f"expected a path to a .h5ad file or .zarr store, or a backed AnnData; got {type(data).__name__}."
        )
    path = Path(data)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"{str(path)!r} has suffix {path.suffix or '(none)'!r}; supported on-disk formats are "
            ".h5ad (HDF5) and .zarr (a directory store). Convert it with anndata, e.g. "
            "anndata.read(...).write_h5ad('data.h5ad')."
        )
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist; check the path (relative paths start at {os.getcwd()}).")
    store = _open_h5ad(path) if suffix == ".h5ad" else _open_zarr(path)
    try:
        obs, var_names = _read_annotations(store, path)
    except BaseException:
        if isinstance(store, h5py.File):
            store.close()
        raise
    logger.debug("opened %s: %d cells x %d genes", path, len(obs), len(var_names))
    return DiskData(path, store, obs, var_names)


def _open_h5ad(path: Path) -> h5py.File:
    if not path.is_file():
        raise InputError(f"{str(path)!r} is not a file; a .h5ad must be one HDF5 file (written by adata.write_h5ad).")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        text = str(exc).lower()
        if getattr(exc, "errno", None) == 11 or "unable to lock file" in text:
            raise InputError(
                f"{str(path)!r} is being written by another process (HDF5 file lock: {exc}); "
                "wait until that process has finished writing it, then try again."
            ) from exc
        raise InputError(
            f"{str(path)!r} is not a readable HDF5 file ({exc}); it may be truncated or still being written. "
            "Wait for the writer to finish, or write it again with adata.write_h5ad."
        ) from exc


def _open_zarr(path: Path) -> zarr.Group:
    how = "It must be written by anndata (adata.write_zarr(path))."
    try:
        store = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # GroupNotFoundError, FileNotFoundError, bad metadata...
        found = sorted(p.name for p in path.iterdir())[:20] if path.is_dir() else "a file, not a directory"
        raise InputError(
            f"{str(path)!r} is not a zarr group ({type(exc).__name__}: {exc}); it holds {found}. {how}"
        ) from exc
    return store


def _keys(group: Any) -> list[str]:
    return sorted(group.keys())


def _read_annotations(store: Store, path: Path) -> tuple[pd.DataFrame, pd.Index]:
    missing = [k for k in ("obs", "var") if k not in store]
    if missing:
        raise InputError(
            f"{str(path)!r} has no {' or '.join(missing)} (it has {_keys(store)}); this is not an AnnData store. "
            f"It must be written by anndata (adata.{'write_h5ad' if isinstance(store, h5py.File) else 'write_zarr'}(path))."
        )
    try:
        obs = read_elem(store["obs"])
        var = read_elem(store["var"])
    except Exception as exc:
        raise InputError(
            f"obs/var of {str(path)!r} could not be read ({type(exc).__name__}: {exc}); "
            "write the data again with anndata."
        ) from exc
    return obs, var.index


def _check_matrix_encoding(elem: Any, name: str, path: Path) -> None:
    encoding = elem.attrs.get("encoding-type")
    writer = "adata.write_zarr(path)" if path.suffix.lower() == ".zarr" else "adata.write_h5ad(path)"
    if encoding == "csc_matrix":
        raise InputError(
            f"{name} is stored as CSC (column-compressed); rows cannot be read efficiently from CSC. "
            f"Rewrite it as CSR, e.g. adata.X = adata.X.tocsr(); {writer}."
        )
    dense = isinstance(elem, h5py.Dataset | zarr.Array)
    if (encoding == "array" and dense) or (encoding == "csr_matrix" and not dense):
        return
    has = dict(elem.attrs) if dense else {"keys": _keys(elem), **dict(elem.attrs)}
    raise InputError(
        f"{name} is a {'array' if dense else 'group'} without anndata's encoding attributes for a dense array or "
        f"a CSR matrix (it has {has}); it must be written by anndata ({writer})."
    )


def _wrap_backed(adata: anndata.AnnData) -> DiskData:
    if not adata.isbacked:
        raise InputError(
            "this AnnData is in memory, not on disk; pass it as an array, or open the file with "
            "anndata.read_h5ad(path, backed='r') (or pass the path) to train from disk."
        )
    if adata.is_view:
        raise InputError(
            "a view of a backed AnnData cannot be read from disk by row; pass the full backed AnnData, "
            "or save the subset first: adata[mask].copy(filename='subset.h5ad')."
        )
    path = Path(adata.filename)
    store = _open_h5ad(path)
    logger.debug("wrapped backed AnnData %s", path)
    return DiskData(path, store, adata.obs, adata.var_names)
