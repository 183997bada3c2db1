"""``cellw1.fit``: AnnData in, one fitted perturbation model out (:mod:`cellw1.parallel` fits many)."""

from __future__ import annotations

import contextvars
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from ..checks import check_seed
from ..errors import InputError
from ..io.source import Source, feature_matrix, open_source
from ..ot.config import W1Config, W2Config
from ..ot.effect import check_effect_alpha
from ..pp.embedding import Embedding, EmbeddingConfig
from ..pp.labels import label_series, label_text, present_labels
from ..pp.preprocessing import Assumption
from ..pp.spaces import check_space
from .methods import check_config, check_method
from .model import PerturbationModel, check_unique_genes
from .pipeline import EFFECT_ALPHA, fit_pipeline
from .scgen import ScGenConfig

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

#: fewest cells a group may have (the solver also holds a validation share out)
MIN_CELLS = 20

Space = Literal["genes", "pca", "autoencoder"]

#: set while :func:`cellw1.fit_all` fits one label after another: it has already warned about missing labels
MISSING_WARNED: contextvars.ContextVar[bool] = contextvars.ContextVar("cellw1_missing_warned", default=False)


def condition_labels(adata: ad.AnnData | Source, condition_key: str) -> pd.Series:
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
    input_kind: Assumption = "auto",
    effect_alpha: float | None = EFFECT_ALPHA,
    seed: int = 0,
    progress: bool = True,
    buffer_cells: int | None = None,
) -> PerturbationModel:
    """Fit a model predicting ``perturbation`` cells from ``control`` cells.

    Parameters
    ----------
    adata
        Cells x genes; never modified. An AnnData in memory, or data on disk: a path to an
        ``.h5ad`` file or ``.zarr`` store, or an AnnData opened with ``backed="r"``. Every
        kind is read the same way, by rows (:mod:`cellw1.tl.pipeline`); from disk the
        expression matrix is never loaded, and every method can be fitted.
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
        ``"counts"`` (normalise + log1p), ``"log"`` (already log-normalised, non-negative),
        ``"continuous"`` (values of any sign: CyTOF arcsinh, imaging features, z-scores; never
        clipped or calibrated) or ``"auto"`` (detected from the values: negatives mean
        continuous; the decision and its reason are logged and kept in ``model.info``).
    effect_alpha
        Level of the test for a response (:mod:`cellw1.ot.effect`), a property of the
        perturbation: when its cells cannot be told from the controls at this level, every
        method that moves cells predicts the controls unchanged (``model.info["effect"]``).
        ``None``: no test.
    seed
        Seed of every random choice.
    progress
        Show progress bars.
    buffer_cells
        Cells of each group held in memory at once (default: every cell for an AnnData in
        memory, 32,768 from disk); when a group fits in one buffer, it is read once and the
        fit is the same whatever the kind of ``adata``.
    """
    method = check_method(method)  # a deprecated alias warns here and becomes its new name
    check_space(space)
    with open_source(adata, "cellw1.fit") as source:
        return fit_source(
            source,
            condition_key,
            control,
            perturbation,
            layer=layer,
            obsm_key=obsm_key,
            space=space,
            method=method,
            config=config,
            embedding_config=embedding_config,
            embedding=embedding,
            input_kind=input_kind,
            effect_alpha=effect_alpha,
            seed=seed,
            progress=progress,
            buffer_cells=buffer_cells,
        )


def fit_source(
    source: Source,
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
    input_kind: Assumption = "auto",
    effect_alpha: float | None = EFFECT_ALPHA,
    seed: int = 0,
    progress: bool = True,
    buffer_cells: int | None = None,
) -> PerturbationModel:
    """:func:`fit` on an open :class:`~cellw1.io.source.Source` (what :func:`cellw1.fit_all` reuses)."""
    check_method(method)
    check_space(space)
    check_config(method, config)
    check_effect_alpha(effect_alpha)
    seed = check_seed(seed)
    control, perturbation = label_text(control), label_text(perturbation)
    labels = condition_labels(source, condition_key)
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
        check_unique_genes(source.var_names)
    matrix, features = feature_matrix(source, layer=layer, obsm_key=obsm_key)
    start = time.perf_counter()
    info: dict[str, Any] = {"n_control": int(is_source.sum()), "n_perturbed": int(is_target.sum()), "seed": seed}
    preprocessor, embedding, fitted, calibration, diagnostics = fit_pipeline(
        source,
        matrix,
        is_source,
        is_target,
        obsm_key=obsm_key,
        space=space,
        method=method,
        config=config,
        embedding_config=embedding_config,
        embedding=embedding,
        input_kind=input_kind,
        seed=seed,
        progress=progress,
        buffer_cells=buffer_cells,
        effect_alpha=effect_alpha,
        perturbation=perturbation,
    )
    info.update(diagnostics, fit_seconds=time.perf_counter() - start)
    return PerturbationModel(
        features=features,
        preprocessor=preprocessor,
        embedding=embedding,
        method=fitted,
        condition_key=condition_key,
        control=control,
        perturbation=perturbation,
        layer=layer,
        obsm_key=obsm_key,
        info=info,
        calibration=calibration,
    )
