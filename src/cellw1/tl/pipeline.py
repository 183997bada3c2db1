"""The one fit pipeline: normalisation, embedding, method and calibration from a source's rows.

:func:`cellw1.fit` and :func:`cellw1.fit_conditional` open whatever they are given (an AnnData
in memory, a backed AnnData, an ``.h5ad`` or ``.zarr`` path) as a
:class:`~cellw1.io.source.Source` and come here with the row numbers of their groups (control
first) and a :class:`MethodStep`; nothing below depends on where the cells are. The expression
matrix is only ever read by rows, so from disk memory depends on ``buffer_cells`` and the
number of genes, not on the number of cells; in memory a read is a slice.

1. **Normalisation** (:func:`~cellw1.pp.preprocessing.fit_preprocessor_streaming`): the input
   kind is detected on a sample of rows spread over the data; for counts, one pass over the
   training cells of every group collects each cell's total (the median is ``target_sum``)
   and checks every value. An obsm embedding is used as it is (after a check for signal).
2. **Embedding**: the autoencoder trains on minibatches from buffers of every group's cells
   (:class:`~cellw1.ot.sampling.StreamedCells`, normalised as they are read). PCA is fitted on
   a seeded uniform sample of at most :data:`EMBEDDING_CELLS` cells of every group (read by
   row; in memory while it is fitted). Gene space needs no fitting.
3. **Method** (:meth:`MethodStep.fit`): from one :class:`~cellw1.ot.sampling.StreamedCells`
   per group, buffers of ``buffer_cells`` cells read in shuffled blocks of rows, normalised and
   embedded as they are read. When a buffer holds a whole group (always, by default, for data
   in memory) it is read once and the sampling is that of cells held in memory. The single
   map's step (:class:`SingleMethod`) tests the groups for a response first
   (:mod:`cellw1.ot.effect`, the same test at the same level for every method that moves
   cells), so comparisons between methods are fair; the conditional step is
   :class:`cellw1.tl.conditional.fit.ConditionalMethod`.
4. **Calibration** of the expression output (:mod:`cellw1.pp.calibration`,
   :meth:`MethodStep.calibrate`) on a seeded sample of each group
   (:meth:`FittedSpace.expression_sample`), for expression (counts or log-normalised) only:
   continuous values (any sign) are never calibrated, and a method without a response needs none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import scipy.sparse as sp

from ..checks import resolve_device
from ..errors import InputError
from ..io.source import Matrix, MemoryMatrix, Source, feature_matrix
from ..ot.config import W1Config
from ..ot.effect import EffectTest, effect_test
from ..ot.sampling import BUFFER_CELLS, StreamedCells
from ..pp.calibration import SAMPLE_CELLS, calibration_target, fit_calibration
from ..pp.embedding import Embedding, EmbeddingConfig
from ..pp.preprocessing import (
    Assumption,
    Preprocessor,
    check_signal_streaming,
    detect_input_kind,
    fit_preprocessor_streaming,
)
from ..pp.spaces import fit_embedding
from .methods import CONFIGS, GATED, FittedMethod, fit_method
from .spec import FitSpec, PipelineSpec

logger = logging.getLogger(__name__)

#: most cells of every group the PCA is fitted on
EMBEDDING_CELLS = 50_000
#: rows read at once in a pass over the data
PASS_ROWS = 8_192
#: rows read (in blocks spread over the data) to detect the input kind
DETECTION_ROWS = 4_096
#: methods whose predicted expression is calibrated (:mod:`cellw1.pp.calibration`);
#: identity and observed return measured cells (clipped at 0 only)
CALIBRATED = GATED

Fitted = TypeVar("Fitted")


def row_blocks(matrix: Matrix, rows: np.ndarray, size: int = PASS_ROWS) -> Iterator[Any]:
    """Yield the rows ``rows`` (increasing) of ``matrix`` in consecutive blocks of at most ``size``."""
    for start in range(0, len(rows), size):
        yield matrix.read(rows[start : start + size])


def spread_sample(rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Draw a seeded uniform sample of at most ``size`` of ``rows``, increasing."""
    if len(rows) <= size:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False))


