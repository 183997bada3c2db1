"""cellw1: fast Wasserstein-1 neural optimal transport for single-cell perturbation prediction.

The two-phase solver of Chen et al.: a 1-Lipschitz Kantorovich potential gives each cell's
direction of travel, a learned step size how far it goes.

>>> import numpy as np, cellw1
>>> x = np.random.default_rng(0).normal(size=(500, 2))
>>> tmap = cellw1.fit_map(x, x + [3.0, 0.0], cellw1.W1Config(potential_iters=500, step_iters=300))
>>> moved = tmap.transport(x)
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: public name -> submodule defining it; imported on first use (PEP 562), so that
#: ``import cellw1`` is light and the ``cellw1`` command can handle Ctrl-C while torch loads
_EXPORTS: dict[str, str] = {
    "W1Config": "ot.config",
    "CellW1Error": "errors",
    "ConfigError": "errors",
    "InputError": "errors",
    "ModelFileError": "errors",
    "OutputError": "errors",
    "MissingDependencyError": "errors",
    "GroupSort": "ot.lipschitz",
    "LipschitzPotential": "ot.lipschitz",
    "OrthonormalLinear": "ot.lipschitz",
    "fit_potential": "ot.potential",
    "potential_step": "ot.potential",
    "fit_map": "ot.solver",
    "StepSize": "ot.stepsize",
    "fit_step_size": "ot.stepsize",
    "TransportMap": "ot.transport",
    "W2Config": "ot.config",
    "W2Map": "ot.w2",
    "fit_w2": "ot.w2",
    "EmbeddingConfig": "pp.embedding",
    "ModelCollection": "tl.collection",
    "PerturbationModel": "tl.model",
    "load": "tl.collection",
    "fit": "tl.api",
    "fit_all": "parallel.perturbations",
    "fit_conditional": "tl.conditional",
    "ConditionalModel": "tl.conditional",
    "screen": "tl.screen",
    "ScreenResult": "tl.screen",
    "gene_vectors": "tl.gene_vectors",
    "ConditionalConfig": "ot.config",
    "EvaluationResult": "eval.result",
    "evaluate": "eval.evaluation",
}
#: public sub-modules and layers -> where they live
_SUBMODULES: dict[str, str] = {
    "datasets": "datasets",
    "metrics": "eval.metrics",
    "monotonicity": "eval.monotonicity",
    "ot": "ot",
    "io": "io",
    "pp": "pp",
    "pl": "pl",
    "tl": "tl",
    "eval": "eval",
    "parallel": "parallel",
}

if TYPE_CHECKING:
    from . import datasets
    from .errors import CellW1Error, ConfigError, InputError, MissingDependencyError, ModelFileError, OutputError
    from .eval import metrics, monotonicity
    from .eval.evaluation import evaluate
    from .eval.result import EvaluationResult
    from .ot.config import ConditionalConfig, W1Config, W2Config
    from .ot.lipschitz import GroupSort, LipschitzPotential, OrthonormalLinear
    from .ot.potential import fit_potential, potential_step
    from .ot.solver import fit_map
    from .ot.stepsize import StepSize, fit_step_size
    from .ot.transport import TransportMap
    from .ot.w2 import W2Map, fit_w2
    from .parallel.perturbations import fit_all
    from .pp.embedding import EmbeddingConfig
    from .tl.api import fit
    from .tl.collection import ModelCollection, load
    from .tl.conditional import ConditionalModel, fit_conditional
    from .tl.gene_vectors import gene_vectors
    from .tl.model import PerturbationModel
    from .tl.screen import ScreenResult, screen


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first use (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CellW1Error",
    "ConditionalConfig",
    "ConditionalModel",
    "fit_conditional",
    "screen",
    "ScreenResult",
    "gene_vectors",
    "EmbeddingConfig",
    "EvaluationResult",
    "ModelCollection",
    "PerturbationModel",
    "W2Config",
    "W2Map",
    "evaluate",
    "fit",
    "fit_all",
    "fit_w2",
    "load",
    "ConfigError",
    "GroupSort",
    "InputError",
    "LipschitzPotential",
    "ModelFileError",
    "OutputError",
    "OrthonormalLinear",
    "StepSize",
    "TransportMap",
    "W1Config",
    "fit_map",
    "fit_potential",
    "fit_step_size",
    "potential_step",
]
