"""``cellw1.fit`` and ``cellw1.fit_all``: AnnData in, fitted perturbation models out."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from .config import W1Config
from .embedding import EMBEDDINGS, Embedding, EmbeddingConfig, fit_embedding
from .errors import CellW1Error, ConfigError, InputError
from .icnn import W2Config
from .methods import check_method, fit_method
from .model import ModelCollection, PerturbationModel, feature_matrix
from .preprocessing import fit_preprocessor

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

#: fewest cells a group may have (the solver also holds a validation share out)
MIN_CELLS = 20

Space = Literal["genes", "pca", "autoencoder"]


def condition_labels(adata: ad.AnnData, condition_key: str) -> pd.Series:
    """``adata.obs[condition_key]`` as strings, with clear errors for empty data or a missing key."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"the AnnData is empty ({adata.n_obs} cells x {adata.n_vars} features).")
    if condition_key not in adata.obs:
        raise InputError(
            f"condition key {condition_key!r} is not a column of adata.obs; available: {list(adata.obs.columns)}."
        )
    return adata.obs[condition_key].astype(str)


def check_label(labels: pd.Series, value: str, what: str, key: str) -> None:
    """Raise an InputError listing the available labels when ``value`` is absent."""
    if value not in set(labels):
        counts = labels.value_counts()
        shown = ", ".join(f"{k} ({v})" for k, v in counts.head(30).items())
        more = f" and {len(counts) - 30} more" if len(counts) > 30 else ""
        raise InputError(f"{what} {value!r} is not a value of obs[{key!r}]; available: {shown}{more}.")


def fit(
    adata: ad.AnnData,
    condition_key: str,
    control: str,
    perturbation: str,
    *,
    layer: str | None = None,
    obsm_key: str | None = None,
    space: Space = "genes",
    method: str = "w1",
    config: W1Config | W2Config | None = None,
    embedding_config: EmbeddingConfig | None = None,
    embedding: Embedding | None = None,
    input_kind: Literal["auto", "counts", "log"] = "auto",
    seed: int = 0,
    progress: bool = True,
) -> PerturbationModel:
    """Fit a model predicting ``perturbation`` cells from ``control`` cells.

    Parameters
    ----------
    adata
        Cells x genes; never modified.
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
        ``"w1"`` (default), ``"w2"``, ``"scgen"``, ``"identity"`` or ``"observed"``
        (see :mod:`cellw1.methods`).
    config
        :class:`~cellw1.config.W1Config` for ``"w1"`` or :class:`~cellw1.icnn.W2Config` for ``"w2"``.
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
    """
    check_method(method)
    if space not in EMBEDDINGS:
        raise ConfigError(f"unknown space {space!r}; choose one of {', '.join(EMBEDDINGS)}.")
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
    start = time.perf_counter()
    matrix, features = feature_matrix(adata, layer=layer, obsm_key=obsm_key)
    rows = np.flatnonzero(is_source | is_target)
    both = matrix[rows]
    source_rows = is_source[rows]
    preprocessor = None
    info: dict[str, Any] = {"n_control": int(is_source.sum()), "n_perturbed": int(is_target.sum()), "seed": seed}
    if obsm_key is None:
        preprocessor = fit_preprocessor(both, assume=input_kind)
        logger.info("%s", preprocessor.reason)
        info["input_kind"], info["input_kind_reason"] = preprocessor.input_kind, preprocessor.reason
        values = preprocessor.transform(both)
    else:
        values = np.asarray(both.toarray() if sp.issparse(both) else both, dtype=np.float32)
    if not np.isfinite(values).all():
        raise InputError("the expression values contain NaN or inf; remove or impute those cells first.")
    if embedding is None:
        embedding = fit_embedding(space, values, config=embedding_config, seed=seed, progress=progress)
    elif embedding.n_features != values.shape[1]:
        raise InputError(
            f"the given embedding reads {embedding.n_features} features but the data have {values.shape[1]}."
        )
    latent = embedding.encode(values)
    fitted = fit_method(method, latent[source_rows], latent[~source_rows], config=config, seed=seed, progress=progress)
    info["fit_seconds"] = time.perf_counter() - start
    return PerturbationModel(
        features=features, preprocessor=preprocessor, embedding=embedding, method=fitted,
        condition_key=condition_key, control=control, perturbation=perturbation,
        layer=layer, obsm_key=obsm_key, info=info,
    )


def fit_all(
    adata: ad.AnnData,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | None = None,
    *,
    on_error: Literal["skip", "raise"] = "skip",
    progress: bool = True,
    **kwargs: Any,
) -> ModelCollection:
    """Fit one model per perturbation against ``control`` (every other label when ``None``).

    Takes the keyword arguments of :func:`fit`. With ``on_error="skip"`` a perturbation that
    cannot be fitted (too few cells, for example) is logged and listed in
    ``collection.failures`` while the others are fitted; ``"raise"`` stops at the first error.
    """
    labels = condition_labels(adata, condition_key)
    check_label(labels, control, "control", condition_key)
    if perturbations is None:
        perturbations = sorted(set(labels) - {control})
    else:
        perturbations = list(dict.fromkeys(perturbations))
        for p in perturbations:
            check_label(labels, p, "perturbation", condition_key)
    if not perturbations:
        raise InputError(f"obs[{condition_key!r}] has no label besides the control {control!r}.")
    models: dict[str, PerturbationModel] = {}
    failures: dict[str, str] = {}
    for label in tqdm(perturbations, desc="perturbations", disable=not progress):
        try:
            models[label] = fit(adata, condition_key, control, label, progress=False, **kwargs)
        except CellW1Error as exc:
            if on_error == "raise":
                raise
            failures[label] = str(exc)
            logger.warning("could not fit %r: %s", label, exc)
    if not models:
        raise InputError(f"no perturbation could be fitted: {failures}")
    return ModelCollection(models, failures)
