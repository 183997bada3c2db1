"""Training from disk: peak memory and seconds of a fit on 1,000,000 cells that stay on disk.

Issue 5 asks for a synthetic on-disk data set of 1,000,000 cells x 2,000 genes (sparse raw
counts; the dense float32 matrix would be 8 GB), a fit and a prediction that stream it from
disk with a peak resident memory under 4 GiB, the seconds they take, and a comparison with an
ordinary in-memory fit on a subsample that fits in memory. Stages, each run alone (``all``
runs each one in a subprocess, so each peak RSS is that stage's alone, read from
``getrusage(RUSAGE_SELF).ru_maxrss`` at its end):

``generate``
    Writes ``<workdir>/cells.h5ad`` (``--format zarr``: ``cells.zarr``), ``--cells`` x
    ``--genes`` negative-binomial counts as CSR float32, in chunks of ``--chunk-cells`` cells
    (anndata's ``write_elem`` for the first chunk, ``sparse_dataset(...).append`` for the
    others), so memory holds one chunk. ``obs``: ``condition`` (``control`` / ``perturbed``,
    half each, in random order), ``cell_type`` (three types) and the cell's ``state``. Also
    writes ``test.h5ad``: ``--test-cells`` cells drawn from the same distribution with other
    random numbers, never used for fitting. The data are SYNTHETIC (see :class:`Simulator`).
``fit``
    ``cellw1.fit(path, "condition", "control", "perturbed", space=--space)`` on the file
    itself (``--buffer-cells`` cells per group held in memory), saved to ``<workdir>/model_<space>``.
``predict``
    ``cellw1.load(model).predict(path, out=<workdir>/pred.h5ad)`` on the control cells (the
    first ``--predict-cells`` of them, chosen with ``cells=``), streamed to disk; the output
    is deleted afterwards unless ``--keep``.
``compare``
    Reads a uniform random subsample of ``--subsample`` cells per group into memory, fits
    ``cellw1.fit(adata)`` on it with the same space, config and seed, and scores both models
    on the cells of ``test.h5ad``: MMD, energy distance, r2 and l2 between predicted and
    observed perturbed cells on the top-50 DE genes (chosen on training cells) and in a PCA-50
    of all genes (one PCA, fitted on training cells, for both models), next to the identity,
    mean-shift and observed (training perturbed cells) baselines.

``all`` runs the four (``generate`` only when the files are missing, hold another shape, or
``--regenerate``),
writes ``benchmarks/results/on_disk.json`` (``--out``) and prints a table. The data set goes
to ``--workdir`` (default ``cellw1-disk`` in the temporary folder), never inside the repository::

    python -m benchmarks on_disk all [--space pca|genes] [--format h5ad|zarr] [--buffer-cells 32768]
    python -m benchmarks on_disk generate --cells 20000 --genes 500 --workdir /tmp/cellw1-small
    python -m benchmarks on_disk all --quick      # 4,000 cells x 200 genes, short fits: a smoke run

Run with ``OMP_NUM_THREADS=1`` on a shared machine. ``--potential-iters`` / ``--step-iters``
shorten the W1 fits for a quick check (the default is the library's ``W1Config()``).
"""

# %%
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._common import QUICK_RESULTS, RESULTS, ROOT, parse, parser, write_json

WORKDIR = Path(tempfile.gettempdir()) / "cellw1-disk"
#: the options of a smoke run (``--quick``): a small data set in a folder of its own
QUICK = {
    "cells": 4_000,
    "genes": 200,
    "chunk_cells": 1_000,
    "test_cells": 500,
    "subsample": 1_000,
    "potential_iters": 30,
    "step_iters": 30,
    "workdir": str(QUICK_RESULTS / "on_disk_data"),
}
#: options of the runner, not of a stage
NOT_PASSED = ("stage", "benchmark", "quick", "quick_settings")
STAGES = ("generate", "fit", "predict", "compare")
CONDITION, CONTROL, PERTURBED = "condition", "control", "perturbed"
#: prefix of the one stdout line where a stage reports its result (JSON)
RESULT_TAG = "RESULT "
#: cells simulated at once (the data do not depend on --chunk-cells, a multiple of it)
BLOCK_CELLS = 1_000
#: random-number streams of the simulation (the test file differs from the training file only here)
TRAIN_STREAM, TEST_STREAM = 1, 2
#: elements per storage chunk of X's data / indices / indptr (256 KiB of float32), both formats;
#: without it the files keep the chunking guessed for the first written chunk
STORAGE_CHUNK = 1 << 16
GIB = 2.0**30


# -- measuring -------------------------------------------------------------------------------------
def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def rss_gib() -> float:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


