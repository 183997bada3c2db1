"""Other tools' predictions, scored on the same splits as cellw1's methods: plug-ins of :func:`cellw1.evaluate`.

A tool is ``predict(train, test_control, perturbation)``: given copies of the split's training
cells and held-out control cells (AnnData), it returns the predicted cells, an AnnData or an
array like the input data (counts for counts, log-normalised for log-normalised). Its
``seconds`` is the call's wall time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .plugin import Prediction, SplitMethod, SplitRun

if TYPE_CHECKING:
    import anndata as ad


class ExternalMethod(SplitMethod):
    """Another tool, named in :func:`cellw1.evaluate`'s ``external``."""

    stage = "external"

    def predict(self, split: SplitRun) -> Prediction:
        """Call the tool on copies of the split's cells; its output in the split's units."""
        cells, scorer = split.held_cells(), split.units()
        tool = self.plan.external[self.name]
        start = time.perf_counter()
        output = tool(cells.train.copy(), cells.test_control.copy(), split.context.perturbation)
        values = external_prediction(self.name, output, scorer.model, cells.test_control)
        return Prediction(values, time.perf_counter() - start)


def external_prediction(name: str, output: Any, model: Any, test_control: ad.AnnData) -> np.ndarray:
    """Read another tool's predicted cells in ``model``'s units: an AnnData or an array like the input data.

    An array has the test controls' rows and the input's genes (or, with ``obsm_key``, its
    features); either is read by ``model.preprocess``, as the input data would be (counts are
    normalised, log-normalised values kept).
    """
    import anndata as ad

    if not isinstance(output, ad.AnnData):
        values = np.asarray(output.toarray() if hasattr(output, "toarray") else output, dtype=np.float32)
        width = len(model.features)
        if values.ndim != 2 or values.shape != (test_control.n_obs, width):
            raise InputError(
                f"external method {name!r} returned shape {values.shape}; expected ({test_control.n_obs}, {width}): "
                "one row per test control cell, one column per gene of the input (or feature of obsm_key)."
            )
        if model.obsm_key is None:
            output = ad.AnnData(X=values, obs=test_control.obs[[]].copy(), var=test_control.var[[]].copy())
        else:
            output = ad.AnnData(X=np.zeros((values.shape[0], 1), dtype=np.float32), obs=test_control.obs[[]].copy())
            output.obsm[model.obsm_key] = values
    if output.n_obs != test_control.n_obs:
        raise InputError(
            f"external method {name!r} predicted {output.n_obs} cells for {test_control.n_obs} test controls."
        )
    return np.asarray(model.preprocess(output), dtype=np.float64)
