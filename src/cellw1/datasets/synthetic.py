"""A built-in, fully **synthetic** single-cell perturbation data set.

Nothing here is measured data: :func:`synthetic_perturbation` simulates counts so that the
pipeline (fit, predict, evaluate) runs on a fresh machine with no download, and so that
tests know the true answer (which perturbation moves which genes, and by how much).

The generative model, for cell ``c`` of cell type ``k`` with continuous state
``s_c ~ U(0, 1)`` (think differentiation or cell-cycle progress) and library size ``L_c``::

    log m_cg = base_g + (centre_k + noise_c) @ F_g + s_c * S_g + batch_bg + effect_p(k, s_c)_g
    counts_cg ~ Poisson(lambda_cg),   lambda_cg ~ Gamma(shape=theta, scale=mu_cg / theta)
    mu_cg = L_c * softmax_g(log m_c)_g

so the counts are negative binomial (gamma-Poisson, dispersion ``1/theta``) around a low-rank
mean: ``F`` has one loading row per latent factor, and each cell type sits at its own centre
in that factor space. The perturbation response is **nonlinear and cell-type specific**:
each real perturbation has a gene *program* (a set of genes) whose log fold change is
``sign_k * amplitude * shape_k(s_c)``, with the sign flipping between cell types (up in one
type, down in the next) and a shape (``s^2``, a sigmoid, ``sqrt(s)``...) that depends on the
cell's state. A second, smaller program rises in every cell type in proportion to ``s_c``.
The perturbation named ``"NULL"`` has no effect at all: its cells come from the control
distribution, so a good predictor should leave control cells where they are.
"""

from __future__ import annotations

import logging
import string
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConfigError

if TYPE_CHECKING:
    import anndata

logger = logging.getLogger(__name__)

#: Label of the control condition in ``obs["condition"]``.
CONTROL = "control"
#: Label of the perturbation without any effect (the last perturbation when there are >= 2).
NULL = "NULL"

_THETA = 5.0  # gamma shape: NB dispersion 1/theta = 0.2, typical of UMI data
_LIBRARY_LOG_MEAN = np.log(3000.0)
_LIBRARY_LOG_SD = 0.35
_PROGRAM_FRACTION = 0.15  # share of genes in each perturbation's main program
_AMPLITUDE = 2.0  # max |log fold change| of the main program
_SHARED_AMPLITUDE = 1.5  # max log fold change of the program shared by all types
_N_BATCHES = 2


def _perturbation_names(n_perturbations: int) -> list[str]:
    """``["pertA"]``, ``["pertA", "NULL"]``, ``["pertA", "pertB", "NULL"]``, ..."""
    n_real = n_perturbations - 1 if n_perturbations >= 2 else n_perturbations
    letters = string.ascii_uppercase
    names = [f"pert{letters[i % 26]}{'' if i < 26 else i // 26}" for i in range(n_real)]
    return names + ([NULL] if n_perturbations >= 2 else [])


def _shape(kind: int, s: np.ndarray) -> np.ndarray:
    """Nonlinear response profiles in ``[0, 1]`` of the cell state ``s`` in ``[0, 1]``."""
    kind %= 4
    if kind == 0:
        return s**2
    if kind == 1:
        return 1.0 / (1.0 + np.exp(-12.0 * (s - 0.5)))
    if kind == 2:
        return np.sqrt(s)
    return 4.0 * s * (1.0 - s)  # strongest at intermediate states


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


