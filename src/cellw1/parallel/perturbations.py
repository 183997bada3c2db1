"""``cellw1.fit_all``: one model per perturbation, in this process or on a Dask cluster."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Generator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from ..errors import CellW1Error, ConfigError, InputError
from ..io.source import Source, check_data_kind, open_source
from ..pp.labels import check_label, condition_labels, label_text, present_labels
from ..tl import api
from ..tl.collection import CollectionDirectory, ModelCollection
from ..tl.methods import check_method
from ..tl.model import PerturbationModel
from ..tl.pipeline import EncodedGroup, encode_group, fit_shared_space, shared_input_kind
from ..tl.shared_embedding import fingerprint, has_weights
from ..tl.spec import FitSpec
from .cluster import check_scheduler, fit_on_client, open_client

if TYPE_CHECKING:
    import anndata as ad
    from distributed import Client

    from ..pp.embedding import Embedding

logger = logging.getLogger(__name__)

#: most fits between two progress lines in the log (else one line every 5% of the fits)
LOG_EVERY = 100

#: most bytes of the controls encoded once in a shared space (50,000 cells x 50 PCs: 10 MB)
ENCODED_BYTES = 256 << 20

#: (perturbation, its model or why it could not be fitted), as the fits finish
Outcomes = Generator[tuple[str, "PerturbationModel | CellW1Error"], None, None]


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
    shared_space: bool = False,
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
        Show a progress bar over the perturbations (with tqdm's estimate of the time left).
        Whatever it is, a line is logged (INFO, logger ``cellw1``) every 5% of the fits, at
        least every :data:`LOG_EVERY` fits, with the seconds per fit and the time left.
    shared_space
        ``False`` (default): each fit fits its own normalisation and embedding on its control
        and perturbation cells, as :func:`~cellw1.tl.api.fit` does. ``True`` (for screens):
        they are fitted once, on the controls and the cells of every requested perturbation
        (a PCA on a seeded sample of at most 50,000 of them), and every fit reuses them,
        so the perturbations' models share one space. With ``out``, the embedding is saved
        once beside ``collection.json`` and each model's file refers to it;
        :func:`cellw1.load` reads it once for the whole collection. See docs/screens.md.
    **kwargs
        Keyword arguments of :func:`~cellw1.tl.api.fit` (``method``, ``space``, ``config``, ``seed``...).
        ``input_kind="auto"`` (the default) is decided once, on the controls and the cells of
        every requested perturbation, logged with its reason and given to every fit (each model
        records it as given), so that the models' predictions share one kind of scale.

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
    if not isinstance(shared_space, bool):
        raise ConfigError(f"shared_space={shared_space!r} must be True or False.")
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
            shared_space=shared_space,
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
    shared_space: bool,
    kwargs: dict[str, Any],
) -> ModelCollection:
    """:func:`fit_all` on an open source: here one fit after the other, or on a Dask cluster."""
    labels = condition_labels(source, spec.condition_key)
    perturbations = _requested(labels, spec, perturbations)
    controls = None  # with a shared space: the controls read through it once, for the fits in this process
    if shared_space:  # before the directory is opened: its settings name the shared space (and so its kind)
        spec, kwargs, controls = _share_space(source, labels, spec, perturbations, kwargs)
    else:  # before the directory is opened: its settings name the kind decided
        spec, kwargs = _one_input_kind(source, labels, spec, perturbations, kwargs)
    store = None if out is None else CollectionDirectory(out, spec.settings(), [source.origin], spec.embedding)
    holding_one_embedding = _holding_one_embedding(spec.embedding)
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
                models[label] = holding_one_embedding(outcome)
                if store is not None:
                    store.add(label, outcome)

        if todo:
            if scheduler is None:
                outcomes = _fit_here(source, spec, todo, controls)
            else:
                outcomes = _fit_there(source, spec, todo, scheduler, n_workers, threads_per_worker, kwargs)
            with contextlib.closing(outcomes), ScreenProgress(len(todo), progress) as bar:
                for label, outcome in outcomes:
                    record(label, outcome)
                    bar.update()
    if failures:
        logger.warning(
            "%d of %d perturbation(s) could not be fitted: %s", len(failures), len(perturbations), ", ".join(failures)
        )
    if not models:
        raise InputError(f"no perturbation could be fitted: {failures}")
    ordered = {p: models[p] for p in perturbations if p in models}
    return ModelCollection(ordered, {p: failures[p] for p in perturbations if p in failures}, resumed)


def _holding_one_embedding(shared: Embedding | None) -> Callable[[PerturbationModel], PerturbationModel]:
    """Give a model the shared space's one embedding object, where it holds an equal copy.

    A model fitted on a Dask worker comes back with its own copy of the shared embedding; the
    collection then holds one embedding, not one per model. The shared embedding is hashed
    once, when the first copy comes back.
    """
    if shared is None or not has_weights(shared):
        return lambda model: model
    one: Embedding = shared
    shared_print = functools.cache(lambda: fingerprint(one))

    def holding(model: PerturbationModel) -> PerturbationModel:
        if model.embedding is not one and fingerprint(model.embedding) == shared_print():
            model.embedding = one
        return model

    return holding


def _requested(labels: Any, spec: FitSpec, perturbations: Sequence[str] | None) -> list[str]:
    """The perturbations to model, checked present: those given, or every label but the control."""
    check_label(labels, spec.control, "control", spec.condition_key)
    if perturbations is None:
        perturbations = [p for p in present_labels(labels) if p != spec.control]
    else:
        if isinstance(perturbations, str):
            perturbations = [perturbations]
        perturbations = list(dict.fromkeys(label_text(p) for p in perturbations))
        for p in perturbations:
            check_label(labels, p, "perturbation", spec.condition_key)
    if not perturbations:
        raise InputError(f"obs[{spec.condition_key!r}] has no label besides the control {spec.control!r}.")
    return list(perturbations)


def _screen_rows(labels: Any, spec: FitSpec, perturbations: list[str]) -> np.ndarray:
    """Row numbers of the controls and of every requested perturbation's cells, increasing."""
    return np.flatnonzero(labels.isin([spec.control, *perturbations]).to_numpy())


