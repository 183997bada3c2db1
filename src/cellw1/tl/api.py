"""``cellw1.fit``: AnnData in, one fitted perturbation model out (:mod:`cellw1.parallel` fits many)."""

from __future__ import annotations

import contextvars
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._data import check_seed
from ..errors import ConfigError, InputError
from ..io.readers import DiskData, check_data_kind, is_on_disk, open_disk_data
from ..ot.config import W1Config
from ..ot.config import W2Config
from ..pp.calibration import SAMPLE_CELLS, fit_calibration
from ..pp.embedding import Embedding, EmbeddingConfig
from ..pp.labels import label_series, label_text, present_labels
from ..pp.preprocessing import check_signal, fit_preprocessor
from ..pp.spaces import check_space, fit_embedding
from .methods import check_config, check_method, fit_method
from .scgen import ScGenConfig
from .model import PerturbationModel, check_unique_genes, feature_matrix
from .streaming import fit_streamed, spread_sample

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

#: fewest cells a group may have (the solver also holds a validation share out)
MIN_CELLS = 20
#: methods whose predicted expression is calibrated (:mod:`cellw1.pp.calibration`);
#: identity and observed return measured cells (clipped at 0 only)
CALIBRATED = ("w1", "w2", "mean_shift", "scgen_vae")

Space = Literal["genes", "pca", "autoencoder"]

#: set while :func:`cellw1.fit_all` fits one label after another: it has already warned about missing labels
MISSING_WARNED: contextvars.ContextVar[bool] = contextvars.ContextVar("cellw1_missing_warned", default=False)


