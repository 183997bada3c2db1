"""Differentially expressed genes: the features the paper evaluates scRNA-seq predictions on.

MMD in thousands of gene dimensions is dominated by noise, so the paper (Sec. 4.4, after
CellOT) scores each perturbation on its top 50 differentially expressed genes, ranked by
Scanpy's ``rank_genes_groups`` with the perturbed cells as the group and the control cells
as the reference.

Pass **training cells only**: if the held-out test cells helped choose the genes, the
evaluation would be measured on features selected with knowledge of the test set.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from ..checks import as_array
from ..errors import ConfigError, InputError
from ..ot.training import cpu_threads

logger = logging.getLogger(__name__)

#: how genes are ranked: ``"up"`` (most up-regulated first, the paper's and CellOT's), ``"either"`` (by |score|)
DeDirection = Literal["up", "either"]
DE_DIRECTIONS: tuple[DeDirection, ...] = ("up", "either")
#: ``rank_genes_groups`` methods supported here (``logreg`` needs scikit-learn, not a dependency).
METHODS = ("wilcoxon", "t-test", "t-test_overestim_var")


@contextmanager
def _quiet_scanpy(sc: Any) -> Iterator[None]:
    """Silence Scanpy's own logging for the duration, restoring the user's verbosity after.

    Scanpy's ranking also resets torch's intra-op thread count (through its thread pools);
    the caller's setting is restored too, since oversubscribed threads slow torch down
    (docs/speed.md).
    """
    previous = sc.settings.verbosity
    sc.settings.verbosity = 0
    try:
        with cpu_threads(None):
            yield
    finally:
        sc.settings.verbosity = previous


def top_de_genes(
    X_control: Any,
    X_perturbed: Any,
    gene_names: Sequence[str],
    n_genes: int = 50,
    method: str = "wilcoxon",
    direction: DeDirection = "up",
) -> list[str]:
    """The ``n_genes`` genes most up-ranked (or most changed) in perturbed cells versus control cells.

    Builds a small AnnData of both groups and runs ``scanpy.tl.rank_genes_groups`` with
    ``groupby`` = perturbed vs ``reference`` = control, then orders genes by Scanpy's score
    (for ``wilcoxon``, the rank-sum z-score), highest first, as CellOT does: genes strongly
    *down*-regulated come last. ``direction="either"`` orders them by the score's absolute
    value instead, so both the up- and the down-regulated genes of a response come first.

    Parameters
    ----------
    X_control, X_perturbed
        Log-normalised expression ``(n_control, g)`` and ``(n_perturbed, g)``, dense or
        scipy sparse; **training cells only** (see the module notes). Not modified.
    gene_names
        The ``g`` gene names, in column order; must be unique.
    n_genes
        How many to return; when ``g < n_genes`` all ``g`` genes are returned, ranked.
    method
        One of :data:`METHODS`.
    direction
        ``"up"`` (the paper's and CellOT's scored genes) or ``"either"``.

    Returns
    -------
    list of str
        Gene names, best first.
    """
    return de_gene_rankings(X_control, X_perturbed, gene_names, n_genes, method, (direction,))[direction]


def de_gene_rankings(
    X_control: Any,
    X_perturbed: Any,
    gene_names: Sequence[str],
    n_genes: int = 50,
    method: str = "wilcoxon",
    directions: Sequence[DeDirection] = DE_DIRECTIONS,
) -> dict[str, list[str]]:
    """The top ``n_genes`` genes in each of ``directions``, from one test: as :func:`top_de_genes` for each.

    A scorer that needs the genes ranked both ways (the scored genes and the response axis of
    :mod:`cellw1.eval.scoring`) runs ``rank_genes_groups`` once.
    """
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not supported; use one of {', '.join(METHODS)}.")
    for direction in directions:
        if direction not in DE_DIRECTIONS:
            raise ConfigError(f"direction {direction!r} is not supported; use 'up' or 'either'.")
    if isinstance(n_genes, bool) or not isinstance(n_genes, (int, np.integer)) or n_genes < 1:
        raise ConfigError(f"n_genes must be a positive integer, got {n_genes!r}.")
    control, perturbed = (
        as_array(x, name, sparse=True, min_rows=2, purpose=" to test for differential expression")
        for x, name in ((X_control, "X_control"), (X_perturbed, "X_perturbed"))
    )
    if control.shape[1] != perturbed.shape[1]:
        raise InputError(
            f"X_control has {control.shape[1]} genes but X_perturbed has {perturbed.shape[1]}; "
            "both must have the same genes in the same order."
        )
    names = [str(g) for g in gene_names]
    if len(names) != control.shape[1]:
        raise InputError(f"gene_names has {len(names)} entries but the matrices have {control.shape[1]} genes.")
    if len(set(names)) != len(names):
        raise InputError("gene_names contains duplicates; make them unique (e.g. anndata's var_names_make_unique()).")

    import anndata as ad
    import pandas as pd
    import scanpy as sc

    n_c, n_p = control.shape[0], perturbed.shape[0]
    if sp.issparse(control) or sp.issparse(perturbed):
        X = sp.vstack([sp.csr_matrix(control), sp.csr_matrix(perturbed)], format="csr")
    else:
        X = np.vstack([control, perturbed])  # a new array: the caller's data is never touched
    group = pd.Categorical(["control"] * n_c + ["perturbed"] * n_p, categories=["control", "perturbed"])
    obs = pd.DataFrame({"group": group}, index=[f"cell{i}" for i in range(n_c + n_p)])
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=names))
    adata.uns["log1p"] = {"base": None}  # natural-log data, as rank_genes_groups assumes
    # the ranking reads the test's scores only: its log fold changes are meaningless for values of any
    # sign (continuous data), where their log2 of a negative ratio would warn
    with _quiet_scanpy(sc), np.errstate(invalid="ignore", divide="ignore"):
        sc.tl.rank_genes_groups(
            adata,
            groupby="group",
            groups=["perturbed"],
            reference="control",
            method=method,
            n_genes=len(names),
            use_raw=False,
        )
    result = adata.uns["rank_genes_groups"]
    ranked = np.asarray(result["names"]["perturbed"]).astype(str)
    scores = np.asarray(result["scores"]["perturbed"], dtype=np.float64)
    tops: dict[str, list[str]] = {}
    for direction in directions:
        ranking = np.where(np.isnan(scores), -np.inf, scores if direction == "up" else np.abs(scores))
        order = np.argsort(-ranking, kind="stable")
        tops[direction] = [str(g) for g in ranked[order][:n_genes]]
        logger.debug("top %d DE genes (%s, %s): %s", n_genes, method, direction, tops[direction][:10])
    return tops