#: the effect of a perturbation: (main genes, shared genes, signs (n_types,), shapes (n_types,))
_Effect = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _draw_effects(
    rng: np.random.Generator, pert_names: list[str], g: int, n_types: int
) -> tuple[dict[str, list[int]], list[_Effect | None]]:
    """The genes of each perturbation's programs and its effect (``None`` for ``"NULL"``).

    A main program (sign and shape per type) and a shared one, drawn from ``rng`` in the order of
    ``pert_names``.
    """
    n_prog = max(2, int(round(_PROGRAM_FRACTION * g)))
    programs: dict[str, list[int]] = {}
    effects: list[_Effect | None] = []
    for j, name in enumerate(pert_names):
        if name == NULL:
            programs[name] = []
            effects.append(None)
            continue
        genes = rng.choice(g, size=2 * n_prog, replace=False)
        main, shared = genes[:n_prog], genes[n_prog:]
        signs = np.where(np.arange(n_types) % 2 == 0, 1.0, -1.0)
        shapes = (np.arange(n_types) + j) % 4
        programs[name] = sorted(int(i) for i in np.concatenate([main, shared]))
        effects.append((main, shared, signs, shapes))
    return programs, effects


def _add_effects(
    log_mean: np.ndarray,
    effects: list[_Effect | None],
    cond_idx: np.ndarray,
    cell_type: np.ndarray,
    state: np.ndarray,
) -> None:
    """Add each perturbation's log fold changes to ``log_mean: (n, g)`` of its cells, in place.

    The perturbation ``j`` of ``effects`` is condition ``j + 1`` (0 is the control).
    """
    for j, effect in enumerate(effects):
        if effect is None:
            continue
        main, shared, signs, shapes = effect
        rows = np.flatnonzero(cond_idx == j + 1)
        lfc = np.empty(rows.size)
        for k in range(len(signs)):
            in_k = cell_type[rows] == k
            lfc[in_k] = signs[k] * _AMPLITUDE * _shape(int(shapes[k]), state[rows[in_k]])
        log_mean[np.ix_(rows, main)] += lfc[:, None]
        log_mean[np.ix_(rows, shared)] += _SHARED_AMPLITUDE * state[rows, None]


