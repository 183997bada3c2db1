"""A SYNTHETIC mass-cytometry (CyTOF) stimulation experiment: signed values, several cell types.

Nothing here is measured. It stands in for the data cellw1 must not clip: CyTOF intensities
after ``arcsinh(x / 5)``, as CATALYST and every CyTOF pipeline produce them, where a marker a
cell does not carry reads as background noise around 0 and so is negative in about half the
cells (imaging features, z-scores and protein CLR values share the property). The model:

- cell type ``k`` carries lineage marker ``j`` (with probability 0.4) at intensity ``mu_kj``
  (log-uniform, 20 to 400) or not at all (0); functional (signalling) markers sit low in every
  type (1 to 5);
- a cell's intensity is ``mu_kj * exp(0.4 z)`` plus background noise ``N(0, 5^2)`` (which can
  be negative), and ``X = arcsinh(intensity / 5)``;
- stimulation raises the functional markers by a factor (6 to 20) that depends on the cell type
  (one type does not respond) and lowers one lineage marker by half in the responding types.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from .synthetic import _check_count

if TYPE_CHECKING:
    import anndata

logger = logging.getLogger(__name__)

CONTROL = "control"
STIMULATED = "stimulated"
#: the cofactor of the arcsinh transform (CyTOF's usual 5)
COFACTOR = 5.0
#: functional markers among the markers (the rest are lineage markers)
_FUNCTIONAL_SHARE = 0.25
#: background noise of an intensity, in intensity units
_NOISE = 5.0


def synthetic_cytometry(
    n_control: int = 2_000,
    n_stimulated: int = 2_000,
    n_markers: int = 24,
    n_cell_types: int = 4,
    seed: int = 0,
) -> anndata.AnnData:
    """Simulate a SYNTHETIC CyTOF stimulation experiment (``arcsinh(x / 5)`` values of any sign).

    Parameters
    ----------
    n_control, n_stimulated
        Cells of each condition.
    n_markers
        Markers (>= 8): a quarter functional, the rest lineage markers.
    n_cell_types
        Cell types (>= 2), in equal proportions; the last one does not respond.
    seed
        Seed of the whole simulation.

    Returns
    -------
    anndata.AnnData
        Dense float32 ``X`` (arcsinh-transformed, many values negative); ``obs["condition"]``
        (``"control"`` or ``"stimulated"``) and ``obs["cell_type"]`` (``"type0"``...);
        ``var["functional"]``; ``uns["synthetic"]`` with the settings and each type's
        stimulation factor.
    """
    import anndata as ad
    import pandas as pd

    n_control = _check_count(n_control, "n_control", 1)
    n_stimulated = _check_count(n_stimulated, "n_stimulated", 1)
    n_markers = _check_count(n_markers, "n_markers", 8)
    n_types = _check_count(n_cell_types, "n_cell_types", 2)
    rng = np.random.default_rng(seed)

    n_functional = max(2, int(round(_FUNCTIONAL_SHARE * n_markers)))
    functional = np.zeros(n_markers, dtype=bool)
    functional[n_markers - n_functional :] = True
    carries = rng.random((n_types, n_markers)) < 0.4
    mu = np.where(carries, np.exp(rng.uniform(np.log(20.0), np.log(400.0), (n_types, n_markers))), 0.0)
    mu[:, functional] = rng.uniform(1.0, 5.0, (n_types, n_functional))
    # stimulation factor of the functional markers per type; the last type does not respond
    factor = np.exp(rng.uniform(np.log(6.0), np.log(20.0), n_types))
    factor[-1] = 1.0
    lowered = int(np.flatnonzero(~functional)[0])  # a lineage marker halved where the cells respond

    n = n_control + n_stimulated
    stimulated = np.arange(n) >= n_control
    cell_type = rng.integers(n_types, size=n)
    mean = mu[cell_type].copy()
    responds = stimulated & (factor[cell_type] > 1.0)
    mean[np.ix_(responds, functional)] *= factor[cell_type[responds], None]
    mean[responds, lowered] *= 0.5
    intensity = mean * np.exp(0.4 * rng.standard_normal((n, n_markers))) + _NOISE * rng.standard_normal((n, n_markers))
    X = np.arcsinh(intensity / COFACTOR).astype(np.float32)

    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(np.where(stimulated, STIMULATED, CONTROL), categories=[CONTROL, STIMULATED]),
            "cell_type": pd.Categorical.from_codes(cell_type, categories=[f"type{k}" for k in range(n_types)]),
        },
        index=pd.Index([f"cell{i:05d}" for i in range(n)]),
    )
    var = pd.DataFrame({"functional": functional}, index=pd.Index([f"marker{j:02d}" for j in range(n_markers)]))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["synthetic"] = {
        "description": "SYNTHETIC CyTOF-like data simulated by cellw1.datasets.synthetic_cytometry; not measured cells.",
        "seed": seed,
        "transform": f"arcsinh(x / {COFACTOR:g})",
        "control": CONTROL,
        "perturbation": STIMULATED,
        "stimulation_factor": {f"type{k}": float(factor[k]) for k in range(n_types)},
        "lowered_marker": str(var.index[lowered]),
    }
    logger.debug("synthetic_cytometry: %d cells x %d markers, %.0f%% negative", n, n_markers, 100 * (X < 0).mean())
    return adata
