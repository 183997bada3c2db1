"""``cellw1.fit``: AnnData in, one fitted perturbation model out (:mod:`cellw1.parallel` fits many)."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..io.source import Source, open_source
from ..ot.config import W1Config, W2Config
from ..ot.effect import EffectTest
from ..pp.embedding import Embedding, EmbeddingConfig
from ..pp.labels import check_label, condition_labels
from ..pp.preprocessing import Assumption, Preprocessor
from .methods import check_method
from .model import PerturbationModel, check_unique_genes
from .pipeline import EncodedGroup, SingleMethod, fit_pipeline
from .scgen import ScGenConfig
from .spec import EFFECT_ALPHA, MIN_CELLS, FitSpec, Space

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)


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
    preprocessor: Preprocessor | None = None,
    input_kind: Assumption = "auto",
    effect_alpha: float | None = EFFECT_ALPHA,
    seed: int = 0,
    progress: bool = True,
    buffer_cells: int | None = None,
    effect: EffectTest | None = None,
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
    preprocessor
        A fitted normalisation to reuse instead of fitting one (e.g. ``other_model.preprocessor``;
        :func:`cellw1.fit_all` with ``shared_space=True`` gives every fit the screen's).
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
    effect
        The perturbation's test for a response (:func:`cellw1.ot.effect.effect_test`), made
        before on the same cells and seed (an evaluation fitting several methods makes it once):
        every method that moves cells follows it instead of testing again. ``None``: tested here.
    """
    method = check_method(method)  # a deprecated alias warns here and becomes its new name
    spec = FitSpec(
        condition_key=condition_key,
        control=control,
        perturbation=perturbation,
        layer=layer,
        obsm_key=obsm_key,
        space=space,
        method=method,
        config=config,
        embedding_config=embedding_config,
        embedding=embedding,
        preprocessor=preprocessor,
        input_kind=input_kind,
        effect_alpha=effect_alpha,
        effect=effect,
        seed=seed,
        progress=progress,
        buffer_cells=buffer_cells,
    )
    with open_source(adata, "cellw1.fit") as source:
        return fit_source(source, spec)


def fit_source(source: Source, spec: FitSpec, encoded: EncodedGroup | None = None) -> PerturbationModel:
    """Fit as :func:`fit` does, on an open :class:`~cellw1.io.source.Source` with validated settings.

    :func:`cellw1.fit_all` calls it once per perturbation; with a shared space, with the
    controls read through it once (``encoded``, :func:`~cellw1.tl.pipeline.encode_group`).
    """
    if spec.perturbation is None:
        raise InputError("the fit specification names no perturbation; give FitSpec(perturbation=...).")
    labels = condition_labels(source, spec.condition_key, warn=spec.warn_missing)
    check_label(labels, spec.control, "control", spec.condition_key)
    check_label(labels, spec.perturbation, "perturbation", spec.condition_key)
    group_rows = [np.flatnonzero((labels == name).to_numpy()) for name in (spec.control, spec.perturbation)]
    for name, rows in zip((spec.control, spec.perturbation), group_rows, strict=True):
        if len(rows) < MIN_CELLS:
            raise InputError(f"group {name!r} has {len(rows)} cells; at least {MIN_CELLS} are needed to fit a map.")
    if spec.obsm_key is None:
        check_unique_genes(source.var_names)
    start = time.perf_counter()
    info: dict[str, Any] = {"n_control": len(group_rows[0]), "n_perturbed": len(group_rows[1]), "seed": spec.seed}
    result = fit_pipeline(source, group_rows, spec, SingleMethod(spec), encoded)
    info.update(result.info, fit_seconds=time.perf_counter() - start)
    return PerturbationModel(
        features=result.space.features,
        preprocessor=result.space.preprocessor,
        embedding=result.space.embedding,
        method=result.fitted,
        condition_key=spec.condition_key,
        control=spec.control,
        perturbation=spec.perturbation,
        layer=spec.layer,
        obsm_key=spec.obsm_key,
        info=info,
        calibration=result.calibration,
    )