def _as_values(raw: Any) -> np.ndarray:
    """Rows of an obsm embedding as float32 cells (no preprocessing), checked finite."""
    values = np.asarray(raw.toarray() if sp.issparse(raw) else raw, dtype=np.float32)
    if not np.isfinite(values).all():
        raise InputError("the embedding contains NaN or inf; remove or impute those cells first.")
    return values


def _cells(values: Any) -> np.ndarray:
    """Cells encoded before, as they are."""
    return values


@dataclass
class FittedSpace:
    """The fitted normalisation and embedding, and every group's cells read through them.

    Attributes
    ----------
    preprocessor
        Counts -> log-normalised expression (``None`` for an obsm embedding).
    embedding
        The fitted space (genes, PCA or autoencoder).
    cells
        One sampler per group (control first), cells in the fitted space ``(n_k, dim)``.
    matrix, group_rows, transform
        The matrix read, each group's row numbers, and raw rows -> the model's input space.
    features
        Names of the matrix's columns (genes, or ``{obsm_key}_{i}``).
    info
        Diagnostics for ``model.info``; the steps add theirs.
    """

    preprocessor: Preprocessor | None
    embedding: Embedding
    cells: list[StreamedCells]
    matrix: Matrix
    group_rows: list[np.ndarray]
    transform: Callable[[Any], np.ndarray]
    features: list[str]
    seed: int
    info: dict[str, Any] = field(default_factory=dict)

    def expression_sample(self, k: int) -> np.ndarray:
        """Read a seeded sample of at most ``SAMPLE_CELLS`` cells of group ``k`` (control ``0``).

        The cells are in the input space (normalised expression), read when asked for: never
        every group at once.
        """
        return self.transform(self.matrix.read(spread_sample(self.group_rows[k], SAMPLE_CELLS, self.seed + k)))


@dataclass(frozen=True)
class EncodedGroup:
    """A group's cells read once through a shared space: a screen's controls.

    ``rows``: the group's row numbers (increasing); ``cells``: ``(n, dim)`` float32, those rows
    normalised by ``preprocessor`` and encoded by ``embedding``. A fit in that space samples
    the group from here, in the same order as from the matrix, instead of reading it again
    (:func:`cellw1.fit_all` with ``shared_space=True``).
    """

    rows: np.ndarray
    cells: np.ndarray
    preprocessor: Preprocessor | None
    embedding: Embedding

    def serves(self, rows: np.ndarray, preprocessor: Preprocessor | None, embedding: Embedding) -> bool:
        """Whether these are the cells of ``rows`` in that space."""
        return self.embedding is embedding and self.preprocessor is preprocessor and np.array_equal(rows, self.rows)


def encode_group(
    source: Source, rows: np.ndarray, spec: PipelineSpec, preprocessor: Preprocessor | None, embedding: Embedding
) -> EncodedGroup:
    """Read ``rows`` (increasing) once, in blocks, through ``preprocessor`` and ``embedding``."""
    matrix, _ = feature_matrix(source, layer=spec.layer, obsm_key=spec.obsm_key)
    transform = _as_values if preprocessor is None else preprocessor.transform
    cells = np.empty((len(rows), embedding.dim), dtype=np.float32)
    for start, block in zip(range(0, len(rows), PASS_ROWS), row_blocks(matrix, rows), strict=True):
        cells[start : start + PASS_ROWS] = embedding.encode(transform(block))
    return EncodedGroup(rows, cells, preprocessor, embedding)


class MethodStep(Protocol[Fitted]):
    """The step of the pipeline that differs between models: fit the method, then calibrate it.

    ``device`` names where the method's cells are read (a config's ``device``).
    """

    device: str

    def fit(self, space: FittedSpace) -> Fitted:
        """Fit the method on the groups' cells in the fitted space (``space.cells``)."""
        ...

    def calibrate(self, space: FittedSpace, fitted: Fitted) -> Any:
        """Fit the calibration of the method's expression output (``None``: none)."""
        ...