def synthetic_perturbation(
    n_control: int = 1500,
    n_perturbed: int = 1500,
    n_genes: int = 200,
    n_cell_types: int = 3,
    n_perturbations: int = 2,
    seed: int = 0,
) -> anndata.AnnData:
    """Simulate a SYNTHETIC single-cell perturbation experiment (raw counts).

    The data are generated, not measured (see the module docstring for the model). Use
    them to try the pipeline end to end and to test that predictions recover a known effect.

    Parameters
    ----------
    n_control
        Number of control cells.
    n_perturbed
        Number of cells **per perturbation**.
    n_genes
        Number of genes (>= 10).
    n_cell_types
        Number of cell types, each with its own mean expression profile; every condition
        has the same (equal) cell-type proportions.
    n_perturbations
        Number of perturbations. With one, it is ``"pertA"``. With two or more the **last**
        one is ``"NULL"`` (no effect) and the others are ``"pertA"``, ``"pertB"``, ... (so the
        default 2 gives ``"pertA"`` and ``"NULL"``).
    seed
        Seed of the whole simulation: the same seed gives identical data.

    Returns
    -------
    anndata.AnnData
        ``n_control + n_perturbations * n_perturbed`` cells by ``n_genes`` genes.
        ``X`` is a CSR matrix of integer counts stored as float32. ``obs`` has
        ``condition`` (``"control"`` or a perturbation name), ``cell_type`` (``"type0"``,
        ``"type1"``...), ``batch`` (``"batch0"``, ``"batch1"``) as categoricals and the
        continuous ``state`` in [0, 1]; ``obs_names`` are ``cell00000``...; ``var_names``
        are ``g0000``.... ``uns["synthetic"]`` records the settings and, per perturbation,
        the genes of its main program (``programs``), empty for ``"NULL"``.

    Examples
    --------
    >>> from cellw1.datasets import synthetic_perturbation
    >>> adata = synthetic_perturbation(n_control=300, n_perturbed=300, n_genes=50)
    >>> adata.shape
    (900, 50)
    >>> adata.obs["condition"].cat.categories.tolist()
    ['control', 'pertA', 'NULL']
    """
    import anndata as ad

    n_control = _check_count(n_control, "n_control", 1)
    n_perturbed = _check_count(n_perturbed, "n_perturbed", 1)
    n_genes = _check_count(n_genes, "n_genes", 10)
    n_cell_types = _check_count(n_cell_types, "n_cell_types", 1)
    n_perturbations = _check_count(n_perturbations, "n_perturbations", 1)
    seed = _check_count(seed, "seed", 0)

    rng = np.random.default_rng(seed)
    g, n_types = n_genes, n_cell_types
    n_factors = n_types + 1

    # Shared gene-level structure: baseline expression, low-rank type loadings, state, batch.
    base = rng.normal(0.0, 1.0, size=g)
    loadings = rng.normal(0.0, 0.8, size=(n_factors, g))
    centres = rng.normal(0.0, 1.0, size=(n_types, n_factors))
    state_loading = rng.normal(0.0, 0.5, size=g)
    batch_shift = rng.normal(0.0, 0.1, size=(_N_BATCHES, g))

    pert_names = _perturbation_names(n_perturbations)
    conditions = [CONTROL] + pert_names
    sizes = [n_control] + [n_perturbed] * len(pert_names)
    cond_idx = np.repeat(np.arange(len(conditions)), sizes)
    n = cond_idx.size

    programs, effects = _draw_effects(rng, pert_names, g, n_types)

    # Cells: type, state, batch, latent position, library size.
    # Types are dealt out evenly within each condition (then shuffled), so every condition has
    # the same type proportions and a condition's mean shift is its effect, not a mix change.
    cell_type = np.empty(n, dtype=np.int64)
    for j in range(len(conditions)):
        rows = np.flatnonzero(cond_idx == j)
        cell_type[rows] = rng.permutation(np.arange(rows.size) % n_types)
    state = rng.uniform(0.0, 1.0, size=n)
    batch = rng.integers(0, _N_BATCHES, size=n)
    latent = centres[cell_type] + rng.normal(0.0, 0.25, size=(n, n_factors))
    library = np.exp(rng.normal(_LIBRARY_LOG_MEAN, _LIBRARY_LOG_SD, size=n))

    log_mean = base + latent @ loadings + state[:, None] * state_loading + batch_shift[batch]
    _add_effects(log_mean, effects, cond_idx, cell_type, state)

    log_mean -= log_mean.max(axis=1, keepdims=True)
    proportions = np.exp(log_mean)
    proportions /= proportions.sum(axis=1, keepdims=True)
    mu = library[:, None] * proportions
    counts = rng.poisson(rng.gamma(_THETA, mu / _THETA))

    type_labels = [f"type{k}" for k in range(n_types)]
    batch_labels = [f"batch{b}" for b in range(_N_BATCHES)]
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical.from_codes(cond_idx, categories=conditions),
            "cell_type": pd.Categorical.from_codes(cell_type, categories=type_labels),
            "batch": pd.Categorical.from_codes(batch, categories=batch_labels),
            "state": state.astype(np.float32),
        },
        index=pd.Index([f"cell{i:05d}" for i in range(n)]),
    )
    var = pd.DataFrame(index=pd.Index([f"g{i:04d}" for i in range(g)]))
    X = sp.csr_matrix(counts.astype(np.float32))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    gene_names = var.index.to_numpy()
    adata.uns["synthetic"] = {
        "description": "SYNTHETIC data simulated by cellw1.datasets.synthetic_perturbation; not measured cells.",
        "seed": seed,
        "control": CONTROL,
        "perturbations": pert_names,
        "null_perturbation": NULL if NULL in pert_names else "",
        "programs": {name: [str(gene_names[i]) for i in idx] for name, idx in programs.items()},
    }
    logger.debug("synthetic_perturbation: %d cells x %d genes, conditions %s", n, g, conditions)
    return adata
