"""``cellw1.fit_all``: one model per perturbation, in this process or on a Dask cluster."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from ..errors import CellW1Error, ConfigError, InputError
from ..io.source import Source, check_data_kind, open_source
from ..pp.labels import check_label, condition_labels, label_text, present_labels
from ..tl import api
from ..tl.collection import CollectionDirectory, ModelCollection
from ..tl.methods import check_method
from ..tl.model import PerturbationModel
from ..tl.spec import FitSpec
from .cluster import check_scheduler, fit_on_client, open_client

if TYPE_CHECKING:
    import anndata as ad
    from distributed import Client

logger = logging.getLogger(__name__)


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
        As for :func:`~cellw1.tl.api.fit`; ``adata`` is never modified. Data on disk (a path, or a backed
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
        :class:`~cellw1.tl.collection.CollectionDirectory`.
    scheduler
        ``None``: fit one after the other in this process. ``"local"``: start a Dask
        ``LocalCluster`` of ``n_workers`` processes for this call. ``"tcp://host:port"``: use
        the Dask cluster at that address (``dask scheduler`` / ``dask worker``); or a
        ``distributed.Client``. Each perturbation is one task; see :mod:`cellw1.parallel.cluster`.
    n_workers
        Worker processes of a ``"local"`` cluster (default: one per CPU core, at most one per
        perturbation).
    threads_per_worker
        Torch threads of each fit on a worker (default 1); the models are the same as
        in-process ones fitted with as many threads.
    progress
        Show a progress bar over the perturbations.
    **kwargs
        Keyword arguments of :func:`~cellw1.tl.api.fit` (``method``, ``space``, ``config``, ``seed``...).

    Returns
    -------
    ModelCollection
        The models of the requested perturbations (fitted now or resumed from ``out``),
        in the order requested, with ``failures`` and ``resumed``.
    """
    check_data_kind(adata, "cellw1.fit_all")
    if on_error not in ("skip", "raise"):
        raise ConfigError(f"on_error={on_error!r} must be 'skip' or 'raise'.")
    inspect.signature(api.fit).bind(None, condition_key, control, "", **kwargs)  # an unknown name: TypeError
    if "method" in kwargs:  # a deprecated alias warns once, here; the fits get the method's name
        kwargs["method"] = check_method(kwargs["method"])
    # the fits in this process: labels were checked (and missing ones counted) once, by fit_all
    spec = FitSpec(condition_key=condition_key, control=control, progress=False, warn_missing=False, **kwargs)
    check_scheduler(scheduler, n_workers, threads_per_worker)
    with open_source(adata, "cellw1.fit_all") as source:  # obs read once; the fits in this process read it
        return _fit_labels(
            source,
            spec,
            perturbations,
            on_error=on_error,
            out=out,
            scheduler=scheduler,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            progress=progress,
            kwargs=kwargs,
        )


def _fit_labels(
    source: Source,
    spec: FitSpec,
    perturbations: Sequence[str] | None,
    *,
    on_error: str,
    out: str | os.PathLike | None,
    scheduler: str | Client | None,
    n_workers: int | None,
    threads_per_worker: int,
    progress: bool,
    kwargs: dict[str, Any],
) -> ModelCollection:
    """:func:`fit_all` on an open source: here one fit after the other, or on a Dask cluster."""
    condition_key, control = spec.condition_key, spec.control
    labels = condition_labels(source, condition_key)
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
    store = None if out is None else CollectionDirectory(out, spec.settings(), inputs=[source.origin])
    with store or contextlib.nullcontext():  # out stays locked while written
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
                    outcome: PerturbationModel | CellW1Error = api.fit_source(source, spec.for_perturbation(label))
                except CellW1Error as exc:
                    outcome = exc
                record(label, outcome)
        elif todo:
            assert scheduler is not None
            with (
                open_client(
                    scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker, n_tasks=len(todo)
                ) as client,
                contextlib.closing(
                    fit_on_client(
                        client,
                        source.origin,
                        condition_key,
                        control,
                        todo,
                        kwargs,
                        threads_per_worker=threads_per_worker,
                    )
                ) as results,
            ):
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
