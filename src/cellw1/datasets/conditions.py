"""SYNTHETIC perturbation experiments with structure across conditions, for conditional models.

Nothing here is measured. Both simulate raw counts the way
:func:`~cellw1.datasets.synthetic.synthetic_perturbation` does (a low-rank log mean with a
continuous cell state ``s ~ U(0, 1)``, gamma-Poisson counts around it), with responses that
depend on the cell's state, so that a mean shift is not the whole answer:

* :func:`synthetic_doses`: each perturbation acts on its own program of genes with a log fold
  change ``sign * amplitude * hill(dose) * shape(s)``, ``hill(d) = d^n / (d^n + ec50^n)``: a
  dose-response curve, several doses per perturbation.
* :func:`synthetic_embedded_perturbations`: each perturbation has a vector ``v`` (its
  "embedding", in ``uns["vectors"]``), and its log fold change on every gene is a smooth
  function of it, ``amplitude * tanh(v W)_g * mask_g * (0.5 + s)``: perturbations with near
  vectors have near responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .synthetic import _LIBRARY_LOG_MEAN, _LIBRARY_LOG_SD, _THETA, _check_count, _shape

if TYPE_CHECKING:
    import anndata

CONTROL = "control"
#: Hill coefficient of the dose-response curves
HILL = 1.5
_AMPLITUDE = 1.5


def _counts(rng: np.random.Generator, log_mean: np.ndarray) -> sp.csr_matrix:
    log_mean = log_mean - log_mean.max(axis=1, keepdims=True)
    proportions = np.exp(log_mean)
    proportions /= proportions.sum(axis=1, keepdims=True)
    library = np.exp(rng.normal(_LIBRARY_LOG_MEAN, _LIBRARY_LOG_SD, size=len(log_mean)))
    mu = library[:, None] * proportions
    return sp.csr_matrix(rng.poisson(rng.gamma(_THETA, mu / _THETA)).astype(np.float32))


def _simulate(
    rng: np.random.Generator, sizes: Sequence[int], g: int, *, loadings_out: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Log means and states of groups of cells with the given sizes (no effect yet).

    The ``(3, g)`` loadings of the latent factors are appended to ``loadings_out`` when given.
    """
    base, loadings = rng.normal(0.0, 1.0, size=g), rng.normal(0.0, 0.8, size=(3, g))
    if loadings_out is not None:
        loadings_out.append(loadings)
    state_loading = rng.normal(0.0, 0.5, size=g)
    n = int(sum(sizes))
    state = rng.uniform(0.0, 1.0, size=n)
    latent = rng.normal(0.0, 1.0, size=(n, 3))
    return base + latent @ loadings + state[:, None] * state_loading, state


def _anndata(counts: sp.csr_matrix, obs: dict, uns: dict) -> anndata.AnnData:
    import anndata as ad

    n, g = counts.shape
    frame = pd.DataFrame(obs, index=pd.Index([f"cell{i:05d}" for i in range(n)]))
    adata = ad.AnnData(X=counts, obs=frame, var=pd.DataFrame(index=pd.Index([f"g{i:04d}" for i in range(g)])))
    adata.uns["synthetic"] = uns
    return adata


def _check_doses(doses: Sequence[float]) -> list[float]:
    """The doses as floats: at least one, each positive and finite; else an InputError that says so."""
    try:
        values = [float(d) for d in doses]
    except (TypeError, ValueError):
        raise InputError(f"doses={doses!r} must be a sequence of positive numbers, e.g. (1.0, 10.0, 100.0).") from None
    if not values or not all(np.isfinite(d) and d > 0 for d in values):
        raise InputError(f"doses={doses!r} must be a non-empty sequence of positive finite numbers, e.g. (1.0, 10.0).")
    return values


