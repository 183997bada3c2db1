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

__version__ = "0.1.0"

#: public name -> submodule defining it; imported on first use (PEP 562), so that
#: ``import cellw1`` is light and the ``cellw1`` command can handle Ctrl-C while torch loads
_EXPORTS: dict[str, str] = {
    "W1Config": "config",
    "CellW1Error": "errors", "ConfigError": "errors", "InputError": "errors", "ModelFileError": "errors",
    "OutputError": "errors",
    "GroupSort": "lipschitz", "LipschitzPotential": "lipschitz", "OrthonormalLinear": "lipschitz",
    "fit_potential": "potential", "potential_step": "potential",
    "fit_map": "solver",
    "StepSize": "stepsize", "fit_step_size": "stepsize",
    "TransportMap": "transport",
    "W2Config": "icnn", "W2Map": "icnn", "fit_w2": "icnn",
    "EmbeddingConfig": "embedding",
    "ModelCollection": "model", "PerturbationModel": "model", "load": "model",
    "fit": "api", "fit_all": "api",
    "EvaluationResult": "evaluation", "evaluate": "evaluation",
}
_SUBMODULES = ("datasets", "metrics")

if TYPE_CHECKING:
    from . import datasets, metrics
    from .api import fit, fit_all
    from .config import W1Config
    from .embedding import EmbeddingConfig
    from .errors import CellW1Error, ConfigError, InputError, ModelFileError, OutputError
    from .evaluation import EvaluationResult, evaluate
    from .icnn import W2Config, W2Map, fit_w2
    from .lipschitz import GroupSort, LipschitzPotential, OrthonormalLinear
    from .model import ModelCollection, PerturbationModel, load
    from .potential import fit_potential, potential_step
    from .solver import fit_map
    from .stepsize import StepSize, fit_step_size
    from .transport import TransportMap


def __getattr__(name: str) -> Any:
    """Import the submodule defining ``name`` on first use (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CellW1Error",
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
