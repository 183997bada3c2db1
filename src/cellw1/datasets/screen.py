"""A **synthetic** pooled perturbation screen: thousands of perturbations, most without effect.

Nothing here is measured data: :func:`synthetic_screen` simulates counts with a known truth so
that the screen workflow (:func:`cellw1.screen`) can be checked against it: which
perturbations do anything, which cells responded, which perturbations act alike.

The generative model, for cell ``c`` with latent state ``z_c ~ N(0, I_k)`` and library size
``L_c``::

    log m_cg = base_g + z_c @ F_g + r_c * a_p * P_{group(p), g}
    counts_cg ~ Poisson(lambda_cg),   lambda_cg ~ Gamma(theta, mu_cg / theta),   mu_cg = L_c softmax_g(log m_c)_g

Perturbations with an effect belong to one of ``n_groups`` *groups* (a complex, a pathway),
each with its own gene program ``P`` (a sparse log fold change, unit root-mean-square over its
genes); a perturbation's amplitude ``a_p`` is drawn in ``effect_range``. ``r_c`` is 1 for a cell
that responded and 0 for an *escaper*: each perturbation has its own penetrance (share of
responders) in ``penetrance_range``. Cells per perturbation are log-normal (tens to hundreds).
The cells are generated a block at a time from seeds of their own, so the data are the same
in memory and written to disk, and a screen larger than memory is written block by block.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ConfigError, InputError
from ..files.atomic import atomic_output
from .synthetic import _check_count as _counts

if TYPE_CHECKING:
    import anndata

#: label of the control cells in ``obs["perturbation"]``
CONTROL = "non-targeting"
#: cells generated (and written) per block
BLOCK_CELLS = 8_192
_THETA = 5.0
_FACTORS = 6
_PROGRAM_FRACTION = 0.05


def _range(value: Any, name: str, low: float, high: float) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high), got {value!r}.") from None
    if not low <= a <= b <= high:
        raise ConfigError(f"{name}={value!r} must satisfy {low} <= low <= high <= {high}.")
    return a, b


def _draw_programs(rng: np.random.Generator, n_groups: int, n_genes: int) -> np.ndarray:
    """The log fold changes of each group's program, ``(n_groups, n_genes)``: a few genes, unit RMS."""
    per_program = max(4, int(round(_PROGRAM_FRACTION * n_genes)))
    programs = np.zeros((n_groups, n_genes))
    for k in range(n_groups):
        genes = rng.choice(n_genes, per_program, replace=False)
        lfc = rng.choice([-1.0, 1.0], per_program) * rng.uniform(0.5, 1.5, per_program)
        programs[k, genes] = lfc / np.sqrt(np.mean(lfc**2))
    return programs