def synthetic_doses(
    n_control: int = 1000,
    n_per_dose: int = 400,
    doses: Sequence[float] = (1.0, 3.0, 10.0, 30.0, 100.0),
    n_perturbations: int = 2,
    n_genes: int = 60,
    seed: int = 0,
) -> anndata.AnnData:
    """Simulate a SYNTHETIC dose-response experiment (raw counts); see the module docstring.

    Returns
    -------
    anndata.AnnData
        ``obs["condition"]`` (``"control"``, ``"pertA"``, ...), ``obs["dose"]`` (0 for the
        control) and ``obs["state"]``; ``uns["synthetic"]`` holds each perturbation's
        ``ec50``, program genes and sign.
    """
    n_control, n_per_dose = _check_count(n_control, "n_control", 1), _check_count(n_per_dose, "n_per_dose", 1)
    g, k = _check_count(n_genes, "n_genes", 10), _check_count(n_perturbations, "n_perturbations", 1)
    doses = _check_doses(doses)
    rng = np.random.default_rng(_check_count(seed, "seed", 0))
    names = [f"pert{chr(65 + i)}" for i in range(k)]
    groups = [(CONTROL, 0.0)] + [(p, float(d)) for p in names for d in doses]
    sizes = [n_control] + [n_per_dose] * (len(groups) - 1)
    log_mean, state = _simulate(rng, sizes, g)
    low, high = np.log(min(doses) * 3), np.log(max(doses) / 3)
    if high < low:  # doses within a factor of 9 (or one dose): the EC50 sits at their geometric middle
        low = high = (np.log(min(doses)) + np.log(max(doses))) / 2
    ec50 = {p: float(np.exp(rng.uniform(low, high))) for p in names}
    programs = {p: np.sort(rng.choice(g, size=max(2, g // 5), replace=False)) for p in names}
    signs = {p: 1.0 if i % 2 == 0 else -1.0 for i, p in enumerate(names)}
    labels, dose_column, start = [], [], 0
    for (label, dose), size in zip(groups, sizes, strict=False):
        rows = np.arange(start, start + size)
        if label != CONTROL:
            hill = dose**HILL / (dose**HILL + ec50[label] ** HILL)
            effect = signs[label] * _AMPLITUDE * 2 * hill * _shape(names.index(label), state[rows])
            log_mean[np.ix_(rows, programs[label])] += effect[:, None]
        labels += [label] * size
        dose_column += [dose] * size
        start += size
    obs = {
        "condition": pd.Categorical(labels, categories=[CONTROL, *names]),
        "dose": np.array(dose_column),
        "state": state.astype(np.float32),
    }
    uns = {
        "description": "SYNTHETIC dose-response data (cellw1.datasets.synthetic_doses); not measured cells.",
        "ec50": ec50,
        "hill": HILL,
        "signs": signs,
        "programs": {p: [f"g{i:04d}" for i in v] for p, v in programs.items()},
    }
    return _anndata(_counts(rng, log_mean), obs, uns)


def synthetic_embedded_perturbations(
    n_control: int = 1000,
    n_perturbed: int = 300,
    n_perturbations: int = 12,
    vector_dim: int = 4,
    n_genes: int = 60,
    seed: int = 0,
) -> anndata.AnnData:
    """Simulate SYNTHETIC perturbations whose responses are a smooth function of a vector each.

    Returns
    -------
    anndata.AnnData
        ``obs["condition"]`` (``"control"``, ``"p00"``, ...) and ``obs["state"]``;
        ``uns["vectors"]`` maps each perturbation to its vector (``vector_dim`` numbers).
    """
    n_control, n_perturbed = _check_count(n_control, "n_control", 1), _check_count(n_perturbed, "n_perturbed", 1)
    g, k = _check_count(n_genes, "n_genes", 10), _check_count(n_perturbations, "n_perturbations", 1)
    q = _check_count(vector_dim, "vector_dim", 1)
    rng = np.random.default_rng(_check_count(seed, "seed", 0))
    names = [f"p{i:02d}" for i in range(k)]
    vectors = rng.normal(0.0, 1.0, size=(k, q))
    weights = rng.normal(0.0, 1.0, size=(q, g)) / np.sqrt(q)
    mask = (rng.uniform(size=g) < 0.3).astype(float)
    sizes = [n_control] + [n_perturbed] * k
    log_mean, state = _simulate(rng, sizes, g)
    labels, start = [CONTROL] * n_control, n_control
    for i, name in enumerate(names):
        rows = np.arange(start, start + n_perturbed)
        lfc = _AMPLITUDE * np.tanh(vectors[i] @ weights) * mask
        log_mean[rows] += (0.5 + state[rows])[:, None] * lfc[None, :]
        labels += [name] * n_perturbed
        start += n_perturbed
    obs = {"condition": pd.Categorical(labels, categories=[CONTROL, *names]), "state": state.astype(np.float32)}
    uns = {
        "description": "SYNTHETIC perturbations with vectors (cellw1.datasets.synthetic_embedded_perturbations); "
        "not measured cells.",
        "responding_genes": [f"g{i:04d}" for i in np.flatnonzero(mask)],
    }
    adata = _anndata(_counts(rng, log_mean), obs, uns)
    adata.uns["vectors"] = {name: vectors[i].astype(np.float32) for i, name in enumerate(names)}
    return adata
