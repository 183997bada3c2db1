"""The data-source contract: every kind of input becomes the same source of cells.

An AnnData in memory, an AnnData opened with ``backed="r"``, a path to an ``.h5ad`` file and a
path to a ``.zarr`` store all open (:func:`open_source`) as a :class:`Source`: ``obs`` and
``var_names`` in memory, and a matrix per layer (or obsm embedding) read by rows with
``read(rows)``. Fitting and prediction see only this contract, so they are one code path
whatever the input: in memory, ``read`` is a slice (:class:`MemoryMatrix`); on disk, it reads
the rows from the file (:class:`~cellw1.io.readers.DiskMatrix`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, Self

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .readers import open_disk_data


class Matrix(Protocol):
    """A read-only ``(n_cells, n_features)`` matrix read by rows.

    ``read(rows)`` takes increasing, unique row numbers and returns those rows as a new float
    array (or CSR matrix when ``is_sparse``): floats keep their dtype, integers and booleans
    come back as float32.
    """

    shape: tuple[int, int]
    is_sparse: bool
    dtype: np.dtype

    def read(self, rows: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """Read the rows ``rows`` (increasing), ``(len(rows), shape[1])``."""
        ...


class Source(Protocol):
    """Cells to fit or predict: annotations in memory, matrices read by rows.

    Attributes
    ----------
    obs
        One row per cell.
    var_names
        Gene names.
    n_obs, n_vars
        Number of cells and genes.
    path
        The file the cells are read from; ``None`` in memory.
    in_memory
        Reading rows costs no I/O (the cells are in memory already).
    origin
        What another process opens to read the same cells: the path, or the AnnData in memory.
    """

    obs: pd.DataFrame
    var_names: pd.Index
    n_obs: int
    n_vars: int
    in_memory: bool

    @property
    def path(self) -> Path | None:
        """The file the cells are read from; ``None`` in memory."""
        ...

    @property
    def origin(self) -> Any:
        """What another process opens to read the same cells."""
        ...

    def matrix(self, layer: str | None = None) -> Matrix:
        """``X`` (``layer=None``) or a layer, read by rows."""
        ...

    def embedding(self, obsm_key: str) -> Matrix:
        """Return the obsm embedding ``obsm_key``, read by rows."""
        ...

    def close(self) -> None:
        """Release the file (nothing in memory)."""
        ...

    def __enter__(self) -> Self:
        """Open for a ``with`` block."""
        ...

    def __exit__(self, *exc: object) -> None:
        """Close at the end of a ``with`` block."""
        ...


class MemoryMatrix:
    """A matrix in memory (numpy array or scipy sparse matrix) behind the :class:`Matrix` contract.

    Reads return new arrays with the dtypes :class:`~cellw1.io.readers.DiskMatrix` returns, so
    a file and the same AnnData in memory give the same values.
    """

    def __init__(self, values: Any, *, name: str) -> None:
        if sp.issparse(values):
            self._values: Any = values if values.format == "csr" else sp.csr_matrix(values)
            self.is_sparse = True
        else:
            self._values = np.asarray(values)
            self.is_sparse = False
        stored = np.dtype(self._values.dtype)
        if self._values.ndim != 2:
            raise InputError(f"{name} must be 2-D (cells x features), got shape {self._values.shape}.")
        if not (
            np.issubdtype(stored, np.integer) or np.issubdtype(stored, np.floating) or np.issubdtype(stored, np.bool_)
        ):
            raise InputError(
                f"{name} has dtype {stored}; it must hold numbers (float or integer counts). "
                "Convert it, e.g. adata.X = adata.X.astype('float32')."
            )
        self._name = name
        self.shape: tuple[int, int] = (int(self._values.shape[0]), int(self._values.shape[1]))
        self.dtype: np.dtype = stored if np.issubdtype(stored, np.floating) else np.dtype(np.float32)

    def __repr__(self) -> str:
        """Name the matrix, its storage and shape."""
        return f"MemoryMatrix({self._name}, {'CSR' if self.is_sparse else 'dense'}, shape={self.shape})"

    def read(self, rows: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """Rows ``rows`` (increasing, unique) as a new array; a contiguous run is read as one slice."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows[0] < 0 or rows[-1] >= self.shape[0] or (np.diff(rows) <= 0).any())):
            raise InputError(
                f"rows passed to MemoryMatrix.read must be increasing row numbers in [0, {self.shape[0]}) "
                "(internal misuse of MemoryMatrix.read)."
            )
        contiguous = rows.size == 0 or rows[-1] - rows[0] + 1 == rows.size
        block = self._values[int(rows[0]) : int(rows[-1]) + 1] if contiguous and rows.size else self._values[rows]
        if self.is_sparse:
            block = sp.csr_matrix(block, dtype=self.dtype, copy=True)
            return block
        return np.array(block, dtype=self.dtype)