def synthetic_screen(
    n_perturbations: int = 200,
    n_controls: int = 3_000,
    n_genes: int = 200,
    *,
    n_groups: int = 5,
    effect_fraction: float = 0.2,
    mean_cells: int = 60,
    cells_range: tuple[int, int] = (20, 400),
    effect_range: tuple[float, float] = (0.3, 1.5),
    penetrance_range: tuple[float, float] = (0.5, 0.95),
    seed: int = 0,
    path: str | os.PathLike | None = None,
) -> anndata.AnnData | Path:
    """Simulate a SYNTHETIC pooled screen (raw counts) with its truth.

    Parameters
    ----------
    n_perturbations
        Perturbations (``"P00000"``, ...), besides the controls.
    n_controls
        Cells of the shared control group ``"non-targeting"``.
    n_genes
        Genes (>= 20).
    n_groups
        Groups of perturbations sharing a gene program (complexes, pathways).
    effect_fraction
        Share of perturbations with an effect; the others are null (their cells are controls).
    mean_cells, cells_range
        Median cells per perturbation (log-normal spread) and the range it is clipped to.
    effect_range
        Range of the amplitude of a perturbation's program (root-mean-square log fold change
        over the program's genes).
    penetrance_range
        Range of the share of a perturbation's cells that respond (the others escape).
    seed
        Seed of the whole simulation.
    path
        ``None``: return an AnnData in memory. A ``.h5ad`` or ``.zarr`` path: write the screen
        there block by block (the matrix is never held whole) and return the path.

    Returns
    -------
    anndata.AnnData or Path
        Dense float32 counts. ``obs["perturbation"]`` (categorical), ``obs["responded"]``
        (the truth per cell: False for controls, escapers and cells of null perturbations).
        ``uns["screen_truth"]``: per perturbation (``perturbation``, in order) its ``effect``
        (amplitude, 0 for null ones), ``group`` (``-1`` for null ones), ``penetrance`` and
        ``n_cells``; and the ``programs`` (groups x genes log fold changes).
    """
    n_perturbations = _counts(n_perturbations, "n_perturbations", 1)
    n_controls = _counts(n_controls, "n_controls", 10)
    n_genes = _counts(n_genes, "n_genes", 20)
    n_groups = _counts(n_groups, "n_groups", 1)
    mean_cells = _counts(mean_cells, "mean_cells", 1)
    seed = _counts(seed, "seed", 0)
    low_cells, high_cells = (int(v) for v in _range(cells_range, "cells_range", 1, 1e9))
    effect_low, effect_high = _range(effect_range, "effect_range", 0.0, 10.0)
    pen_low, pen_high = _range(penetrance_range, "penetrance_range", 0.0, 1.0)
    if not 0.0 <= float(effect_fraction) <= 1.0:
        raise ConfigError(f"effect_fraction={effect_fraction!r} must be in [0, 1].")
    if path is not None and Path(path).suffix.lower() not in (".h5ad", ".zarr"):
        raise InputError(f"path {str(path)!r} must end in .h5ad or .zarr (which picks the format).")

    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, n_genes)
    loadings = rng.normal(0.0, 0.4, (_FACTORS, n_genes))
    programs = _draw_programs(rng, n_groups, n_genes)

    names = [f"P{i:05d}" for i in range(n_perturbations)]
    n_effect = int(round(effect_fraction * n_perturbations))
    has_effect = np.zeros(n_perturbations, dtype=bool)
    has_effect[rng.choice(n_perturbations, n_effect, replace=False)] = True
    group = np.full(n_perturbations, -1)
    group[has_effect] = rng.permutation(np.arange(n_effect) % n_groups)
    effect = np.where(has_effect, rng.uniform(effect_low, effect_high, n_perturbations), 0.0)
    penetrance = np.where(has_effect, rng.uniform(pen_low, pen_high, n_perturbations), 0.0)
    sizes = np.clip(np.round(np.exp(rng.normal(np.log(mean_cells), 0.6, n_perturbations))), low_cells, high_cells)
    sizes = sizes.astype(np.int64)

    label = np.repeat(np.arange(-1, n_perturbations), np.concatenate([[n_controls], sizes]))
    label = label[rng.permutation(len(label))]  # cells of a pooled screen come in any order
    responded = np.zeros(len(label), dtype=bool)
    perturbed = label >= 0
    responded[perturbed] = rng.random(int(perturbed.sum())) < penetrance[label[perturbed]]
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical.from_codes(label + 1, categories=[CONTROL, *names]),
            "responded": responded,
        },
        index=pd.Index([f"cell{i:07d}" for i in range(len(label))]),
    )
    var = pd.DataFrame(index=pd.Index([f"g{i:04d}" for i in range(n_genes)]))
    shift = effect[:, None] * np.where(group[:, None] >= 0, programs[np.maximum(group, 0)], 0.0)
    uns = {
        "screen_truth": {
            "description": "SYNTHETIC screen simulated by cellw1.datasets.synthetic_screen; not measured cells.",
            "seed": seed,
            "control": CONTROL,
            "perturbation": names,
            "effect": effect,
            "group": group,
            "penetrance": penetrance,
            "n_cells": sizes,
            "programs": programs,
        }
    }

    def block(start: int) -> np.ndarray:
        """Counts of cells ``start`` to ``start + BLOCK_CELLS`` (their own seed: the same whatever is written)."""
        rows = slice(start, min(start + BLOCK_CELLS, len(label)))
        brng = np.random.default_rng([seed, start // BLOCK_CELLS])
        n = rows.stop - rows.start
        log_mean = base + brng.normal(0.0, 1.0, (n, _FACTORS)) @ loadings
        lab = label[rows]
        moved = responded[rows]
        log_mean[moved] += shift[lab[moved]]
        log_mean -= log_mean.max(1, keepdims=True)
        mu = np.exp(log_mean)
        mu *= np.exp(brng.normal(np.log(3_000.0), 0.3, n))[:, None] / mu.sum(1, keepdims=True)
        return brng.poisson(brng.gamma(_THETA, mu / _THETA)).astype(np.float32)

    starts = range(0, len(label), BLOCK_CELLS)
    if path is None:
        import anndata as ad

        return ad.AnnData(X=np.concatenate([block(s) for s in starts]), obs=obs, var=var, uns=uns)
    return _write(Path(path), obs, var, uns, block, starts, n_genes)


def _write(
    path: Path, obs: pd.DataFrame, var: pd.DataFrame, uns: dict, block: Any, starts: range, n_genes: int
) -> Path:
    """Write the screen in anndata's on-disk format, ``X`` a block of rows at a time, atomically."""
    import anndata as ad
    from anndata.io import write_elem

    shape = (len(obs), n_genes)
    chunks = (min(BLOCK_CELLS, shape[0]), n_genes)

    def fill(store: Any, x: Any) -> None:
        x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        for s in starts:
            x[s : s + BLOCK_CELLS] = block(s)
        for key, value in (("obs", obs), ("var", var), ("uns", uns)):
            write_elem(store, key, value)
        store.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})

    if path.suffix.lower() == ".h5ad":
        import h5py

        with atomic_output(path) as tmp, h5py.File(tmp, "w") as store:
            fill(store, store.create_dataset("X", shape=shape, dtype=np.float32, chunks=chunks))
        return path
    import shutil

    import zarr

    if path.exists():
        raise InputError(f"{str(path)!r} exists; give a new path or remove it first.")
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        store = zarr.open_group(str(tmp), mode="w", zarr_format=ad.settings.zarr_write_format)
        fill(store, store.create_array("X", shape=shape, dtype=np.float32, chunks=chunks, fill_value=0.0))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
