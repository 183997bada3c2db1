"""``cellw1.fit`` and ``cellw1.fit_all``: AnnData in, fitted perturbation models out."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from ._data import check_seed
from ._io import tensor_checksum
from .config import W1Config
from .distributed import check_scheduler, fit_on_client, open_client
from .embedding import Embedding, EmbeddingConfig, check_space, fit_embedding
from .errors import CellW1Error, ConfigError, InputError
from .icnn import W2Config
from .methods import check_config, check_method, fit_method
from .labels import label_series, label_text, present_labels
from .model import CollectionDirectory, ModelCollection, PerturbationModel, check_unique_genes, feature_matrix
from .ondisk import DiskData, check_data_kind, is_on_disk, open_disk_data
from .preprocessing import check_signal, fit_preprocessor
from .streaming import fit_streamed
from .calibration import fit_calibration, sample_rows

if TYPE_CHECKING:
    import anndata as ad
    from distributed import Client

logger = logging.getLogger(__name__)

#: fewest cells a group may have (the solver also holds a validation share out)
MIN_CELLS = 20
#: methods whose predicted expression is calibrated (:mod:`cellw1.calibration`);
#: identity and observed return measured cells (clipped at 0 only)
CALIBRATED = ("w1", "w2", "scgen")

Space = Literal["genes", "pca", "autoencoder"]

#: set while fit_all fits one label after another: it has already warned about missing labels
_MISSING_WARNED: contextvars.ContextVar[bool] = contextvars.ContextVar("cellw1_missing_warned", default=False)


def condition_labels(adata: ad.AnnData | DiskData, condition_key: str) -> pd.Series:
    """``adata.obs[condition_key]`` as text labels (see :mod:`cellw1.labels`); missing ones are ``None``.

    Clear errors for empty data or a missing key; cells without a label are counted in one
    logged warning and belong to no group.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"the AnnData is empty ({adata.n_obs} cells x {adata.n_vars} features).")
    if condition_key not in adata.obs:
        raise InputError(
            f"condition key {condition_key!r} is not a column of adata.obs; available: {list(adata.obs.columns)}."
        )
    return label_series(adata.obs[condition_key], key=condition_key, warn=not _MISSING_WARNED.get())


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
    config: W1Config | W2Config | None = None,
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
        :mod:`cellw1.streaming`); methods ``"w1"`` and ``"identity"``.
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
    buffer_cells
        From disk only: cells of each group held in memory at once (default 32,768); when a
        group fits, it is read once and the fit is the in-memory one.
    """
    check_data_kind(adata, "cellw1.fit")
    check_method(method)
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
    """:func:`fit` on an AnnData in memory or on :class:`~cellw1.ondisk.DiskData`."""
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
                preprocessor.transform(matrix.read(sample_rows(np.flatnonzero(mask), seed + k)))
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
        calibration = tuple(values[sample_rows(np.flatnonzero(mask), seed + k)]
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
    """The output calibration (:mod:`cellw1.calibration`) from log expression of training cells."""
    predicted = model.embedding.decode(model.method.predict(model.embedding.encode(control)))
    return fit_calibration(predicted, perturbed)


def fit_settings(condition_key: str, control: str, fit_kwargs: dict[str, Any]) -> dict[str, Any]:
    """JSON description of how :func:`fit_all` fits its models (kept in a collection's index).

    Checks ``fit_kwargs`` against :func:`fit` first: an unknown name is a TypeError, an
    unknown method or space or a config of the wrong type a ConfigError.
    """
    inspect.signature(fit).bind(None, condition_key, control, "", **fit_kwargs)
    seed = check_seed(fit_kwargs.get("seed", 0))
    method = fit_kwargs.get("method", "w1")
    space = fit_kwargs.get("space", "genes")
    check_method(method)
    check_space(space)
    config = fit_kwargs.get("config")
    expected = check_config(method, config)
    embedding_config, embedding = fit_kwargs.get("embedding_config"), fit_kwargs.get("embedding")
    if embedding is not None:  # an embedding fitted beforehand: its kind and a checksum of its weights
        embedding_settings = {"kind": embedding.kind, "sha256": tensor_checksum(embedding.state_tensors())}
    elif space != "genes":
        embedding_settings = {"kind": space, "config": (embedding_config or EmbeddingConfig()).to_dict()}
    else:
        embedding_settings = None
    return {
        "condition_key": condition_key,
        "control": control,
        "method": method,
        "space": space,
        "layer": fit_kwargs.get("layer"),
        "obsm_key": fit_kwargs.get("obsm_key"),
        "input_kind": fit_kwargs.get("input_kind", "auto"),
        "seed": seed,
        "config": None if expected is None else (config or expected()).to_dict(),
        "embedding": embedding_settings,
    }


def fit_all(
    adata: ad.AnnData | str | os.PathLike,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | None = None,
    *,
    on_error: Literal["skip", "raise"] = "skip",
    out: str | os.PathLike | None = None,
    scheduler: str | Client | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    progress: bool = True,
    **kwargs: Any,
) -> ModelCollection:
    """Fit one model per perturbation against ``control`` (every other label when ``None``).

    Parameters
    ----------
    adata, condition_key, control
        As for :func:`fit`; ``adata`` is never modified. Data on disk (a path, or a backed
        AnnData) are streamed by every fit, and Dask workers read the same path (it must be
        on a file system they share).
    perturbations
        Labels to model; ``None``: every label of ``obs[condition_key]`` but the control.
    on_error
        ``"skip"``: a perturbation that cannot be fitted (too few cells, a worker that died...)
        is logged and listed in ``collection.failures`` while the others are fitted;
        ``"raise"``: the first failure is raised.
    out
        Directory to save the collection to, one model at a time as each is fitted, so an
        interrupted run keeps every finished model. Running again with the same ``out``
        loads the models already there (logged, listed in ``collection.resumed``) and fits
        only the others; a run with other settings is refused. See
        :class:`~cellw1.model.CollectionDirectory`.
    scheduler
        ``None``: fit one after the other in this process. ``"local"``: start a Dask
        ``LocalCluster`` of ``n_workers`` processes for this call. ``"tcp://host:port"``: use
        the Dask cluster at that address (``dask scheduler`` / ``dask worker``); or a
        ``distributed.Client``. Each perturbation is one task; see :mod:`cellw1.distributed`.
    n_workers
        Worker processes of a ``"local"`` cluster (default: one per CPU core, at most one per
        perturbation).
    threads_per_worker
        Torch threads of each fit on a worker (default 1); the models are the same as
        in-process ones fitted with as many threads.
    progress
        Show a progress bar over the perturbations.
    **kwargs
        Keyword arguments of :func:`fit` (``method``, ``space``, ``config``, ``seed``...).

    Returns
    -------
    ModelCollection
        The models of the requested perturbations (fitted now or resumed from ``out``),
        in the order requested, with ``failures`` and ``resumed``.
    """
    check_data_kind(adata, "cellw1.fit_all")
    if on_error not in ("skip", "raise"):
        raise ConfigError(f"on_error={on_error!r} must be 'skip' or 'raise'.")
    control = label_text(control)
    settings = fit_settings(condition_key, control, kwargs)
    check_scheduler(scheduler, n_workers, threads_per_worker)
    if is_on_disk(adata):  # read the labels once; every fit (here or on a worker) streams from the path
        with open_disk_data(adata) as disk:
            labels = condition_labels(disk, condition_key)
            adata = disk.path
    else:
        labels = condition_labels(adata, condition_key)
    check_label(labels, control, "control", condition_key)
    if perturbations is None:
        perturbations = [p for p in present_labels(labels) if p != control]
    else:
        if isinstance(perturbations, str):
            perturbations = [perturbations]
        perturbations = list(dict.fromkeys(label_text(p) for p in perturbations))
        for p in perturbations:
            check_label(labels, p, "perturbation", condition_key)
    if not perturbations:
        raise InputError(f"obs[{condition_key!r}] has no label besides the control {control!r}.")
    store = None if out is None else CollectionDirectory(out, settings, inputs=[adata])
    quiet = _MISSING_WARNED.set(True)  # condition_labels warned once above; the fits below do not repeat it
    with store or contextlib.nullcontext(), contextlib.ExitStack() as reset:  # out stays locked while written
        reset.callback(_MISSING_WARNED.reset, quiet)
        models: dict[str, PerturbationModel] = {} if store is None else store.completed(perturbations)
        if models:
            logger.info("%d model(s) already saved in %s, not fitted again: %s", len(models), out, ", ".join(models))
        resumed = list(models)
        todo = [p for p in perturbations if p not in models]
        failures: dict[str, str] = {}

        def record(label: str, outcome: PerturbationModel | CellW1Error) -> None:
            if isinstance(outcome, CellW1Error):
                if on_error == "raise":
                    raise outcome
                failures[label] = str(outcome)
                logger.warning("could not fit %r: %s", label, outcome)
                if store is not None:
                    store.add_failure(label, str(outcome))
            else:
                models[label] = outcome
                if store is not None:
                    store.add(label, outcome)

        if todo and scheduler is None:
            for label in tqdm(todo, desc="perturbations", disable=not progress):
                try:
                    outcome: PerturbationModel | CellW1Error = fit(
                        adata, condition_key, control, label, progress=False, **kwargs
                    )
                except CellW1Error as exc:
                    outcome = exc
                record(label, outcome)
        elif todo:
            with open_client(
                scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker, n_tasks=len(todo)
            ) as client, contextlib.closing(
                fit_on_client(client, adata, condition_key, control, todo, kwargs, threads_per_worker=threads_per_worker)
            ) as results:
                for label, outcome in tqdm(results, desc="perturbations", total=len(todo), disable=not progress):
                    record(label, outcome)
    if failures:
        logger.warning(
            "%d of %d perturbation(s) could not be fitted: %s", len(failures), len(perturbations), ", ".join(failures)
        )
    if not models:
        raise InputError(f"no perturbation could be fitted: {failures}")
    ordered = {p: models[p] for p in perturbations if p in models}
    return ModelCollection(ordered, {p: failures[p] for p in perturbations if p in failures}, resumed)
