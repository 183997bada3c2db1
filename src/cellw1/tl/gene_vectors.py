"""Built-in label vectors for CRISPR targets, from the data alone: each gene's co-expression across the controls.

A conditional model reads a perturbation it never saw from its vector
(``fit_conditional(..., embedding_key=...)``). For a knock-out or knock-down of a gene that
the experiment measures, :func:`gene_vectors` gives one without external data: the gene's
correlation with each of the first principal components of the control cells' log-normalised
expression (the direction its co-expression module takes through the cells). Genes of the
same module get near vectors; an unmeasured target gets none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import InputError
from ..pp.labels import check_label, condition_labels, label_text
from ..pp.preprocessing import fit_preprocessor

if TYPE_CHECKING:
    import anndata as ad

#: principal components a gene's vector is measured against
COMPONENTS = 20


def gene_vectors(
    adata: ad.AnnData,
    condition_key: str,
    control: str,
    *,
    layer: str | None = None,
    n_components: int = COMPONENTS,
    input_kind: Literal["auto", "counts", "log"] = "auto",
) -> dict[str, np.ndarray]:
    """Per measured gene, its correlation with the first ``n_components`` principal components of the controls.

    Parameters
    ----------
    adata
        Cells x genes in memory (never modified).
    condition_key, control
        Where the control cells are (``adata.obs[condition_key] == control``).
    layer
        Read this layer instead of ``X``.
    n_components
        Length of each vector.
    input_kind
        As for :func:`cellw1.fit`: counts are normalised and log1p-transformed first.

    Returns
    -------
    dict
        Gene name -> ``(n_components,)`` float32 vector (zeros for a gene constant in the
        controls); store it in ``adata.uns`` and pass its key as ``embedding_key``.
    """
    control = label_text(control)
    labels = condition_labels(adata, condition_key)
    check_label(labels, control, "control", condition_key)
    matrix = adata.layers[layer] if layer is not None else adata.X
    if layer is not None and layer not in adata.layers:
        raise InputError(f"layer {layer!r} is not in adata.layers; available: {list(adata.layers)}.")
    rows = np.flatnonzero((labels == control).to_numpy())
    values = matrix[rows]
    x = fit_preprocessor(values, assume=input_kind).transform(values).astype(np.float64)
    k = int(n_components)
    if k < 1 or k > min(x.shape) - 1:
        raise InputError(f"n_components={n_components!r} must be from 1 to {min(x.shape) - 1} (controls x genes - 1).")
    x -= x.mean(0)
    spread = x.std(0)
    measured = spread > 0
    z = np.zeros_like(x)
    z[:, measured] = x[:, measured] / spread[measured]
    _, singular, vt = np.linalg.svd(z, full_matrices=False)
    # correlation of standardised gene j with component c's scores: V[j, c] s_c / sqrt(n)
    vectors = (vt[:k].T * singular[:k] / np.sqrt(len(z))).astype(np.float32)
    return {str(gene): vectors[j] for j, gene in enumerate(adata.var_names)}