@dataclass
class PipelineResult(Generic[Fitted]):
    """What :func:`fit_pipeline` fitted: the space, the method, its calibration, the diagnostics."""

    space: FittedSpace
    fitted: Fitted
    calibration: Any
    info: dict[str, Any]


def buffer_size(source: Source, buffer_cells: int | None) -> int:
    """Count the cells of each group held at once.

    ``buffer_cells``, or by default every cell in memory (a read is a slice) and
    :data:`~cellw1.ot.sampling.BUFFER_CELLS` from disk.
    """
    if buffer_cells is None:
        return max(source.n_obs, 1) if source.in_memory else BUFFER_CELLS
    return buffer_cells


def fit_pipeline(
    source: Source,
    group_rows: list[np.ndarray],
    spec: PipelineSpec,
    step: MethodStep[Fitted],
    encoded: EncodedGroup | None = None,
) -> PipelineResult[Fitted]:
    """Fit normalisation, embedding, the ``step``'s method and its calibration on the groups' rows.

    ``group_rows``: the row numbers of each group (control first); the matrix read is
    expression (``spec.layer`` or ``X``; normalised, calibrated) or ``obsm[spec.obsm_key]``
    (used as it is). ``encoded``: a group already read through the spec's given space.
    """
    matrix, features = feature_matrix(source, layer=spec.layer, obsm_key=spec.obsm_key)
    space = fit_space(source, matrix, features, group_rows, spec, step.device, encoded)
    start = time.perf_counter()
    fitted = step.fit(space)
    space.info["method_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    calibration = step.calibrate(space, fitted)
    space.info["calibration_seconds"] = time.perf_counter() - start
    return PipelineResult(space, fitted, calibration, space.info)


def fit_space(
    source: Source,
    matrix: Matrix,
    features: list[str],
    group_rows: list[np.ndarray],
    spec: PipelineSpec,
    device: str,
    encoded: EncodedGroup | None = None,
) -> FittedSpace:
    """Fit steps 1 and 2, the normalisation and the embedding; make each group's sampler on ``device``.

    A group that ``encoded`` holds in this space is sampled from there, not read again.
    """
    buffer_cells = buffer_size(source, spec.buffer_cells)
    info: dict[str, Any] = {"buffer_cells": buffer_cells}
    if source.path is not None:
        info["streamed_from"] = str(source.path)
    rows = np.sort(np.concatenate(group_rows))
    start = time.perf_counter()
    preprocessor, transform = _fit_normalisation(matrix, rows, spec, info)
    info["normalisation_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    embedding = _fit_embedding(matrix, rows, transform, spec, buffer_cells, info)
    info["embedding_seconds"] = time.perf_counter() - start

    def encode(raw: Any) -> np.ndarray:
        return embedding.encode(transform(raw))

    on = resolve_device(device)
    cells = []
    read: Matrix
    through: Callable[[Any], np.ndarray]
    for k, group in enumerate(group_rows):
        if encoded is not None and encoded.serves(group, preprocessor, embedding):  # same cells, same sampling
            read, positions, through = MemoryMatrix(encoded.cells, name="encoded cells"), np.arange(len(group)), _cells
        else:
            read, positions, through = matrix, group, encode
        cells.append(
            StreamedCells(
                read, positions, through, embedding.dim, buffer_cells=buffer_cells, seed=spec.seed + k, device=on
            )
        )
    return FittedSpace(preprocessor, embedding, cells, matrix, group_rows, transform, features, spec.seed, info)


def fit_shared_space(source: Source, rows: np.ndarray, spec: PipelineSpec) -> tuple[Preprocessor | None, Embedding]:
    """Fit steps 1 and 2 once, on ``rows`` (increasing), for fits that share them (a screen's space).

    :func:`cellw1.fit_all` with ``shared_space=True`` fits them on the controls and every
    perturbation's cells (PCA: on a seeded sample of :data:`EMBEDDING_CELLS` of them); each
    perturbation's fit then takes them as given (``FitSpec(preprocessor=..., embedding=...)``).
    """
    matrix, _ = feature_matrix(source, layer=spec.layer, obsm_key=spec.obsm_key)
    info: dict[str, Any] = {}
    preprocessor, transform = _fit_normalisation(matrix, rows, spec, info)
    embedding = _fit_embedding(matrix, rows, transform, spec, buffer_size(source, spec.buffer_cells), info)
    logger.info("shared space fitted on %d cells: %s, %s", len(rows), info.get("input_kind", "obsm"), embedding.kind)
    return preprocessor, embedding


def detection_sample(matrix: Matrix, rows: np.ndarray, seed: int) -> Any:
    """Read the rows the input kind is detected on: at most :data:`DETECTION_ROWS` spread over ``rows``."""
    return matrix.read(spread_sample(rows, DETECTION_ROWS, seed))


def shared_input_kind(
    source: Source,
    rows: np.ndarray,
    *,
    assume: Assumption,
    layer: str | None,
    obsm_key: str | None,
    seed: int,
    fits: str,
) -> Assumption:
    """Decide the input kind once for several fits of one call, on ``rows`` (increasing) of every group.

    Fits that detect it each on their own cells may disagree (small integers in one group, larger
    ones in another), which would put their predictions on different scales. ``assume`` other
    than ``"auto"``, or an obsm embedding, is returned as it is; otherwise the kind is detected
    on the same sample a fit of those rows would read, logged once (``fits`` names the fits),
    and returned for every fit to be given.
    """
    if assume != "auto" or obsm_key is not None:
        return assume
    matrix, _ = feature_matrix(source, layer=layer, obsm_key=None)
    sample = detection_sample(matrix, rows, seed)
    kind, reason = detect_input_kind(sample)
    log = logger.warning if kind == "continuous" else logger.info  # as for one fit (cellw1.pp.preprocessing)
    log(
        "input of %s, decided once on %d of its %d cells: %s (input_kind=%r for every fit; pass input_kind= to choose)",
        fits,
        sample.shape[0],
        len(rows),
        reason,
        kind,
    )
    return kind


def _fit_normalisation(
    matrix: Matrix, rows: np.ndarray, spec: PipelineSpec, info: dict[str, Any]
) -> tuple[Preprocessor | None, Callable[[Any], np.ndarray]]:
    """Step 1: the preprocessor and raw rows -> input space (an obsm embedding as it is; a given one checked)."""
    given = spec.preprocessor if isinstance(spec, FitSpec) else None
    if given is not None:
        if given.n_features is not None and given.n_features != matrix.shape[1]:
            raise InputError(
                f"the given preprocessor reads {given.n_features} features but the data have {matrix.shape[1]}."
            )
        info["input_kind"], info["input_kind_reason"] = given.input_kind, given.reason
        return given, given.transform
    detection = detection_sample(matrix, rows, spec.seed)
    if spec.obsm_key is not None:
        check_signal_streaming(lambda: row_blocks(matrix, rows), detection, name=f"obsm[{spec.obsm_key!r}]")
        return None, _as_values
    preprocessor = fit_preprocessor_streaming(lambda: row_blocks(matrix, rows), detection, assume=spec.input_kind)
    info["input_kind"], info["input_kind_reason"] = preprocessor.input_kind, preprocessor.reason
    return preprocessor, preprocessor.transform


def _fit_embedding(
    matrix: Matrix,
    rows: np.ndarray,
    transform: Callable[[Any], np.ndarray],
    spec: PipelineSpec,
    buffer_cells: int,
    info: dict[str, Any],
) -> Embedding:
    """Step 2: the given embedding (checked), or one fitted on every group's cells."""
    if spec.embedding is not None:
        if spec.embedding.n_features != matrix.shape[1]:
            raise InputError(
                f"the given embedding reads {spec.embedding.n_features} features but the data have {matrix.shape[1]}."
            )
        return spec.embedding
    if spec.space == "autoencoder":  # trained on buffers of every group's cells
        device = resolve_device((spec.embedding_config or EmbeddingConfig()).device)
        genes = StreamedCells(
            matrix, rows, transform, matrix.shape[1], buffer_cells=buffer_cells, seed=spec.seed, device=device
        )
        return fit_embedding(spec.space, genes, config=spec.embedding_config, seed=spec.seed, progress=spec.progress)
    sample = spread_sample(rows, EMBEDDING_CELLS if spec.space == "pca" else 2, spec.seed)  # genes need no data
    info["embedding_cells"] = len(sample) if spec.space == "pca" else 0
    return fit_embedding(
        spec.space, transform(matrix.read(sample)), config=spec.embedding_config, seed=spec.seed, progress=spec.progress
    )


def _w1_config(config: Any, effect_alpha: float | None) -> W1Config:
    """Set the W1 config's test for a response to the fit's level (a different one is replaced, with a warning)."""
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


class SingleMethod:
    """The method step of a single fit (:func:`cellw1.fit`).

    One method of :mod:`cellw1.tl.methods` from the control (group 0) to the perturbation
    (group 1), after the perturbation's test for a response.
    """

    def __init__(self, spec: FitSpec) -> None:
        self.spec = spec
        config_class = CONFIGS.get(spec.method)
        # scGen (pertpy) picks its own device: its cells are read on the CPU
        self.device: str = getattr(spec.config or (config_class and config_class()), "device", "cpu")

    def fit(self, space: FittedSpace) -> FittedMethod:
        """Test for a response (or take the spec's test), then fit the method."""
        spec, (control, perturbed) = self.spec, space.cells
        config = spec.config
        if spec.method == "w1":  # one level for every method: the map's own test is the perturbation's
            config = _w1_config(config, spec.effect_alpha)
        effect = None
        if spec.effect_alpha is not None and spec.method in GATED:  # the same test, cells and seed as a W1 map alone
            effect = spec.effect if spec.effect is not None else effect_test(control, perturbed, seed=spec.seed)
            space.info["effect"] = effect.to_dict()
            if not effect.detected(spec.effect_alpha) and spec.method != "w1":  # a W1 map says so (cellw1.ot.solver)
                _warn_no_response(effect, spec)
        fitted = fit_method(
            spec.method,
            control,
            perturbed,
            config=config,
            seed=spec.seed,
            progress=spec.progress,
            effect=effect,
            effect_alpha=spec.effect_alpha,
        )
        logger.info("fitted %s on %d + %d cells", spec.method, control.n_cells, perturbed.n_cells)
        return fitted

    def calibrate(self, space: FittedSpace, fitted: FittedMethod) -> np.ndarray | None:
        """Calibrate the predicted controls against the perturbed cells.

        Against the controls for a method without a response, a mixture for a W1 map that
        applies a share of its response.
        """
        pre = space.preprocessor
        if pre is None or not pre.expression or self.spec.method not in CALIBRATED or not fitted.has_response:
            return None
        control, perturbed = space.expression_sample(0), space.expression_sample(1)
        predicted = space.embedding.decode(fitted.predict(space.embedding.encode(control)))
        target = calibration_target(control, perturbed, fitted.response_share, fitted.has_response, self.spec.seed)
        return fit_calibration(predicted, target)


def _warn_no_response(effect: EffectTest, spec: FitSpec) -> None:
    logger.warning(
        "no response detected for %r: its cells cannot be told from the controls (energy distance %.3g, "
        "permutation p = %.3g > effect_alpha = %g), so %s predicts the controls unchanged; "
        "pass effect_alpha=None to move them anyway.",
        spec.perturbation,
        effect.energy,
        effect.p_value,
        spec.effect_alpha,
        spec.method,
    )