def condition_labels(adata: ad.AnnData | DiskData, condition_key: str) -> pd.Series:
    """``adata.obs[condition_key]`` as text labels (see :mod:`cellw1.pp.labels`); missing ones are ``None``.

    Clear errors for empty data or a missing key; cells without a label are counted in one
    logged warning and belong to no group.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"the AnnData is empty ({adata.n_obs} cells x {adata.n_vars} features).")
    if condition_key not in adata.obs:
        raise InputError(
            f"condition key {condition_key!r} is not a column of adata.obs; available: {list(adata.obs.columns)}."
        )
    return label_series(adata.obs[condition_key], key=condition_key, warn=not MISSING_WARNED.get())


def check_label(labels: pd.Series, value: str, what: str, key: str) -> None:
    """Raise an InputError listing the available labels when ``value`` (text) is absent."""
    if value not in set(present_labels(labels)):
        counts = labels.value_counts()
        shown = ", ".join(f"{k} ({v})" for k, v in counts.head(30).items())
        more = f" and {len(counts) - 30} more" if len(counts) > 30 else ""
        raise InputError(f"{what} {value!r} is not a value of obs[{key!r}]; available: {shown}{more}.")


def fit(
    adata: ad.AnnData | str | os.PathLike,
    condition_key: str,
    control: str,
    perturbation: str,
    *,
    layer: str | None = None,
    obsm_key: str | None = None,
    space: Space = "genes",
    method: str = "w1",
    config: W1Config | W2Config | ScGenConfig | None = None,
    embedding_config: EmbeddingConfig | None = None,
    embedding: Embedding | None = None,
    input_kind: Literal["auto", "counts", "log"] = "auto",
    seed: int = 0,
    progress: bool = True,
    buffer_cells: int | None = None,
) -> PerturbationModel:
    """Fit a model predicting ``perturbation`` cells from ``control`` cells.

    Parameters
    ----------
    adata
        Cells x genes; never modified. An AnnData in memory, or data on disk: a path to an
        ``.h5ad`` file or ``.zarr`` store, or an AnnData opened with ``backed="r"``. From disk
        the expression matrix is never loaded: cells are streamed in buffers (see
        :mod:`cellw1.tl.streaming`); methods ``"w1"`` and ``"identity"``.
    condition_key
        Column of ``adata.obs`` with the condition of each cell.
    control, perturbation
        The control label (source) and the perturbation label (target).
    layer, obsm_key
        Read expression from ``adata.layers[layer]`` instead of ``X``, or fit on an existing
        embedding ``adata.obsm[obsm_key]`` (then no preprocessing is applied).
    space
        Where the map is fitted: ``"genes"`` (directly, as in the paper's 1,000-gene
        experiment), ``"pca"`` or ``"autoencoder"`` (the paper's 50-dim latent space);
        predictions are always returned in gene space.
    method
        ``"w1"`` (default), ``"w2"``, ``"mean_shift"``, ``"scgen_vae"`` (the real scGen,
        optional), ``"identity"`` or ``"observed"`` (see :mod:`cellw1.tl.methods`); ``"scgen"``
        is a deprecated alias of ``"mean_shift"``.
    config
        :class:`~cellw1.ot.config.W1Config` for ``"w1"``, :class:`~cellw1.ot.config.W2Config` for ``"w2"``
        or :class:`~cellw1.tl.scgen.ScGenConfig` for ``"scgen_vae"``.
    embedding_config
        Settings of the PCA / autoencoder.
    embedding
        A fitted embedding to reuse instead of fitting one (e.g. ``other_model.embedding``, so
        several methods share one latent space); it must read the same features.
    input_kind
        ``"counts"`` (normalise + log1p), ``"log"`` (already log-normalised) or ``"auto"``
        (detected from the values; the decision and its reason are logged and kept in ``model.info``).
    seed
        Seed of every random choice.
    progress
        Show progress bars.
    buffer_cells
        From disk only: cells of each group held in memory at once (default 32,768); when a
        group fits, it is read once and the fit is the in-memory one.
    """
    check_data_kind(adata, "cellw1.fit")
    method = check_method(method)  # a deprecated alias warns here and becomes its new name
    check_space(space)
    if is_on_disk(adata):
        with open_disk_data(adata) as disk:
            return _fit(disk, condition_key, control, perturbation, layer=layer, obsm_key=obsm_key, space=space,
                        method=method, config=config, embedding_config=embedding_config, embedding=embedding,
                        input_kind=input_kind, seed=seed, progress=progress, buffer_cells=buffer_cells)
    if buffer_cells is not None:
        raise ConfigError("buffer_cells applies to data on disk (a path or a backed AnnData); drop it for in-memory data.")
    return _fit(adata, condition_key, control, perturbation, layer=layer, obsm_key=obsm_key, space=space,
                method=method, config=config, embedding_config=embedding_config, embedding=embedding,
                input_kind=input_kind, seed=seed, progress=progress, buffer_cells=None)


def _fit(
    adata: ad.AnnData | DiskData,
    condition_key: str,
    control: str,
    perturbation: str,
    *,
    layer: str | None,
    obsm_key: str | None,
    space: Space,
    method: str,
    config: W1Config | W2Config | None,
    embedding_config: EmbeddingConfig | None,
    embedding: Embedding | None,
    input_kind: Literal["auto", "counts", "log"],
    seed: int,
    progress: bool,
    buffer_cells: int | None,
) -> PerturbationModel:
    """:func:`fit` on an AnnData in memory or on :class:`~cellw1.io.readers.DiskData`."""
    check_config(method, config)
    seed = check_seed(seed)
    control, perturbation = label_text(control), label_text(perturbation)
    labels = condition_labels(adata, condition_key)
    check_label(labels, control, "control", condition_key)
    check_label(labels, perturbation, "perturbation", condition_key)
    if control == perturbation:
        raise InputError(f"control and perturbation are both {control!r}; pick two different conditions.")
    is_source = (labels == control).to_numpy()
    is_target = (labels == perturbation).to_numpy()
    for name, mask in ((control, is_source), (perturbation, is_target)):
        if mask.sum() < MIN_CELLS:
            raise InputError(
                f"group {name!r} has {int(mask.sum())} cells; at least {MIN_CELLS} are needed to fit a map."
            )
    if obsm_key is None:
        check_unique_genes(adata.var_names)
    start = time.perf_counter()
    info: dict[str, Any] = {"n_control": int(is_source.sum()), "n_perturbed": int(is_target.sum()), "seed": seed}
    if isinstance(adata, DiskData):
        if obsm_key is not None:
            raise InputError(
                "obsm_key is not supported for data on disk; an embedding is small: load the file into memory "
                "(anndata.read_h5ad) and pass it."
            )
        preprocessor, embedding, fitted, streamed = fit_streamed(
            adata, is_source, is_target, layer=layer, space=space, method=method, config=config,
            embedding_config=embedding_config, embedding=embedding, input_kind=input_kind, seed=seed,
            progress=progress, buffer_cells=buffer_cells,
        )
        info.update(streamed, fit_seconds=time.perf_counter() - start)
        model = PerturbationModel(
            features=list(map(str, adata.var_names)), preprocessor=preprocessor, embedding=embedding, method=fitted,
            condition_key=condition_key, control=control, perturbation=perturbation, layer=layer, info=info,
        )
        if method in CALIBRATED:
            matrix = adata.matrix(layer)
            model.calibration = _calibration(model, *(
                preprocessor.transform(matrix.read(spread_sample(np.flatnonzero(mask), SAMPLE_CELLS, seed + k)))
                for k, mask in enumerate((is_source, is_target))
            ))
        return model
    matrix, features = feature_matrix(adata, layer=layer, obsm_key=obsm_key)
    rows = np.flatnonzero(is_source | is_target)
    both = matrix[rows]
    source_rows = is_source[rows]
    preprocessor = None
    if obsm_key is None:
        preprocessor = fit_preprocessor(both, assume=input_kind)
        logger.info("%s", preprocessor.reason)
        info["input_kind"], info["input_kind_reason"] = preprocessor.input_kind, preprocessor.reason
        values = preprocessor.transform(both)
    else:
        values = np.asarray(both.toarray() if sp.issparse(both) else both, dtype=np.float32)
    if not np.isfinite(values).all():
        raise InputError("the expression values contain NaN or inf; remove or impute those cells first.")
    if obsm_key is not None:
        check_signal(values, f"obsm[{obsm_key!r}]")
    if embedding is None:
        embedding = fit_embedding(space, values, config=embedding_config, seed=seed, progress=progress)
    elif embedding.n_features != values.shape[1]:
        raise InputError(
            f"the given embedding reads {embedding.n_features} features but the data have {values.shape[1]}."
        )
    calibration = None
    if preprocessor is not None and method in CALIBRATED:  # samples of both groups' expression
        calibration = tuple(values[spread_sample(np.flatnonzero(mask), SAMPLE_CELLS, seed + k)]
                            for k, mask in enumerate((source_rows, ~source_rows)))
    latent = embedding.encode(values)
    del both, values  # every copy held here during the fit adds to its peak memory
    source, target = latent[source_rows], latent[~source_rows]
    del latent
    fitted = fit_method(method, source, target, config=config, seed=seed, progress=progress)
    info["fit_seconds"] = time.perf_counter() - start
    model = PerturbationModel(
        features=features, preprocessor=preprocessor, embedding=embedding, method=fitted,
        condition_key=condition_key, control=control, perturbation=perturbation,
        layer=layer, obsm_key=obsm_key, info=info,
    )
    if calibration is not None:
        model.calibration = _calibration(model, *calibration)
    return model


def _calibration(model: PerturbationModel, control: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """The output calibration (:mod:`cellw1.pp.calibration`) from log expression of training cells."""
    predicted = model.embedding.decode(model.method.predict(model.embedding.encode(control)))
    return fit_calibration(predicted, perturbed)