def size_gib(path: Path) -> float:
    """Bytes on disk of a file, or of every file under a directory (a zarr store)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / GIB
    return path.stat().st_size / GIB


def say(message: str) -> None:
    """Progress to stderr (stdout carries the stage's result line)."""
    print(message, file=sys.stderr, flush=True)


# -- the synthetic data ----------------------------------------------------------------------------
@dataclasses.dataclass
class Simulator:
    """SYNTHETIC perturbation counts: negative binomial around a type- and state-dependent mean.

    For cell ``c`` of type ``k_c`` (one of three), perturbed or not (``p_c``), with state
    ``s_c ~ U(0, 1)`` and library factor ``L_c ~ LogNormal(0, 0.4)``::

        log mu_cg = log L_c + base_g + type_kg + p_c * effect_kg + s_c * (slope_g + p_c * slope_effect_g)
        count_cg ~ NB(mean mu_cg, shape theta)    (Poisson-Gamma, variance mu + mu^2 / theta)

    ``base_g ~ N(0, gene_sd)`` (log-normal gene means), shifted so that the expected share of
    non-zero entries is ``density``; each type has its own program on 10% of the genes.
    The perturbation moves ``n_effect`` genes among the best-expressed quarter, half up and
    half down by 0.7-1.5 in log: 40% of them alike in every type, 30% by a type-dependent
    factor (1.5, 0.5, 1.0), 30% in one type only; a third of them grow with the state. Every
    gene-level quantity comes from ``seed`` alone; each cell block has its own stream.
    """

    n_genes: int
    seed: int = 0
    density: float = 0.07
    theta: float = 4.0
    gene_sd: float = 1.5
    n_types: int = 3

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        g, k = self.n_genes, self.n_types
        base = rng.normal(0.0, self.gene_sd, size=g)
        type_lfc = rng.normal(0.0, 0.25, size=(k, g))
        for t in range(k):
            program = rng.choice(g, size=max(1, g // 10), replace=False)
            type_lfc[t, program] += rng.normal(0.0, 1.0, size=program.size)
        slope = np.zeros(g)
        varying = rng.choice(g, size=max(1, g // 5), replace=False)
        slope[varying] = rng.normal(0.0, 0.7, size=varying.size)
        n_effect = max(2, min(100, g // 5))
        expressed = np.argsort(-base)[: max(n_effect, g // 4)]
        genes = rng.choice(expressed, size=n_effect, replace=False)
        size = rng.uniform(0.7, 1.5, size=n_effect) * np.where(np.arange(n_effect) % 2 == 0, 1.0, -1.0)
        effect = np.zeros((k, g))
        n_same, n_scaled = int(0.4 * n_effect), int(0.3 * n_effect)
        effect[:, genes[:n_same]] = size[:n_same]
        factors = np.resize([1.5, 0.5, 1.0], k)[:, None]
        effect[:, genes[n_same : n_same + n_scaled]] = factors * size[n_same : n_same + n_scaled]
        for j, gene in enumerate(genes[n_same + n_scaled :]):
            effect[j % k, gene] = 1.5 * size[n_same + n_scaled + j]
        slope_effect = np.zeros(g)
        with_state = genes[::3]
        slope_effect[with_state] = 0.8 * np.sign(size[::3])
        self.effect_genes = np.sort(genes)
        # log-mean tables: row 2 k + p for type k, perturbed p; slopes per p
        self.table = np.stack([base + type_lfc[t] + p * effect[t] for t in range(k) for p in (0, 1)]).astype(np.float32)
        self.slopes = np.stack([slope, slope + slope_effect]).astype(np.float32)
        self.table += np.float32(self._calibrate(rng))

    def _calibrate(self, rng: np.random.Generator) -> float:
        """The shift of ``base`` whose expected share of non-zero counts is ``density``."""
        cells = self.cells(1_000, rng)
        log_mu = self._log_mean(cells).astype(np.float64)
        lo, hi = -20.0, 20.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            nonzero = 1.0 - np.exp(-self.theta * np.log1p(np.exp(log_mu + mid) / self.theta))
            lo, hi = (mid, hi) if nonzero.mean() < self.density else (lo, mid)
        return 0.5 * (lo + hi)

    def cells(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        """Cell-level draws: condition (half each, random order), type, state, library factor."""
        perturbed = rng.permutation(np.arange(n) % 2 == 1)
        return pd.DataFrame(
            {
                "perturbed": perturbed,
                "cell_type": rng.integers(0, self.n_types, size=n),
                "state": rng.uniform(0.0, 1.0, size=n).astype(np.float32),
                "log_library": rng.normal(0.0, 0.4, size=n).astype(np.float32),
            }
        )

    def _log_mean(self, cells: pd.DataFrame) -> np.ndarray:
        p = cells["perturbed"].to_numpy().astype(np.int64)
        log_mu = self.table[2 * cells["cell_type"].to_numpy() + p]
        log_mu += cells["log_library"].to_numpy()[:, None]
        log_mu += cells["state"].to_numpy()[:, None] * self.slopes[p]
        return log_mu

    def counts(self, cells: pd.DataFrame, rng: np.random.Generator) -> sp.csr_matrix:
        """NB counts ``(n_cells, n_genes)`` as a CSR float32 matrix, dense only block by block.

        Whether an entry is zero is decided for every entry (``u > P(0)``, one uniform); only the
        non-zero ones get a count: by inverse CDF from the same ``u`` where the mean is below 1,
        else by an NB draw conditioned on being positive (rejection; ``P(0) < 0.41`` there).
        """
        mu = np.exp(self._log_mean(cells))
        log_p0 = np.log1p(mu / np.float32(self.theta))
        log_p0 *= -np.float32(self.theta)
        u = rng.random(mu.shape, dtype=np.float32)
        with np.errstate(divide="ignore"):
            nonzero = np.log(u) > log_p0
        flat = np.flatnonzero(nonzero)
        m = mu.ravel()[flat].astype(np.float64)
        values = np.empty(flat.size, dtype=np.float64)
        small = m < 1.0
        values[small] = self._positive_by_inverse_cdf(m[small], u.ravel()[flat[small]].astype(np.float64))
        values[~small] = self._positive_by_rejection(m[~small], rng)
        n, g = mu.shape
        rows = flat // g
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return sp.csr_matrix((values.astype(np.float32), (flat % g).astype(np.int32), indptr), shape=(n, g))

    def _positive_by_inverse_cdf(self, m: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Smallest ``k >= 1`` with ``CDF(k) >= u`` (for ``u > P(0)``), NB of mean ``m``, shape theta."""
        theta = self.theta
        q = m / (theta + m)
        pmf = np.exp(theta * np.log1p(-q))
        cdf = pmf.copy()
        out = np.zeros(m.size)
        active = np.arange(m.size)
        k = 0
        while active.size:
            k += 1
            pmf *= (k - 1 + theta) / k * q
            cdf += pmf
            done = (u <= cdf) | (pmf < 1e-15)  # the second: a tail below round-off
            out[active[done]] = k
            keep = ~done
            active, q, pmf, cdf, u = active[keep], q[keep], pmf[keep], cdf[keep], u[keep]
        return out

    def _positive_by_rejection(self, m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """NB draws of mean ``m`` conditioned on ``> 0``, redrawing the zeros."""
        out = np.zeros(m.size)
        todo = np.arange(m.size)
        while todo.size:
            draw = rng.negative_binomial(self.theta, self.theta / (self.theta + m[todo]))
            out[todo] = draw
            todo = todo[draw == 0]
        return out

    def chunk(self, cells: pd.DataFrame, start: int, stream: int) -> sp.csr_matrix:
        """Counts of ``cells`` (rows ``start...`` of the file).

        One random stream per block of :data:`BLOCK_CELLS` rows, so the data do not depend on how the
        file is chunked.
        """
        parts = []
        for lo in range(0, len(cells), BLOCK_CELLS):
            block = (start + lo) // BLOCK_CELLS
            rng = np.random.default_rng([self.seed, stream, block])
            parts.append(self.counts(cells.iloc[lo : lo + BLOCK_CELLS], rng))
        return sp.vstack(parts, format="csr")


def draw_obs(sim: Simulator, n_cells: int, stream: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cell draws for :meth:`Simulator.chunk`, the file's obs) for ``n_cells`` cells."""
    cells = sim.cells(n_cells, np.random.default_rng([sim.seed, stream, 10**9]))
    width = len(str(n_cells - 1))
    obs = pd.DataFrame(
        {
            CONDITION: pd.Categorical.from_codes(cells["perturbed"].to_numpy().astype(np.int8), [CONTROL, PERTURBED]),
            "cell_type": pd.Categorical.from_codes(
                cells["cell_type"].to_numpy(), [f"type{t}" for t in range(sim.n_types)]
            ),
            "state": cells["state"].to_numpy(),
        },
        index=pd.Index([f"cell{i:0{width}d}" for i in range(n_cells)]),
    )
    return cells, obs


def gene_names(n_genes: int) -> pd.Index:
    """``g0 ... g{n_genes - 1}``, zero-padded to one width so that they sort in order."""
    width = len(str(n_genes - 1))
    return pd.Index([f"g{j:0{width}d}" for j in range(n_genes)])


def write_chunked(path: Path, shell: Any, blocks: Iterator[sp.csr_matrix], fmt: str) -> int:
    """Write the AnnData ``shell`` (obs, var, uns; no X) and then X, one CSR block at a time.

    ``X`` is anndata's ``csr_matrix`` encoding: ``write_elem`` writes the first block
    (resizable datasets, :data:`STORAGE_CHUNK` elements per storage chunk) and
    ``sparse_dataset(...).append`` each next one, so memory holds one block. The file is
    written under a temporary name and renamed when whole. Returns the number of non-zeros.
    """
    import anndata as ad
    from anndata.io import sparse_dataset, write_elem

    partial = path.with_name(path.name + ".partial")
    for old in (partial, path):
        shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    if fmt == "h5ad":
        import h5py

        shell.write_h5ad(partial)
        handle = h5py.File(partial, "r+")
    else:
        import zarr

        handle = zarr.open_group(partial, mode="w", zarr_format=ad.settings.zarr_write_format)
        write_elem(handle, "/", shell)
    nnz, first = 0, True
    try:
        for block in blocks:
            if nnz + block.nnz >= 2**31:
                raise RuntimeError("more than 2**31 non-zeros: anndata's int32 indptr would overflow; lower --density.")
            if first:
                write_elem(handle, "X", block, dataset_kwargs={"chunks": (STORAGE_CHUNK,)})
                first = False
            else:
                sparse_dataset(handle["X"]).append(block)
            nnz += block.nnz
    finally:
        if fmt == "h5ad":
            handle.close()
    if fmt == "zarr":
        import zarr

        zarr.consolidate_metadata(str(partial))
    partial.rename(path)
    return nnz


def write_dataset(path: Path, sim: Simulator, n_cells: int, stream: int, chunk_cells: int, fmt: str) -> dict[str, Any]:
    """Simulate ``n_cells`` cells into ``path`` (h5ad or zarr), ``chunk_cells`` at a time."""
    import anndata as ad

    cells, obs = draw_obs(sim, n_cells, stream)
    uns = {
        "synthetic": {
            "generator": "benchmarks/on_disk.py Simulator (synthetic, not measured data)",
            "seed": sim.seed,
            "stream": stream,
            "density_target": sim.density,
            "theta": sim.theta,
            "effect_genes": [str(g) for g in gene_names(sim.n_genes)[sim.effect_genes]],
        }
    }
    shell = ad.AnnData(obs=obs, var=pd.DataFrame(index=gene_names(sim.n_genes)), uns=uns)
    step = max(BLOCK_CELLS, chunk_cells // BLOCK_CELLS * BLOCK_CELLS)
    start_time = time.perf_counter()

    def blocks() -> Iterator[sp.csr_matrix]:
        nnz = 0
        for start in range(0, n_cells, step):
            block = sim.chunk(cells.iloc[start : start + step], start, stream)
            yield block
            nnz += block.nnz
            done = min(start + step, n_cells)
            if n_cells > step:
                say(
                    f"  {done:>9,d} / {n_cells:,d} cells, {nnz / (done * sim.n_genes):.3f} non-zero, "
                    f"{time.perf_counter() - start_time:6.1f} s, rss {rss_gib():.2f} GiB"
                )

    nnz = write_chunked(path, shell, blocks(), fmt)
    n_perturbed = int(cells["perturbed"].sum())
    return {
        "path": str(path),
        "cells": n_cells,
        "genes": sim.n_genes,
        "nnz": nnz,
        "density": nnz / (n_cells * sim.n_genes),
        "n_control": n_cells - n_perturbed,
        "n_perturbed": n_perturbed,
        "size_gib": size_gib(path),
        "dense_float32_gib": n_cells * sim.n_genes * 4 / GIB,
    }


# -- reading ---------------------------------------------------------------------------------------
def open_matrix(path: Path) -> tuple[Any, Any]:
    """(the file's group, its ``X`` as anndata's backed CSR dataset), h5ad or zarr alike."""
    from anndata.io import sparse_dataset

    if path.suffix == ".zarr":
        import zarr

        group = zarr.open_group(str(path), mode="r")
    else:
        import h5py

        group = h5py.File(path, "r")
    return group, sparse_dataset(group["X"])


def read_obs_column(group: Any, key: str) -> pd.Series:
    """One obs column read alone (the other columns and the index stay on disk)."""
    from anndata.io import read_elem

    return pd.Series(read_elem(group["obs"][key]))


def read_row_blocks(x: Any, rows: np.ndarray, chunk_cells: int) -> Iterator[sp.csr_matrix]:
    """Rows ``rows`` (sorted positions) of a backed CSR matrix, block by block.

    Contiguous slices of ``chunk_cells`` rows are read and the wanted rows kept (sequential reads).
    """
    for start in range(0, x.shape[0], chunk_cells):
        stop = min(start + chunk_cells, x.shape[0])
        lo, hi = np.searchsorted(rows, [start, stop])
        if hi > lo:
            yield x[start:stop][rows[lo:hi] - start]


def read_rows(x: Any, rows: np.ndarray, chunk_cells: int) -> sp.csr_matrix:
    """Rows ``rows`` (sorted positions) of a backed CSR matrix, in memory."""
    return sp.vstack(list(read_row_blocks(x, rows, chunk_cells)), format="csr")


# -- stages ----------------------------------------------------------------------------------------
def data_path(args: argparse.Namespace) -> Path:
    """The training data set's file in ``--workdir``, with the ``--format`` suffix."""
    return Path(args.workdir) / f"cells.{args.format}"


def w1_config(args: argparse.Namespace) -> Any:
    """``W1Config()`` with --potential-iters / --step-iters when given, else ``None`` (the default)."""
    import cellw1

    changes = {k: v for k, v in (("potential_iters", args.potential_iters), ("step_iters", args.step_iters)) if v}
    return cellw1.W1Config(**changes) if changes else None


def stage_generate(args: argparse.Namespace) -> dict[str, Any]:
    """Simulate the training file and the test file in ``--workdir``; their sizes and seconds."""
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("model_*"):  # made from the previous data set
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    start = time.perf_counter()
    sim = Simulator(args.genes, seed=args.seed, density=args.density)
    say(f"generate: {args.cells:,d} cells x {args.genes:,d} genes -> {data_path(args)}")
    train = write_dataset(data_path(args), sim, args.cells, TRAIN_STREAM, args.chunk_cells, args.format)
    train["seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    test = write_dataset(workdir / "test.h5ad", sim, args.test_cells, TEST_STREAM, args.chunk_cells, "h5ad")
    test["seconds"] = time.perf_counter() - start
    return {"train": train, "test": test, "effect_genes": len(sim.effect_genes)}


def stage_fit(args: argparse.Namespace) -> dict[str, Any]:
    """Fit a W1 model streaming from the file on disk and save it; its seconds, peak memory and info."""
    import cellw1

    path = data_path(args)
    kwargs: dict[str, Any] = {"space": args.space, "progress": False, "seed": 0, "config": w1_config(args)}
    if args.buffer_cells is not None:
        kwargs["buffer_cells"] = args.buffer_cells
    model_dir = Path(args.workdir) / f"model_{args.space}"
    shutil.rmtree(model_dir, ignore_errors=True)  # a failed fit must not leave an older model to compare
    rss_before = rss_gib()
    say(f"fit: cellw1.fit({str(path)!r}, space={args.space!r}) streaming from disk")
    start = time.perf_counter()
    model = cellw1.fit(str(path), CONDITION, CONTROL, PERTURBED, **kwargs)
    seconds = time.perf_counter() - start
    model.save(model_dir)
    return {
        "seconds": seconds,
        "peak_rss_gib": peak_rss_gib(),
        "rss_before_fit_gib": rss_before,
        "model": str(model_dir),
        "buffer_cells": args.buffer_cells,
        "config": (kwargs["config"] or cellw1.W1Config()).to_dict(),
        "info": model.info,
    }


def stage_predict(args: argparse.Namespace) -> dict[str, Any]:
    """Predict the file's control cells into ``pred.h5ad`` from the saved model; seconds, memory and output size."""
    import cellw1

    path = data_path(args)
    model = cellw1.load(Path(args.workdir) / f"model_{args.space}")
    group, _ = open_matrix(path)
    control = np.flatnonzero(read_obs_column(group, CONDITION).to_numpy() == CONTROL)
    if hasattr(group, "close"):
        group.close()
    cells = control[: args.predict_cells]
    kwargs: dict[str, Any] = {"out": str(Path(args.workdir) / "pred.h5ad"), "cells": cells}
    source, n_cells, how = path, int(cells.size), "predict(path, cells=control rows)"
    out = Path(kwargs["out"])
    out.unlink(missing_ok=True)
    rss_before = rss_gib()
    say(f"predict: {n_cells:,d} control cells of {source} -> {out}")
    start = time.perf_counter()
    model.predict(str(source), **kwargs)
    seconds = time.perf_counter() - start
    peak = peak_rss_gib()
    import h5py

    with h5py.File(out, "r") as fh:  # X: a dense dataset, or a sparse group with a shape attribute
        shape = [int(s) for s in (fh["X"].attrs["shape"] if isinstance(fh["X"], h5py.Group) else fh["X"].shape)]
    result = {
        "seconds": seconds,
        "peak_rss_gib": peak,
        "rss_before_predict_gib": rss_before,
        "cells": n_cells,
        "input": str(source),
        "how": how,
        "output": str(out),
        "output_shape": shape,
        "output_gib": size_gib(out),
        "kept": args.keep,
    }
    if not args.keep:
        out.unlink()
    return result


def score(pred: np.ndarray, obs: np.ndarray) -> dict[str, float]:
    """MMD, energy distance (on at most 2,000 cells), r2 and l2 of ``pred`` against ``obs``."""
    from cellw1.eval.metrics import energy_distance, l2, mmd, r2

    return {
        "mmd": mmd(pred, obs, max_points=2000),
        "energy": energy_distance(pred, obs, max_points=2000),
        "r2": r2(pred, obs),
        "l2": l2(pred, obs),
    }


def read_subsample(args: argparse.Namespace) -> tuple[Any, dict[str, np.ndarray], float]:
    """A uniform random subsample of ``--subsample`` cells per group, read into memory."""
    import anndata as ad

    group, x = open_matrix(data_path(args))
    labels = read_obs_column(group, CONDITION).to_numpy()
    cell_type = read_obs_column(group, "cell_type").to_numpy()
    rng = np.random.default_rng([args.seed, 3])
    picked = {}
    for label in (CONTROL, PERTURBED):
        pos = np.flatnonzero(labels == label)
        picked[label] = rng.choice(pos, size=min(args.subsample, pos.size), replace=False)
    rows = np.sort(np.concatenate(list(picked.values())))
    start = time.perf_counter()
    matrix = read_rows(x, rows, args.chunk_cells)
    read_seconds = time.perf_counter() - start
    genes = ad.io.read_elem(group["var"]).index
    if hasattr(group, "close"):
        group.close()
    obs = pd.DataFrame(
        {CONDITION: pd.Categorical(labels[rows]), "cell_type": pd.Categorical(cell_type[rows])},
        index=pd.Index([f"cell{i}" for i in rows]),
    )
    return ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=genes)), picked, read_seconds


def training_sample(adata: Any, label: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` cells of group ``label`` of the in-memory subsample, in row order."""
    return np.sort(rng.choice(np.flatnonzero(adata.obs[CONDITION] == label), n, replace=False))


def score_models(args: argparse.Namespace, adata: Any, picked: dict, memory_model: Any) -> dict[str, Any]:
    """Both models and the baselines on the test file's cells, on the DE genes and in a PCA-50."""
    import anndata as ad

    import cellw1
    from cellw1.eval.degenes import top_de_genes
    from cellw1.pp.spaces import fit_embedding

    workdir = Path(args.workdir)
    # Scoring: the test file's cells (never fitted on), in each model's own log-normalised genes.
    test = ad.read_h5ad(workdir / "test.h5ad")
    is_control = (test.obs[CONDITION] == CONTROL).to_numpy()
    test_control, test_perturbed = test[is_control], test[~is_control]
    ref = memory_model  # training-cell statistics: DE genes, a common PCA, baselines
    train_rng = np.random.default_rng([args.seed, 4])
    train_ctrl = ref.preprocess(adata[training_sample(adata, CONTROL, min(5_000, picked[CONTROL].size), train_rng)])
    train_pert = ref.preprocess(adata[training_sample(adata, PERTURBED, min(5_000, picked[PERTURBED].size), train_rng)])
    de = top_de_genes(train_ctrl, train_pert, ref.features, n_genes=args.de_genes)
    de_pos = pd.Index(ref.features).get_indexer(de)
    pca = fit_embedding("pca", np.vstack([train_ctrl, train_pert]), seed=0)
    n_obs_baseline = min(train_pert.shape[0], int((~is_control).sum()))

    def spaces(pred: np.ndarray, observed: np.ndarray) -> dict[str, dict[str, float]]:
        return {
            f"de{len(de)}": score(pred[:, de_pos], observed[:, de_pos]),
            "pca50": score(pca.encode(pred), pca.encode(observed)),
        }

    observed_ref = ref.preprocess(test_perturbed)
    control_ref = ref.preprocess(test_control)
    scores: dict[str, Any] = {
        "identity": spaces(control_ref, observed_ref),
        "mean_shift": spaces(control_ref + (train_pert.mean(0) - train_ctrl.mean(0)), observed_ref),
        "observed": spaces(train_pert[:n_obs_baseline], observed_ref),
    }
    models = {"in_memory": memory_model}
    disk_dir = workdir / f"model_{args.space}"
    if (disk_dir / "model.json").exists():
        models["disk"] = cellw1.load(disk_dir)
    predictions = {}
    for name, model in models.items():
        predictions[name] = np.asarray(model.predict(test_control).X)
        scores[name] = spaces(predictions[name], model.preprocess(test_perturbed))
    result: dict[str, Any] = {
        "disk_model": str(disk_dir) if "disk" in models else None,
        "test_cells": {"control": int(is_control.sum()), "perturbed": int((~is_control).sum())},
        "scored_on": "test.h5ad: same simulator, other random numbers; neither model was fitted on these cells",
        "de_genes": de,
        "de_genes_true_effect": int(np.isin(de, test.uns["synthetic"]["effect_genes"]).sum()),
        "scores": scores,
    }
    if "disk" in predictions:
        diff = predictions["disk"][:, de_pos] - predictions["in_memory"][:, de_pos]
        result["disk_vs_in_memory_rms_on_de"] = float(np.sqrt(np.mean(diff**2)))
    return result


def stage_compare(args: argparse.Namespace) -> dict[str, Any]:
    """Fit in memory on a subsample and score it beside the model fitted from disk."""
    import cellw1

    adata, picked, read_seconds = read_subsample(args)
    say(f"compare: in-memory fit on {adata.n_obs:,d} cells (read in {read_seconds:.1f} s)")
    config = w1_config(args)
    start = time.perf_counter()
    memory_model = cellw1.fit(
        adata, CONDITION, CONTROL, PERTURBED, space=args.space, config=config, progress=False, seed=0
    )
    fit_seconds = time.perf_counter() - start
    fit_peak = peak_rss_gib()
    memory_model.save(Path(args.workdir) / f"model_{args.space}_in_memory")
    scored = score_models(args, adata, picked, memory_model)
    result: dict[str, Any] = {
        "subsample_per_group": args.subsample,
        "subsample_cells": int(adata.n_obs),
        "read_seconds": read_seconds,
        "in_memory_fit_seconds": fit_seconds,
        "in_memory_fit_peak_rss_gib": fit_peak,
        "in_memory_info": memory_model.info,
    }
    disk_rms = scored.pop("disk_vs_in_memory_rms_on_de", None)
    result.update(scored)
    result["peak_rss_gib"] = peak_rss_gib()
    if disk_rms is not None:
        result["disk_vs_in_memory_rms_on_de"] = disk_rms
    return result


# -- driver ----------------------------------------------------------------------------------------
def child_argv(stage: str, args: argparse.Namespace) -> list[str]:
    """The command running ``stage`` alone with the same options."""
    argv = [sys.executable, "-m", "benchmarks", "on_disk", stage]
    for key, value in vars(args).items():
        if key in NOT_PASSED or value is None or value is False:
            continue
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return argv


def run_stage(stage: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one stage in a subprocess (its own peak RSS) and return its result line."""
    start = time.perf_counter()
    proc = subprocess.run(child_argv(stage, args), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    result = json.loads(lines[-1][len(RESULT_TAG) :]) if lines else {"error": "no result line"}
    result["wall_seconds"] = time.perf_counter() - start
    result["returncode"] = proc.returncode
    say(
        f"{stage}: {'ok' if proc.returncode == 0 else 'FAILED: ' + str(result.get('error'))} "
        f"({result['wall_seconds']:.1f} s)"
    )
    return result


def show(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``-`` when it is ``None``."""
    return "-" if value is None else format(value, spec)


def print_table(results: dict[str, Any]) -> None:
    """Print the stages' seconds and peak memory, and the held-out scores, as markdown tables."""
    print("\n| stage | seconds | peak RSS (GiB) | notes |\n|---|---|---|---|")
    gen = results.get("generate") or {}
    train = gen.get("train") or {}
    if train:
        print(
            f"| generate | {show(train.get('seconds'), '.1f')} | {show(gen.get('peak_rss_gib'), '.2f')} | "
            f"{train['cells']:,d} x {train['genes']:,d}, density {train['density']:.3f}, "
            f"{train['size_gib']:.2f} GiB on disk (dense float32: {train['dense_float32_gib']:.1f} GiB) |"
        )
    elif gen:
        print(f"| generate | - | - | {gen.get('error') or gen.get('skipped')} |")
    for stage in ("fit", "predict"):
        r = results.get(stage) or {}
        note = r.get("error") or (
            f"{r['cells']:,d} cells, output {r['output_gib']:.2f} GiB"
            if stage == "predict"
            else f"space {results['settings']['space']}, buffer_cells {r.get('buffer_cells')}"
        )
        print(
            f"| {stage} (from disk) | {show(r.get('seconds'), '.1f')} | {show(r.get('peak_rss_gib'), '.2f')} | {note} |"
        )
    cmp_ = results.get("compare") or {}
    if "scores" not in cmp_:
        print(f"| compare | - | - | {cmp_.get('error')} |")
        return
    print(
        f"| fit in memory ({cmp_['subsample_cells']:,d} cells) | {cmp_['in_memory_fit_seconds']:.1f} | "
        f"{cmp_['in_memory_fit_peak_rss_gib']:.2f} | peak RSS: the compare process up to the end of this fit |"
    )
    spaces = list(next(iter(cmp_["scores"].values())))
    print(
        f"\nheld-out test cells ({cmp_['test_cells']['control']:,d} control -> {cmp_['test_cells']['perturbed']:,d} "
        f"perturbed); {cmp_['de_genes_true_effect']} of the {len(cmp_['de_genes'])} DE genes carry the simulated effect"
    )
    header = " | ".join(f"{s} {m}" for s in spaces for m in ("mmd", "energy", "r2"))
    print(f"| method | {header} |\n|---" + "|---" * 3 * len(spaces) + "|")
    for method, by_space in cmp_["scores"].items():
        cells = " | ".join(f"{by_space[s][m]:.4g}" for s in spaces for m in ("mmd", "energy", "r2"))
        print(f"| {method} | {cells} |")
    if "disk_vs_in_memory_rms_on_de" in cmp_:
        print(
            "\nRMS difference of the two models' predictions on the DE genes: "
            f"{cmp_['disk_vs_in_memory_rms_on_de']:.4f}"
        )


def stage_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run every stage in its own process, print the tables and write the results.

    The data set is generated only when its file is missing, of another shape, or ``--regenerate`` asks.
    """
    import torch

    workdir = Path(args.workdir)
    results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k not in NOT_PASSED}}
    shape = None
    if data_path(args).exists() and (workdir / "test.h5ad").exists():
        group, x = open_matrix(data_path(args))
        shape = tuple(int(s) for s in x.shape)
        if hasattr(group, "close"):
            group.close()
    if args.regenerate or shape != (args.cells, args.genes):
        if shape is not None:
            say(
                f"{data_path(args)} holds {shape[0]:,d} x {shape[1]:,d}, not {args.cells:,d} x {args.genes:,d}: "
                "generating it again"
            )
        results["generate"] = run_stage("generate", args)
    else:
        results["generate"] = {"skipped": f"{data_path(args)} exists (--regenerate to rewrite it)"}
    for stage in ("fit", "predict", "compare"):
        results[stage] = run_stage(stage, args)
    results["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB,
        "torch": torch.__version__,
    }
    print_table(results)
    write_json(Path(args.out), results, args)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of this benchmark; an error when ``--workdir`` lies inside the repository."""
    p = parser(__doc__, name="on_disk", seed=0, out=RESULTS / "on_disk.json", quick=QUICK)
    p.add_argument("stage", choices=(*STAGES, "all"))
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=2_000)
    p.add_argument("--density", type=float, default=0.07, help="target share of non-zero counts")
    p.add_argument("--format", choices=("h5ad", "zarr"), default="h5ad")
    p.add_argument("--workdir", default=str(WORKDIR))
    p.add_argument("--chunk-cells", type=int, default=50_000, help="cells written / read at once")
    p.add_argument("--test-cells", type=int, default=5_000)
    p.add_argument("--space", choices=("pca", "genes"), default="pca")
    p.add_argument("--buffer-cells", type=int, default=None, help="cells per group in memory (fit from disk)")
    p.add_argument("--potential-iters", type=int, default=None)
    p.add_argument("--step-iters", type=int, default=None)
    p.add_argument("--predict-cells", type=int, default=None, help="first K control cells (default all)")
    p.add_argument("--keep", action="store_true", help="keep pred.h5ad")
    p.add_argument("--subsample", type=int, default=100_000, help="cells per group of the in-memory fit")
    p.add_argument("--de-genes", type=int, default=50)
    p.add_argument("--regenerate", action="store_true")
    args = parse(p, argv)
    workdir = Path(args.workdir).resolve()
    if workdir == ROOT or ROOT in workdir.parents:
        p.error(f"--workdir {workdir} is inside the repository; the data set must be written elsewhere.")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``all``, or one stage printing its result line for the parent process (exit 1 if it failed)."""
    args = parse_args(argv)
    if args.stage == "all":
        stage_all(args)
        return
    stage = {"generate": stage_generate, "fit": stage_fit, "predict": stage_predict, "compare": stage_compare}[
        args.stage
    ]
    code = 0
    try:
        result = stage(args)
    except Exception as exc:  # reported in the result line; the traceback goes to stderr
        traceback.print_exc()
        result, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    result.setdefault("peak_rss_gib", peak_rss_gib())
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)
    sys.exit(code)
