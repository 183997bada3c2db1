"""The one fit pipeline: normalisation, embedding, method and calibration from a source's rows.

:func:`cellw1.fit` opens whatever it is given (an AnnData in memory, a backed AnnData, an
``.h5ad`` or ``.zarr`` path) as a :class:`~cellw1.io.source.Source` and comes here; nothing
below depends on where the cells are. The expression matrix is only ever read by rows, so
from disk memory depends on ``buffer_cells`` and the number of genes, not on the number of
cells; in memory a read is a slice.

1. **Normalisation** (:func:`~cellw1.pp.preprocessing.fit_preprocessor_streaming`): the input
   kind is detected on a sample of rows spread over the data; for counts, one pass over the
   training cells of both groups collects each cell's total (the median is ``target_sum``)
   and checks every value. An obsm embedding is used as it is (after a check for signal).
2. **Embedding**: the autoencoder trains on minibatches from buffers of both groups' cells
   (:class:`~cellw1.ot.sampling.StreamedCells`, normalised as they are read). PCA is fitted on
   a seeded uniform sample of at most :data:`EMBEDDING_CELLS` cells of both groups (read by
   row; in memory while it is fitted). Gene space needs no fitting.
3. **Method** (:func:`~cellw1.tl.methods.fit_method`): every method fits from one
   :class:`~cellw1.ot.sampling.StreamedCells` per group, buffers of ``buffer_cells`` cells
   read in shuffled blocks of rows, normalised and embedded as they are read. When a buffer
   holds a whole group (always, by default, for data in memory) it is read once and the
   sampling is that of cells held in memory.
   Before it, the groups are tested for a response (:mod:`cellw1.ot.effect`, the same test at
   the same level for every method that moves cells): a perturbation without one is predicted
   as its controls by every method, so comparisons between methods are fair.
4. **Calibration** of the expression output (:mod:`cellw1.pp.calibration`) on a seeded sample
   of each group, for expression (counts or log-normalised) only: continuous values (any sign)
   are never calibrated, and a method without a response needs none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..checks import resolve_device
from ..errors import ConfigError, InputError
from ..io.source import Matrix, Source
from ..ot.config import W1Config
from ..ot.effect import effect_test
from ..ot.sampling import BUFFER_CELLS, StreamedCells
from ..pp.calibration import SAMPLE_CELLS, calibration_target, fit_calibration
from ..pp.embedding import Embedding, EmbeddingConfig
from ..pp.preprocessing import Preprocessor, check_signal_streaming, fit_preprocessor_streaming
from ..pp.spaces import fit_embedding
from .methods import CONFIGS, GATED, FittedMethod, fit_method

logger = logging.getLogger(__name__)

#: most cells of both groups the PCA is fitted on
EMBEDDING_CELLS = 50_000
#: rows read at once in a pass over the data
PASS_ROWS = 8_192
#: rows read (in blocks spread over the data) to detect the input kind
DETECTION_ROWS = 4_096
#: methods whose predicted expression is calibrated (:mod:`cellw1.pp.calibration`);
#: identity and observed return measured cells (clipped at 0 only)
CALIBRATED = GATED
#: default level of the test for a response (:mod:`cellw1.ot.effect`), the same for every method
EFFECT_ALPHA = 0.05


def row_blocks(matrix: Matrix, rows: np.ndarray, size: int = PASS_ROWS) -> Iterator[Any]:
    """The rows ``rows`` (increasing) of ``matrix`` in consecutive blocks of at most ``size``."""
    for start in range(0, len(rows), size):
        yield matrix.read(rows[start : start + size])


def spread_sample(rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of at most ``size`` of ``rows``, increasing."""
    if len(rows) <= size:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False))


def _as_values(raw: Any) -> np.ndarray:
    """Rows of an obsm embedding as float32 cells (no preprocessing), checked finite."""
    values = np.asarray(raw.toarray() if sp.issparse(raw) else raw, dtype=np.float32)
    if not np.isfinite(values).all():
        raise InputError("the embedding contains NaN or inf; remove or impute those cells first.")
    return values


def _w1_config(config: Any, effect_alpha: float | None) -> W1Config:
    """The W1 config at the fit's level of the test for a response (a different one given is replaced, with a warning)."""
    config = config if isinstance(config, W1Config) else W1Config()
    if config.effect_alpha != effect_alpha:
        if config.effect_alpha != W1Config().effect_alpha:
            logger.warning(
                "W1Config(effect_alpha=%s) is replaced by the fit's effect_alpha=%s: the test for a response is "
                "the perturbation's, the same for every method; pass effect_alpha= to cellw1.fit instead.",
                config.effect_alpha,
                effect_alpha,
            )
        config = config.replace(effect_alpha=effect_alpha)
    return config


