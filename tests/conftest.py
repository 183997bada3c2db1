"""Shared test data: small count matrices and short solver schedules.

The test modules (and the tests directory, which pytest puts on ``sys.path``) import these
with ``from conftest import ...``.
"""

from __future__ import annotations

import gc
import hashlib
import signal
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellw1 import W1Config

#: the smallest useful W1 schedule and networks: a fit takes a fraction of a second
TINY = W1Config(hidden=(16, 16), step_hidden=(16,), potential_iters=20, regression_iters=20, eval_every=10)
#: a short schedule at the default network size, long enough for a fitted map to move cells
FAST = W1Config(potential_iters=150, regression_iters=100, eval_every=50)


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread() -> Iterator[None]:
    """The suite runs torch with one intra-op thread, the fits' own default (``cpu_threads=1``).

    Test code, and fits with ``cpu_threads=None`` (the autoencoder's default), would otherwise
    use every core: on a small machine shared with other work, OpenMP's waiting threads stall
    these tiny networks (steps 10-100x slower, seconds lost per test at random). The tests of
    the thread policy set the threads they check themselves.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection(session: pytest.Session) -> None:
    """No garbage collection while the test modules (and torch, anndata, Dask...) are imported:
    that makes ~400,000 long-lived objects and no garbage to speak of, yet Python ran a dozen
    full collections on the way, each walking all of them (~1.5 s in all).
    """
    gc.disable()


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.enable()


@pytest.fixture(scope="module", autouse=True)
def frozen_imports() -> None:
    """Before each test module, what is alive (imported modules, session fixtures) leaves the garbage collector.

    Every full collection walked those objects (400,000 after collection, 200,000 more that the
    tests import on first use: scanpy, numba, sympy...): ~0.3 s for each ``gc.collect()`` (the
    prediction writer calls one when it discards a failed output) and for each of Python's own
    full collections; 6.6 s of a run in all, 1.8 s now. The previous module's fixtures are gone
    by then and its garbage is collected first; objects made by the tests are collected as
    before. Frozen objects stay until the process exits.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def single_blas_thread() -> Iterator[None]:
    """The BLAS of numpy and scipy (OpenBLAS) runs one thread in the suite's process, as torch does.

    Once torch has trained a network, an OpenBLAS call with two threads on a small shared machine
    waits for its second thread: the exact SVD of a PCA fit on 720 x 40 cells took 0.2-0.5 s
    instead of 1 ms, in every test fitting in a PCA space. Commands the tests start in other
    processes keep the default.
    """
    import scipy.linalg  # noqa: F401 - load scipy's own OpenBLAS before limiting it
    from threadpoolctl import threadpool_limits  # with scikit-learn, which scanpy needs

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def count_adata(
    groups: Sequence[Any],
    n: int | Sequence[int],
    genes: int,
    *,
    seed: int = 0,
    effects: Mapping[int, float] | None = None,
    affected: int = 5,
    gamma: tuple[float, float] = (2.0, 2.0),
    key: str = "condition",
    covariate: tuple[str, Sequence[str]] | None = None,
    cell_name: str = "cell{}",
    gene_name: str = "gene{}",
    sparse: bool = True,
) -> ad.AnnData:
    """Poisson counts of labelled groups of cells around one gamma-distributed gene profile.

    ``groups[i]`` has ``n`` (or ``n[i]``) cells; ``effects[i]`` multiplies the rate of the
    first ``affected`` genes in group ``i``. ``covariate=(column, values)`` adds a column of
    values drawn at random per cell. Seeded: the same arguments give the same data.
    """
    rng = np.random.default_rng(seed)
    base = rng.gamma(*gamma, size=genes)
    sizes = [n] * len(groups) if isinstance(n, int) else list(n)
    labels = np.repeat(np.asarray(groups), sizes)
    group_of = np.repeat(np.arange(len(groups)), sizes)
    rate = np.tile(base, (len(labels), 1))
    for group, factor in (effects or {}).items():
        rate[group_of == group, :affected] *= factor
    counts = rng.poisson(rate).astype(np.float32)
    columns: dict[str, Any] = {key: labels}
    if covariate is not None:
        columns[covariate[0]] = rng.choice(covariate[1], len(labels))
    obs = pd.DataFrame(columns, index=[cell_name.format(i) for i in range(len(labels))])
    var = pd.DataFrame(index=[gene_name.format(j) for j in range(genes)])
    return ad.AnnData(X=sp.csr_matrix(counts) if sparse else counts, obs=obs, var=var)


def three_perturbation_counts() -> ad.AnnData:
    """Counts of a control (uneven: 70 cells) and perturbations up, down, none; up and down move genes 0-3."""
    return count_adata(
        ["ctrl", "up", "down", "none"],
        [70, 45, 52, 38],
        30,
        seed=1,
        effects={1: 4.0, 2: 0.25},
        affected=4,
        gamma=(2.0, 4.0),
        gene_name="g{}",
    )


def shallow_and_deep_counts() -> ad.AnnData:
    """Counts whose kind one perturbation's cells alone would call differently from the others.

    The controls and ``down`` reach 12 and 10 (small integers: detected as log-normalised on
    their own), ``up`` multiplies genes 0-2 by 6 and reaches 41 (detected as counts).
    """
    return count_adata(
        ["ctrl", "up", "down"], [60, 40, 40], 12, seed=2, effects={1: 6.0, 2: 0.5}, affected=3, gamma=(2.0, 1.0)
    )


def digest(path: Path) -> str:
    """SHA-256 of a file, or of every file under a directory (names and bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def temp_files(*folders: Path) -> list[Path]:
    """Temporary files cellw1 may leave behind (a crash must not)."""
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt during the test, as in an interactive shell: a background shell
    (``nohup python -m pytest &``) starts the tests with SIGINT ignored, where a test that sends
    itself SIGINT would wait for an interruption that never comes. The handler is restored after.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