class MemorySource:
    """An AnnData in memory as a :class:`Source`; never modified, nothing to close."""

    path: Path | None = None
    in_memory = True

    def __init__(self, adata: anndata.AnnData) -> None:
        self.adata = adata
        self.obs = adata.obs
        self.var_names = adata.var_names
        self.n_obs, self.n_vars = adata.n_obs, adata.n_vars

    def __repr__(self) -> str:
        """Give the numbers of cells and genes."""
        return f"MemorySource(n_obs={self.n_obs}, n_vars={self.n_vars})"

    @property
    def origin(self) -> anndata.AnnData:
        """The AnnData itself."""
        return self.adata

    def matrix(self, layer: str | None = None) -> MemoryMatrix:
        """Return ``X`` (``layer=None``) or a layer, read by rows."""
        if layer is not None:
            if layer not in self.adata.layers:
                raise InputError(
                    f"layer {layer!r} not found; available: {sorted(self.adata.layers.keys()) or 'none (use X)'}."
                )
            return MemoryMatrix(self.adata.layers[layer], name=f"layer {layer!r}")
        if self.adata.X is None:
            raise InputError("the AnnData has no X; pass layer= or obsm_key= to choose the expression values.")
        return MemoryMatrix(self.adata.X, name="X")

    def embedding(self, obsm_key: str) -> MemoryMatrix:
        """Return the obsm embedding ``obsm_key``, read by rows."""
        if obsm_key not in self.adata.obsm:
            raise InputError(f"obsm key {obsm_key!r} not found; available: {sorted(self.adata.obsm.keys()) or 'none'}.")
        values = self.adata.obsm[obsm_key]
        return MemoryMatrix(values if sp.issparse(values) else np.asarray(values), name=f"obsm[{obsm_key!r}]")

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> MemorySource:
        """Open for a ``with`` block (nothing to open)."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close at the end of a ``with`` block."""
        self.close()


def is_on_disk(data: object) -> bool:
    """Tell whether ``data`` names data on disk: a ``str`` / ``os.PathLike`` path, or a backed AnnData.

    The suffix of a path (``.h5ad`` or ``.zarr``) is checked when it is opened, so a wrong one
    gets a clear error rather than being taken for an array.
    """
    if isinstance(data, str | os.PathLike):
        return True
    return isinstance(data, anndata.AnnData) and bool(data.isbacked)


def disk_path(data: object) -> str | os.PathLike | None:
    """Return the file ``data`` is read from: a path itself, a backed AnnData's file, else ``None``."""
    if isinstance(data, str | os.PathLike):
        return data
    if isinstance(data, anndata.AnnData) and data.isbacked:
        return data.filename
    return None


def check_data_kind(data: object, what: str) -> None:
    """Raise a TypeError unless ``data`` is an AnnData or a path (what :func:`open_source` opens)."""
    if isinstance(data, anndata.AnnData) or is_on_disk(data):
        return
    hint = " (for arrays of cells use cellw1.fit_map(source, target))" if isinstance(data, np.ndarray) else ""
    raise TypeError(
        f"{what} expects an AnnData, a path to an .h5ad file or .zarr store, or an AnnData opened with "
        f"backed='r'; got {type(data).__name__}{hint}."
    )


def open_source(data: anndata.AnnData | str | os.PathLike, what: str = "cellw1") -> Source:
    """Open ``data`` as a :class:`Source`; use it as a context manager (closing releases a file).

    An AnnData in memory becomes a :class:`MemorySource`; a path or a backed AnnData a
    :class:`~cellw1.io.readers.DiskData` (X is never loaded). ``what`` names the caller in the
    TypeError for anything else.
    """
    check_data_kind(data, what)
    if is_on_disk(data):
        return open_disk_data(data)
    return MemorySource(data)


def feature_matrix(source: Source, *, layer: str | None, obsm_key: str | None) -> tuple[Matrix, list[str]]:
    """Return the matrix a model reads (``X``, a layer or an obsm embedding) and its feature names."""
    if layer is not None and obsm_key is not None:
        raise InputError("give either layer= or obsm_key=, not both.")
    if obsm_key is not None:
        matrix = source.embedding(obsm_key)
        return matrix, [f"{obsm_key}_{i}" for i in range(matrix.shape[1])]
    return source.matrix(layer), list(map(str, source.var_names))