def fit_pipeline(
    source: Source,
    matrix: Matrix,
    is_source: np.ndarray,
    is_target: np.ndarray,
    *,
    obsm_key: str | None,
    space: str,
    method: str,
    config: Any,
    embedding_config: EmbeddingConfig | None,
    embedding: Embedding | None,
    input_kind: str,
    seed: int,
    progress: bool,
    buffer_cells: int | None,
    effect_alpha: float | None = EFFECT_ALPHA,
    perturbation: str = "the perturbation",
) -> tuple[Preprocessor | None, Embedding, FittedMethod, np.ndarray | None, dict[str, Any]]:
    """Fit preprocessing, embedding, method and calibration on the rows of ``matrix`` the masks mark.

    ``matrix`` holds expression (normalised, calibrated), or with ``obsm_key`` that obsm
    embedding (used as it is). Before the method, the groups are tested for a response in the
    fitted space at ``effect_alpha`` (:mod:`cellw1.ot.effect`; ``None``: no test): without one,
    every method that moves cells predicts its input. Returns the fitted parts, the calibration
    (or ``None``) and diagnostics for ``model.info``.
    """
    rows = np.flatnonzero(is_source | is_target)
    if buffer_cells is None:  # in memory every cell is held already; from disk one buffer per group
        buffer_cells = max(source.n_obs, 1) if source.in_memory else BUFFER_CELLS
    elif isinstance(buffer_cells, bool) or not isinstance(buffer_cells, int | np.integer) or buffer_cells < 1:
        raise ConfigError(f"buffer_cells={buffer_cells!r} must be an integer >= 1 (cells of each group held at once).")
    buffer_cells = int(buffer_cells)
    info: dict[str, Any] = {"buffer_cells": buffer_cells}
    if source.path is not None:
        info["streamed_from"] = str(source.path)
    start = time.perf_counter()
    detection = matrix.read(spread_sample(rows, DETECTION_ROWS, seed))
    preprocessor: Preprocessor | None = None
    transform: Callable[[Any], np.ndarray] = _as_values
    if obsm_key is None:
        preprocessor = fit_preprocessor_streaming(lambda: row_blocks(matrix, rows), detection, assume=input_kind)
        info["input_kind"], info["input_kind_reason"] = preprocessor.input_kind, preprocessor.reason
        transform = preprocessor.transform
    else:
        check_signal_streaming(lambda: row_blocks(matrix, rows), detection, name=f"obsm[{obsm_key!r}]")
    del detection
    info["normalisation_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    if embedding is None and space == "autoencoder":  # trained on buffers of both groups' cells
        genes = StreamedCells(
            matrix,
            rows,
            transform,
            matrix.shape[1],
            buffer_cells=buffer_cells,
            seed=seed,
            device=resolve_device((embedding_config or EmbeddingConfig()).device),
        )
        embedding = fit_embedding(space, genes, config=embedding_config, seed=seed, progress=progress)
    elif embedding is None:  # PCA on a uniform sample; gene space needs no data
        sample = spread_sample(rows, EMBEDDING_CELLS if space == "pca" else 2, seed)
        embedding = fit_embedding(
            space, transform(matrix.read(sample)), config=embedding_config, seed=seed, progress=progress
        )
        info["embedding_cells"] = len(sample) if space == "pca" else 0
    elif embedding.n_features != matrix.shape[1]:
        raise InputError(
            f"the given embedding reads {embedding.n_features} features but the data have {matrix.shape[1]}."
        )
    info["embedding_seconds"] = time.perf_counter() - start
    fitted_embedding = embedding

    def encode(raw: Any) -> np.ndarray:
        return fitted_embedding.encode(transform(raw))

    config_class = CONFIGS.get(method)
    # scGen (pertpy) picks its own device: its cells are read on the CPU
    device = resolve_device(getattr(config or (config_class and config_class()), "device", "cpu"))
    groups = [
        StreamedCells(
            matrix, np.flatnonzero(mask), encode, embedding.dim, buffer_cells=buffer_cells, seed=seed + k, device=device
        )
        for k, mask in enumerate((is_source, is_target))
    ]
    start = time.perf_counter()
    effect = None
    if method == "w1":  # one level for every method: the map's own test is the perturbation's
        config = _w1_config(config, effect_alpha)
    if effect_alpha is not None and method in GATED:  # the same test, cells and seed as the W1 map made alone
        effect = effect_test(*groups, seed=seed)
        info["effect"] = effect.to_dict()
        if not effect.detected(effect_alpha) and method != "w1":  # a W1 map says so itself (cellw1.ot.solver)
            logger.warning(
                "no response detected for %r: its cells cannot be told from the controls (energy distance %.3g, "
                "permutation p = %.3g > effect_alpha = %g), so %s predicts the controls unchanged; "
                "pass effect_alpha=None to move them anyway.",
                perturbation,
                effect.energy,
                effect.p_value,
                effect_alpha,
                method,
            )
    fitted = fit_method(
        method, *groups, config=config, seed=seed, progress=progress, effect=effect, effect_alpha=effect_alpha
    )
    info["method_seconds"] = time.perf_counter() - start
    logger.info(
        "fitted %s on %d + %d cells of %s",
        method,
        groups[0].n_cells,
        groups[1].n_cells,
        source.path or "an AnnData in memory",
    )

    calibration = None
    if preprocessor is not None and preprocessor.expression and method in CALIBRATED and fitted.moves:
        control, perturbed = (
            transform(matrix.read(spread_sample(np.flatnonzero(mask), SAMPLE_CELLS, seed + k)))
            for k, mask in enumerate((is_source, is_target))
        )
        predicted = embedding.decode(fitted.predict(embedding.encode(control)))
        # against the perturbed cells; the controls for a method without a response, a mixture for a W1
        # map that applies part of its response
        target = calibration_target(control, perturbed, fitted.resolved, fitted.moves, seed)
        calibration = fit_calibration(predicted, target)
    return preprocessor, embedding, fitted, calibration, info
