"""Fitting from data on disk: normalisation, embedding and both solver phases without loading X.

:func:`cellw1.fit` comes here when it is given a path to an ``.h5ad`` / ``.zarr`` file or an
AnnData opened with ``backed="r"``. Memory then depends on ``buffer_cells`` and the number
of genes, not on the number of cells:

1. **Normalisation** (:func:`~cellw1.pp.preprocessing.fit_preprocessor_streaming`): the input
   kind is detected on a sample of rows spread over the file; for counts, one pass over the
   training cells of both groups collects each cell's total (the median is ``target_sum``,
   as in memory) and checks every value.
2. **Embedding**: the autoencoder trains on minibatches from buffers of both groups' cells
   (:class:`~cellw1.ot.sampling.DiskCells`, normalised as they are read), exactly as the
   solver does. PCA is fitted on a seeded uniform sample of at most :data:`EMBEDDING_CELLS`
   cells of both groups (read by row; in memory while it is fitted): principal axes from
   50,000 cells are as precise as the data allow, and a streamed subspace iteration would
   read the whole file once per power iteration (five times). Gene space needs no fitting.
3. **Solver** (:class:`~cellw1.ot.sampling.DiskCells`): both phases draw minibatches from
   buffers of ``buffer_cells`` cells per group read in shuffled blocks of rows, normalised
   and embedded as they are read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._data import resolve_device
from ..errors import InputError
from ..io.readers import DiskData, DiskMatrix
from ..ot.config import W1Config
from ..ot.sampling import BUFFER_CELLS, DiskCells
from ..pp.embedding import Embedding, EmbeddingConfig
from ..pp.preprocessing import Preprocessor, fit_preprocessor_streaming
from ..pp.spaces import fit_embedding
from .methods import FittedMethod, fit_method

logger = logging.getLogger(__name__)

#: most cells of both groups the PCA / autoencoder is fitted on when streaming from disk
EMBEDDING_CELLS = 50_000
#: rows read at once in a pass over the file
PASS_ROWS = 8_192
#: rows read (in blocks spread over the file) to detect the input kind
DETECTION_ROWS = 4_096
#: methods that can be fitted from disk
DISK_METHODS: tuple[str, ...] = ("w1", "identity")


def row_blocks(matrix: DiskMatrix, rows: np.ndarray, size: int = PASS_ROWS) -> Iterator[Any]:
    """The rows ``rows`` (increasing) of ``matrix`` in consecutive blocks of at most ``size``."""
    for start in range(0, len(rows), size):
        yield matrix.read(rows[start : start + size])


def spread_sample(rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of at most ``size`` of ``rows``, increasing."""
    if len(rows) <= size:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False))


def fit_streamed(
    disk: DiskData,
    is_source: np.ndarray,
    is_target: np.ndarray,
    *,
    layer: str | None,
    space: str,
    method: str,
    config: W1Config | None,
    embedding_config: EmbeddingConfig | None,
    embedding: Embedding | None,
    input_kind: str,
    seed: int,
    progress: bool,
    buffer_cells: int | None,
) -> tuple[Preprocessor, Embedding, FittedMethod, dict[str, Any]]:
    """Fit preprocessing, embedding and method on the cells of ``disk`` marked by the masks.

    Returns the fitted parts and a dictionary of diagnostics for ``model.info``.
    """
    if method not in DISK_METHODS:
        raise InputError(
            f"method {method!r} cannot be fitted from data on disk (only {', '.join(DISK_METHODS)} can); "
            "load the two groups into memory, e.g. adata[mask].to_memory(), to fit it."
        )
    matrix = disk.matrix(layer)
    rows = np.flatnonzero(is_source | is_target)
    start = time.perf_counter()
    detection = spread_sample(rows, DETECTION_ROWS, seed)
    preprocessor = fit_preprocessor_streaming(
        lambda: row_blocks(matrix, rows), matrix.read(detection), assume=input_kind
    )
    buffer_cells = int(buffer_cells or BUFFER_CELLS)
    info: dict[str, Any] = {
        "input_kind": preprocessor.input_kind, "input_kind_reason": preprocessor.reason,
        "streamed_from": str(disk.path), "buffer_cells": buffer_cells,
        "normalisation_seconds": time.perf_counter() - start,
    }
    start = time.perf_counter()
    device = resolve_device(config.device if isinstance(config, W1Config) else "cpu")
    if embedding is None and space == "autoencoder":  # trained on buffers of both groups' cells
        genes = DiskCells(matrix, rows, preprocessor.transform, matrix.shape[1], buffer_cells=buffer_cells, seed=seed,
                          device=resolve_device((embedding_config or EmbeddingConfig()).device))
        embedding = fit_embedding(space, genes, config=embedding_config, seed=seed, progress=progress)
    elif embedding is None:  # PCA on a uniform sample; gene space needs no data
        sample = spread_sample(rows, EMBEDDING_CELLS if space == "pca" else 2, seed)
        embedding = fit_embedding(
            space, preprocessor.transform(matrix.read(sample)), config=embedding_config, seed=seed, progress=progress
        )
        info["embedding_cells"] = len(sample) if space == "pca" else 0
    elif embedding.n_features != matrix.shape[1]:
        raise InputError(
            f"the given embedding reads {embedding.n_features} features but the data have {matrix.shape[1]}."
        )
    info["embedding_seconds"] = time.perf_counter() - start
    fitted_embedding = embedding

    def transform(raw: Any) -> np.ndarray:
        return fitted_embedding.encode(preprocessor.transform(raw))

    source, target = (
        DiskCells(
            matrix, np.flatnonzero(mask), transform, embedding.dim,
            buffer_cells=buffer_cells, seed=seed + k, device=device,
        )
        for k, mask in enumerate((is_source, is_target))
    )
    start = time.perf_counter()
    fitted = fit_method(method, source, target, config=config, seed=seed, progress=progress)
    info["method_seconds"] = time.perf_counter() - start
    logger.info("fitted %s from %s, streaming %d + %d cells", method, disk.path, source.n_cells, target.n_cells)
    return preprocessor, embedding, fitted, info
