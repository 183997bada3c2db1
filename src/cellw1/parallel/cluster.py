"""Fit many perturbation models at once on a Dask cluster (``fit_all(..., scheduler=...)``).

Each perturbation is one Dask task; the cells are scattered once and copied between workers,
each task fits with ``threads_per_worker`` torch threads (so models equal in-process ones), the
client saves each model as it arrives, and a failed fit or a dead worker fails only its own
perturbation. Needs the ``distributed`` extra. The design, with its measurements, is in
docs/parallel.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..errors import CellW1Error, ConfigError, InputError
from ..io.source import MemorySource, feature_matrix
from ..ot.training import cpu_threads
from ..pp.labels import label_series
from ..tl import api
from ..tl.model import PerturbationModel

if TYPE_CHECKING:
    import anndata as ad
    from dask.typing import Key
    from distributed import Client

logger = logging.getLogger(__name__)

#: seconds to wait for a scheduler at an address (and for its first worker)
CONNECT_TIMEOUT = 10.0
#: times the scattered data may be sent again after the workers holding it died
MAX_RESCATTERS = 3
#: no dashboard, and the scheduler's small HTTP server on a free port (not 8787, maybe taken)
LOCAL_CLUSTER_QUIET: dict[str, Any] = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": ":0"}}
#: Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also freezes glibc's mmap
#: threshold at 128 KiB: every torch tensor above that is then an mmap/munmap pair, and fits
#: ran slower in workers than in-process (docs/parallel.md). Our local workers start without
#: it (None unsets it).
WORKER_ENVIRON: dict[str, Any] = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
#: address schemes Dask can connect to
SCHEMES = ("tcp://", "tls://", "ws://", "wss://", "ucx://", "inproc://")


def check_scheduler(scheduler: Any, n_workers: int | None, threads_per_worker: int) -> None:
    """Raise :class:`~cellw1.errors.ConfigError` for an unusable scheduler / worker setting."""
    if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
        raise ConfigError(f"threads_per_worker={threads_per_worker!r} must be an integer >= 1.")
    if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
        raise ConfigError(f"n_workers={n_workers!r} must be an integer >= 1.")
    if scheduler is None:
        if n_workers is not None:
            raise ConfigError(
                "n_workers needs scheduler='local'; without a scheduler the models are fitted in this process."
            )
        return
    if isinstance(scheduler, str) and scheduler != "local":
        if not scheduler.startswith(SCHEMES):
            raise ConfigError(
                f"scheduler={scheduler!r} is neither 'local' nor a Dask scheduler address such as 'tcp://host:8786'."
            )
        if n_workers is not None:
            raise ConfigError(
                f"n_workers applies to scheduler='local' only; the cluster at {scheduler!r} has its own workers."
            )
        _import_distributed()
        from distributed.comm import get_address_host_port

        if not scheduler.startswith("inproc://"):
            try:
                get_address_host_port(scheduler)
            except ValueError as exc:
                raise ConfigError(
                    f"scheduler address {scheduler!r} is malformed ({exc}); write it as 'tcp://host:port', "
                    "e.g. 'tcp://10.0.0.5:8786'."
                ) from exc
        return
    distributed = _import_distributed()  # also for "local": say how to install it before any work
    if not isinstance(scheduler, str) and not isinstance(scheduler, distributed.Client):
        raise ConfigError(
            "scheduler must be None, 'local', an address 'tcp://host:port' or a distributed.Client, "
            f"got {type(scheduler).__name__}."
        )


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(
            'scheduler= needs Dask distributed; install it with `pip install "cellw1[distributed]"`.'
        ) from exc
    return distributed


@contextlib.contextmanager
def open_client(
    scheduler: str | Client, *, n_workers: int | None = None, threads_per_worker: int = 1, n_tasks: int | None = None
) -> Iterator[Client]:
    """A Dask client for ``scheduler``, closed (with any cluster it started) on exit.

    Parameters
    ----------
    scheduler
        ``"local"``: start a :class:`distributed.LocalCluster` of ``n_workers`` processes
        (default: CPU cores // ``threads_per_worker``, at most ``n_tasks``), one task at a
        time each. An address ``"tcp://host:port"``: connect to that scheduler within
        :data:`CONNECT_TIMEOUT` seconds and wait as long for one worker. A
        :class:`distributed.Client`: used as is and left open.
    """
    distributed = _import_distributed()
    if not isinstance(scheduler, str):
        _check_workers(scheduler, "the given client")
        yield scheduler
        return
    if scheduler == "local":
        if n_workers is None:
            n_workers = max(1, (os.cpu_count() or 1) // threads_per_worker)
            if n_tasks is not None:
                n_workers = max(1, min(n_workers, n_tasks))
        logger.info(
            "starting a local Dask cluster of %d worker processes (%d torch thread(s) each)",
            n_workers,
            threads_per_worker,
        )
        import dask  # present with distributed

        with (
            dask.config.set(WORKER_ENVIRON),
            distributed.LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                **LOCAL_CLUSTER_QUIET,
            ) as cluster,
            distributed.Client(cluster, set_as_default=False) as client,
        ):
            _check_workers(client, "the local cluster")
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as exc:  # refused, unknown host, timed out
        raise InputError(
            f"could not reach a Dask scheduler at {scheduler!r} within {CONNECT_TIMEOUT:g} s "
            f"({type(exc).__name__}: {exc}); "
            f"start one with `dask scheduler` and workers with `dask worker {scheduler}`, check the address, "
            "or use scheduler='local'."
        ) from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"the Dask scheduler at {scheduler!r} has no workers after {CONNECT_TIMEOUT:g} s; "
                f"start some with `dask worker {scheduler}`."
            ) from exc
        _check_workers(client, f"the cluster at {scheduler!r}")
        yield client


def _worker_version() -> str:
    """cellw1's version on a worker (run there by :func:`_check_workers`)."""
    from cellw1._version import __version__ as version

    return version


def _check_workers(client: Client, where: str) -> None:
    """Every worker can import cellw1; warn when its version differs from this process's."""
    try:
        versions = client.run(_worker_version)
    except Exception as exc:  # ModuleNotFoundError / pickling errors raised on the worker
        raise ConfigError(
            f"the workers of {where} cannot run cellw1 ({type(exc).__name__}: {exc}); install cellw1 "
            "(the same version) in the workers' Python environment."
        ) from exc
    other = {w: v for w, v in versions.items() if v != __version__}
    if other:
        logger.warning("workers of %s run other cellw1 versions than %s: %s", where, __version__, other)


def shipped_data(
    adata: ad.AnnData,
    condition_key: str,
    labels: Sequence[str],
    *,
    layer: str | None = None,
    obsm_key: str | None = None,
) -> ad.AnnData:
    """The part of ``adata`` that fits of ``labels`` read: those cells, one matrix, the condition.

    :func:`cellw1.fit` on the result gives the same model as on ``adata`` (same rows, same
    order). ``adata`` is not modified.
    """
    import anndata as ad

    conditions = label_series(adata.obs[condition_key], key=condition_key, warn=False)
    rows = np.flatnonzero(conditions.isin(set(labels)).to_numpy())
    matrix, _ = feature_matrix(MemorySource(adata), layer=layer, obsm_key=obsm_key)
    part = matrix.read(rows)
    obs = pd.DataFrame({condition_key: conditions.to_numpy()[rows]}, index=np.asarray(adata.obs_names)[rows])
    var = pd.DataFrame(index=adata.var_names.copy())
    if obsm_key is not None:
        return ad.AnnData(obs=obs, var=var, obsm={obsm_key: part})
    if layer is not None:
        return ad.AnnData(obs=obs, var=var, layers={layer: part})
    return ad.AnnData(X=part, obs=obs, var=var)


def fit_task(
    data: ad.AnnData, condition_key: str, control: str, perturbation: str, fit_kwargs: dict[str, Any], threads: int
) -> PerturbationModel:
    """One task: :func:`cellw1.fit` of ``perturbation`` with ``threads`` torch threads."""
    with cpu_threads(threads):
        return api.fit(data, condition_key, control, perturbation, progress=False, **fit_kwargs)


def fit_on_client(
    client: Client,
    adata: ad.AnnData | str | os.PathLike,
    condition_key: str,
    control: str,
    perturbations: Sequence[str],
    fit_kwargs: dict[str, Any],
    *,
    threads_per_worker: int = 1,
) -> Generator[tuple[str, PerturbationModel | CellW1Error], None, None]:
    """Fit each perturbation as one task on ``client``'s cluster; yield results as they finish.

    Yields ``(perturbation, model)`` or ``(perturbation, error)`` where ``error`` is the
    :class:`~cellw1.errors.CellW1Error` of a fit that failed or of a worker that died.
    Closing the generator early cancels the tasks still pending.
    """
    distributed = _import_distributed()
    data: ad.AnnData | str
    if isinstance(adata, (str, os.PathLike)):  # data on disk: workers read the shared path themselves
        data = os.fspath(adata)
        logger.info("workers stream the cells from %s", data)
    else:
        data = shipped_data(
            adata,
            condition_key,
            [control, *perturbations],
            layer=fit_kwargs.get("layer"),
            obsm_key=fit_kwargs.get("obsm_key"),
        )
        logger.info("sending %d cells x %d features to the workers once", data.n_obs, data.n_vars)
    shared, task_kwargs = _send(client, data, fit_kwargs)
    generation = 0  # how many times the data were sent again
    run = uuid.uuid4().hex[:8]
    futures: list[Any] = []
    label_of: dict[Key, tuple[str, int]] = {}

    def submit(label: str) -> Any:
        future = client.submit(
            fit_task,
            shared,
            condition_key,
            control,
            label,
            task_kwargs,
            threads_per_worker,
            key=f"cellw1-fit-{run}-{len(futures)}-{label}",
            pure=False,
        )
        futures.append(future)
        label_of[str(future.key)] = (label, generation)
        return future

    finished = distributed.as_completed([submit(label) for label in perturbations], loop=client.loop)
    try:
        for future in finished:
            label, used = label_of[str(future.key)]
            try:
                yield label, future.result()
            except CellW1Error as exc:
                yield label, exc
            except distributed.KilledWorker as exc:
                yield (
                    label,
                    CellW1Error(
                        f"the worker fitting {label!r} died ({exc}); it may have run out of memory: "
                        "give the workers more memory or run fewer per machine."
                    ),
                )
            except CancelledError:
                # the only cancellations here: the scattered data were lost with their worker
                if used == generation:
                    if generation >= MAX_RESCATTERS:
                        yield (
                            label,
                            CellW1Error(
                                f"the data for {label!r} were lost with the workers holding them {generation + 1} times."
                            ),
                        )
                        continue
                    generation += 1
                    logger.warning("the data were lost with a worker; sending them again (%d)", generation)
                    shared, task_kwargs = _send(client, data, fit_kwargs)
                finished.add(submit(label))
    finally:
        left = [f for f in futures if not f.done()]
        if left:
            client.cancel(left)


#: keywords of the fits sent to the workers once, as the data are, not with every task
SCATTERED_KWARGS = ("embedding", "preprocessor")


def _send(client: Client, data: Any, fit_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Scatter the data and the fits' large keywords (a shared space) once; the keywords each task takes.

    A scattered keyword is a future in the task's keywords (Dask gives the task its value), so
    10,000 tasks do not each carry a copy of a shared PCA.
    """
    shared = client.scatter(data, broadcast=False, hash=False)
    task_kwargs = dict(fit_kwargs)
    for name in SCATTERED_KWARGS:
        if task_kwargs.get(name) is not None:
            task_kwargs[name] = client.scatter(task_kwargs[name], broadcast=False, hash=False)
    return shared, task_kwargs
