"""What a prediction says about itself: its scale in ``uns``, and the option to add it to the input as a layer.

Every prediction carries ``uns["cellw1"]`` (or ``uns[key_added]``), a record of everything
needed to put other data on the same scale and to know which model made it:

================ ===========================================================================
key              value
================ ===========================================================================
method, space    the prediction method and the space it was fitted in
control,         the labels of the training groups
perturbation
input_kind       ``"counts"`` (cellw1 normalised and log-transformed them), ``"log"`` (already
                 log-normalised: used as given), ``"continuous"`` (values of any sign: used as
                 given, never clipped or calibrated) or ``None`` (an obsm embedding)
target_sum       counts only: the total every cell was scaled to before ``log1p`` (the median
                 total count of the training cells); ``None`` otherwise
log_base         ``"e"`` for counts (natural ``log1p``); ``None`` where the values came
                 transformed (cellw1 does not know their base)
scale            one sentence saying the same
values           what the numbers are: ``"log1p-normalised"`` (counts), ``"log-normalised"``,
                 ``"continuous"`` or the obsm key
output           what was done to them: ``"calibrated"`` (expression: zeros and gene means,
                 :mod:`cellw1.pp.calibration`), ``"clipped"`` (expression clipped at 0 only),
                 ``"raw"`` (continuous: the map's values as they are), ``"unchanged"`` (no
                 response: the input itself); the conditional model adds its own variants
layer, obsm_key  where the model read its input
cellw1_version   the version that made the prediction
model_sha256     sha256 of the model's weights, the ``sha256`` entry of ``model.safetensors``'s
                 metadata once saved
================ ===========================================================================

``predict(..., key_added=NAME)`` returns a copy of the input instead of a new AnnData of
predicted cells (see :func:`add_prediction`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..files.model_files import tensor_checksum

if TYPE_CHECKING:
    import anndata as ad


def scale_record(model: Any, output: str | None) -> dict[str, Any]:
    """The ``uns`` record of a prediction by ``model``, a :class:`~cellw1.tl.model.PerturbationModel` (module docstring)."""
    pre = model.preprocessor
    kind = None if pre is None else pre.input_kind
    if kind == "counts":
        assert pre is not None
        assert pre.target_sum is not None
        scale = (
            f"natural log1p of counts scaled to {pre.target_sum:.6g} per cell (the median total count of the "
            "training cells): log(1 + target_sum * counts / total counts)"
        )
    elif kind == "log":
        scale = "the input's own values (already log-normalised), as given; cellw1 applied no transform"
    elif kind == "continuous":
        scale = "the input's own continuous values (any sign), as given; cellw1 applied no transform and no clipping"
    else:
        scale = f"the features of obsm[{model.obsm_key!r}], as given"
    return {
        "method": model.method.name,
        "space": model.embedding.kind,
        "control": model.control,
        "perturbation": model.perturbation,
        "values": model.obsm_key if kind is None else _VALUES.get(kind, model.obsm_key),
        "output": output,
        "input_kind": kind,
        "target_sum": None if pre is None else pre.target_sum,
        "log_base": "e" if kind == "counts" else None,
        "scale": scale,
        "layer": model.layer,
        "obsm_key": model.obsm_key,
        "cellw1_version": _version(),
        "model_sha256": tensor_checksum(model.tensors()),
    }


#: ``uns["cellw1"]["values"]`` of each input kind
_VALUES = {"counts": "log1p-normalised", "log": "log-normalised", "continuous": "continuous"}


def _version() -> str:
    from .._version import __version__

    return __version__


def check_key_added(key_added: str) -> str:
    """``key_added`` if it is a usable layer or obsm name (non-empty, no surrounding spaces); else a ConfigError."""
    if not isinstance(key_added, str) or not key_added or key_added.strip() != key_added:
        raise ConfigError(f"key_added={key_added!r} must be a non-empty name without surrounding spaces.")
    return key_added


def add_prediction(base: ad.AnnData, predicted: ad.AnnData, key_added: str, obsm: bool) -> ad.AnnData:
    """A copy of ``base`` (the cells predicted, every gene) with the prediction added under ``key_added``.

    - ``layers[key_added]``: the predicted expression, float32, of ``base``'s shape; genes the
      model does not model (not among its features) are NaN, and ``var[key_added + "_modelled"]``
      says which genes are modelled. For an obsm model, ``obsm[key_added]`` instead.
    - ``obs[key_added + "_response"]``: the distance each cell moved in the fitted space.
    - ``uns[key_added]``: the record of the scale and the model (:func:`scale_record`).
    - ``X``, the other layers, obs, var and uns of the input are copied unchanged.
    """
    result = base.copy()
    for where, names in (("layers", result.layers), ("obsm", result.obsm), ("uns", result.uns)):
        if key_added in names:
            raise ConfigError(f"the input already has {where}[{key_added!r}]; choose another key_added.")
    values = np.asarray(predicted.X, dtype=np.float32)
    if obsm:
        result.obsm[key_added] = values
    else:
        layer = np.full(result.shape, math.nan, dtype=np.float32)
        columns = pd.Index(result.var_names).get_indexer(predicted.var_names)
        layer[:, columns] = values
        result.layers[key_added] = layer
        modelled = np.zeros(result.n_vars, dtype=bool)
        modelled[columns] = True
        result.var[f"{key_added}_modelled"] = modelled
    result.obs[f"{key_added}_response"] = np.asarray(predicted.obs["response"], dtype=np.float32)
    result.uns[key_added] = dict(predicted.uns["cellw1"])
    return result
