"""Predictions written to disk a block of rows at a time, appearing at their path in one rename.

``.h5ad`` (HDF5) and ``.zarr`` stores in anndata's own format: ``obs``, ``var`` and ``uns``
are written with :func:`anndata.io.write_elem`; only the dense ``X`` is created here,
chunked by rows, with the encoding attributes anndata gives a dense array.
"""

from __future__ import annotations

import bisect
import gc
import logging
import os
import shutil
import uuid
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import anndata
import h5py
import numpy as np
import pandas as pd
import zarr
from anndata.io import write_elem

from ..errors import InputError
from ..files.outputs import check_output, quiet_unraisable, write_failure
from .readers import SUFFIXES, Store

logger = logging.getLogger(__name__)

CHUNK_BYTES = 4 << 20  # target size of one chunk of a written X
MAX_CHUNK_ROWS = 4096
_ROOT_ATTRS = {"encoding-type": "anndata", "encoding-version": "0.1.0"}
_ARRAY_ATTRS = {"encoding-type": "array", "encoding-version": "0.2.0"}


class _Coverage:
    """Disjoint half-open row intervals written so far, merged as they touch."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.stops: list[int] = []

    def add(self, start: int, stop: int) -> None:
        i = bisect.bisect_right(self.starts, start)
        if (i > 0 and self.stops[i - 1] > start) or (i < len(self.starts) and self.starts[i] < stop):
            raise InputError(f"rows {start}..{stop - 1} overlap rows already written; write every row exactly once.")
        if i > 0 and self.stops[i - 1] == start:  # extend the left neighbour
            i -= 1
            self.stops[i] = stop
        else:
            self.starts.insert(i, start)
            self.stops.insert(i, stop)
        if i + 1 < len(self.starts) and self.starts[i + 1] == stop:  # absorb the right one
            self.stops[i] = self.stops.pop(i + 1)
            self.starts.pop(i + 1)

    def first_gap(self, n: int) -> tuple[int, int] | None:
        edge = 0
        for start, stop in zip(self.starts, self.stops, strict=False):
            if start > edge:
                return edge, start
            edge = stop
        return (edge, n) if edge < n else None


class PredictionWriter:
    """Write a ``(n_cells, n_genes)`` float32 AnnData to ``path`` a block of rows at a time.

    The format follows the suffix (``.h5ad`` or ``.zarr``). Everything goes to a temporary
    file (or directory) beside ``path``; on a clean exit, once every row is written, it
    takes ``path``'s place in one rename (an existing ``.zarr`` directory is renamed aside
    first, then deleted). On an exception, or if rows are missing, the temporary output is
    removed and ``path`` is untouched. ``X`` is chunked by rows, so memory does not grow
    with the number of cells.

    Parameters
    ----------
    path
        Destination ``.h5ad`` file or ``.zarr`` directory.
    obs : pandas.DataFrame
        One row per cell; its length is ``n_cells``. Written when the ``with`` block ends,
        so columns added to it (``writer.obs``) while blocks are written are saved too.
    var : pandas.DataFrame
        One row per gene; its length is ``n_genes``.
    uns : dict, optional
        Unstructured annotations, written with anndata.

    Examples
    --------
    >>> with PredictionWriter("pred.h5ad", obs=obs, var=var, uns={"method": "w1"}) as w:  # doctest: +SKIP
    ...     for start in range(0, len(obs), 4096):
    ...         w.write(start, predict(rows[start:start + 4096]))
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        obs: pd.DataFrame,
        var: pd.DataFrame,
        uns: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self._format = self.path.suffix.lower()
        if self._format not in SUFFIXES:
            raise InputError(
                f"cannot write predictions to {str(self.path)!r}: the suffix must be .h5ad or .zarr (which picks the format)."
            )
        check_output(self.path, kind="store" if self._format == ".zarr" else "file")
        if not isinstance(obs, pd.DataFrame) or not isinstance(var, pd.DataFrame):
            raise InputError("obs and var must be pandas DataFrames (one row per cell / per gene).")
        self.shape = (len(obs), len(var))
        if self.shape[1] == 0:
            raise InputError("var is empty; predictions need at least one gene (column).")
        self.obs, self._var, self._uns = obs, var, dict(uns or {})
        self._coverage = _Coverage()
        self._tmp: Path | None = None
        self._store: Store | None = None
        self._x: Any = None

    def __enter__(self) -> PredictionWriter:
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp"
        self._tmp = tmp
        try:
            chunk_rows = max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // (4 * self.shape[1]), self.shape[0]))
            chunks = (chunk_rows, self.shape[1])
            if self._format == ".h5ad":
                # Cache a few chunks so a block that covers part of a chunk is not re-read.
                store: Store = h5py.File(tmp, "w", rdcc_nbytes=4 * chunk_rows * self.shape[1] * 4)
                self._x = store.create_dataset("X", shape=self.shape, dtype=np.float32, chunks=chunks)
            else:
                store = zarr.open_group(str(tmp), mode="w", zarr_format=anndata.settings.zarr_write_format)
                self._x = store.create_array("X", shape=self.shape, dtype=np.float32, chunks=chunks, fill_value=0.0)
            self._store = store
            store.attrs.update(_ROOT_ATTRS)
            self._x.attrs.update(_ARRAY_ATTRS)
        except BaseException as exc:
            self._fail(exc)
        return self

    def write(self, start: int, block: np.ndarray) -> None:
        """Write ``block`` (``(k, n_genes)``) to rows ``start <= i < start + k``."""
        if self._x is None:
            raise InputError(
                "PredictionWriter.write was called outside its `with` block; use `with PredictionWriter(...) as w:`."
            )
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != self.shape[1]:
            raise InputError(f"a block must have shape (k, {self.shape[1]}) (n_genes columns); got {block.shape}.")
        start = int(start)
        stop = start + block.shape[0]
        if start < 0 or stop > self.shape[0]:
            raise InputError(f"rows {start}..{stop - 1} are outside the {self.shape[0]} cells of the prediction.")
        if stop == start:
            return
        self._coverage.add(start, stop)
        try:
            with quiet_unraisable() as ignored:
                self._x[start:stop] = block.astype(np.float32, copy=False)
            if ignored:
                raise ignored[0]
        except Exception as exc:  # a full disk, a file-size limit
            failure = write_failure(self.path, exc)
            if failure is None:
                raise
            with quiet_unraisable():  # free h5py's objects (held by the traceback's frames) now, quietly
                exc.__traceback__ = None
            raise failure from exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        gap = self._coverage.first_gap(self.shape[0])
        if gap is not None:
            self._discard()
            raise InputError(
                f"rows {gap[0]}..{gap[1] - 1} of {self.shape[0]} were never written, so nothing was saved to "
                f"{str(self.path)!r}; write every row before leaving the `with` block."
            )
        try:
            if len(self.obs) != self.shape[0]:
                raise InputError(f"obs has {len(self.obs)} rows but {self.shape[0]} cells were written.")
            # annotations last, so columns computed while the blocks were written (obs is
            # ``self.obs``, which the caller may extend) are saved with them
            with quiet_unraisable() as ignored:
                write_elem(self._store, "obs", self.obs)
                write_elem(self._store, "var", self._var)
                write_elem(self._store, "uns", self._uns)
                for key in ("obsm", "varm", "obsp", "varp", "layers"):
                    write_elem(self._store, key, {})
                self._close_store()
            if ignored:  # h5py failed to flush an object it freed: the file is incomplete
                raise ignored[0]
            if self._format == ".zarr":
                with warnings.catch_warnings():  # zarr warns that v3 has no consolidated metadata spec yet
                    warnings.filterwarnings("ignore", message="Consolidated metadata")
                    zarr.consolidate_metadata(str(self._tmp))  # as adata.write_zarr does
            self._commit()
        except BaseException as exc:
            self._fail(exc)
        logger.debug("wrote %s (%d x %d)", self.path, *self.shape)

    def _close_store(self) -> None:
        store, self._store, self._x = self._store, None, None
        if isinstance(store, h5py.File):
            store.close()

    def _commit(self) -> None:
        assert self._tmp is not None
        if self._format == ".h5ad" or not self.path.exists():
            os.replace(self._tmp, self.path)  # atomic; a directory lands only where nothing is
        else:
            aside = self.path.parent / f".{self.path.name}.{uuid.uuid4().hex[:12]}.old"
            os.replace(self.path, aside)
            try:
                os.replace(self._tmp, self.path)
            except BaseException:
                os.replace(aside, self.path)
                raise
            _remove(aside)
        self._tmp = None

    def _fail(self, exc: BaseException) -> NoReturn:
        """Discard the temporary output and raise ``exc`` (a failed write as an OutputError)."""
        failure = write_failure(self.path, exc)
        with quiet_unraisable():
            if failure is not None:  # free h5py's objects (held by the traceback's frames) now, quietly
                exc.__traceback__ = None
            self._discard()
        if failure is None or failure is exc:
            raise exc
        raise failure from exc

    def _discard(self) -> None:
        try:
            with quiet_unraisable():
                self._close_store()
                gc.collect()  # h5py objects still referenced elsewhere report their failed flush here
        except Exception as exc:  # a file that failed to write may fail to close too; it is deleted
            logger.debug("closing the discarded %s: %s", self._tmp, exc)
        finally:
            if self._tmp is not None:
                _remove(self._tmp)
                self._tmp = None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