def _one_input_kind(
    source: Source, labels: Any, spec: FitSpec, perturbations: list[str], kwargs: dict[str, Any]
) -> tuple[FitSpec, dict[str, Any]]:
    """Decide ``input_kind="auto"`` once, on the controls and every perturbation: every fit is given it.

    Each fit detecting it on its own cells could call one perturbation counts and another
    log-normalised, so that the collection's predictions sit on different scales. (A shared
    space's normalisation is fitted once on the same cells, so it decides once by itself.)
    Returns the settings of every fit and the keywords of the fits on a cluster.
    """
    if spec.preprocessor is not None:  # a given normalisation decides
        return spec, kwargs
    rows = _screen_rows(labels, spec, perturbations)
    fits = f"the {len(perturbations)} fits of cellw1.fit_all"
    kind = shared_input_kind(
        source, rows, assume=spec.input_kind, layer=spec.layer, obsm_key=spec.obsm_key, seed=spec.seed, fits=fits
    )
    if kind == spec.input_kind:
        return spec, kwargs
    return spec.replace(input_kind=kind), {**kwargs, "input_kind": kind}


def _share_space(
    source: Source, labels: Any, spec: FitSpec, perturbations: list[str], kwargs: dict[str, Any]
) -> tuple[FitSpec, dict[str, Any], EncodedGroup | None]:
    """Fit the normalisation and embedding once on the controls and every perturbation; every fit reuses them.

    Returns the settings of every fit, the keywords of the fits on a cluster, and the controls
    read through the space once (``None`` above :data:`ENCODED_BYTES`).
    """
    start = time.perf_counter()
    preprocessor, embedding = fit_shared_space(source, _screen_rows(labels, spec, perturbations), spec)
    control_rows = np.flatnonzero((labels == spec.control).to_numpy())
    controls = None
    if len(control_rows) * embedding.dim * 4 <= ENCODED_BYTES:
        controls = encode_group(source, control_rows, spec, preprocessor, embedding)
    else:  # e.g. many controls in gene space: bounded memory first
        logger.info("the encoded controls would exceed %d MiB: each fit reads them", ENCODED_BYTES >> 20)
    logger.info("shared space of %d perturbations fitted in %.1f s", len(perturbations), time.perf_counter() - start)
    shared = {"preprocessor": preprocessor, "embedding": embedding}
    return spec.replace(**shared), {**kwargs, **shared}, controls


def _fit_here(source: Source, spec: FitSpec, todo: list[str], controls: EncodedGroup | None) -> Outcomes:
    """Fit the perturbations one after the other in this process; yield each outcome."""
    for label in todo:
        try:
            outcome: PerturbationModel | CellW1Error = api.fit_source(source, spec.for_perturbation(label), controls)
        except CellW1Error as exc:
            outcome = exc
        yield label, outcome


def _fit_there(
    source: Source,
    spec: FitSpec,
    todo: list[str],
    scheduler: str | Client,
    n_workers: int | None,
    threads_per_worker: int,
    kwargs: dict[str, Any],
) -> Outcomes:
    """Fit the perturbations on a Dask cluster; yield each outcome as it arrives."""
    with (
        open_client(scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker, n_tasks=len(todo)) as client,
        contextlib.closing(
            fit_on_client(
                client,
                source.origin,
                spec.condition_key,
                spec.control,
                todo,
                kwargs,
                threads_per_worker=threads_per_worker,
            )
        ) as results,
    ):
        yield from results


class ScreenProgress:
    """Progress over a screen's fits: a tqdm bar (its ETA) and a log line every 5% of the fits.

    The log lines (INFO; at most :data:`LOG_EVERY` fits apart) give the fits done, the seconds
    per fit and the time left, for runs without a terminal (``cellw1 fit --quiet -v``).
    """

    def __init__(self, total: int, progress: bool) -> None:
        self.total, self.done = total, 0
        self.every = min(max(total // 20, 1), LOG_EVERY)
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, desc="perturbations", unit="fit", disable=not progress)

    def update(self) -> None:
        """Count one fit more (fitted or failed)."""
        self.done += 1
        self.bar.update()
        if self.done % self.every == 0 or self.done == self.total:
            elapsed = time.perf_counter() - self.start
            each = elapsed / self.done
            logger.info(
                "%d/%d perturbations in %s (%.2f s each); about %s left",
                self.done,
                self.total,
                timedelta(seconds=round(elapsed)),
                each,
                timedelta(seconds=round(each * (self.total - self.done))),
            )

    def __enter__(self) -> ScreenProgress:
        """Show the bar for a ``with`` block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the bar."""
        self.bar.close()
