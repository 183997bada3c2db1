"""cellw1: fast Wasserstein-1 neural optimal transport for single-cell perturbation prediction.

The two-phase solver of Chen et al.: a 1-Lipschitz Kantorovich potential gives each cell's
direction of travel, a learned step size how far it goes.

>>> import numpy as np, cellw1
>>> x = np.random.default_rng(0).normal(size=(500, 2))
>>> tmap = cellw1.fit_map(x, x + [3.0, 0.0], cellw1.W1Config(potential_iters=500, step_iters=300))
>>> moved = tmap.transport(x)
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

from .config import W1Config  # noqa: E402
from .errors import CellW1Error, ConfigError, InputError, ModelFileError  # noqa: E402
from .lipschitz import GroupSort, LipschitzPotential, OrthonormalLinear  # noqa: E402
from .potential import fit_potential, potential_step  # noqa: E402
from .solver import fit_map  # noqa: E402
from .stepsize import StepSize, fit_step_size  # noqa: E402
from .transport import TransportMap  # noqa: E402
from .icnn import W2Config, W2Map, fit_w2  # noqa: E402
from .embedding import EmbeddingConfig  # noqa: E402
from .model import ModelCollection, PerturbationModel, load  # noqa: E402
from .api import fit, fit_all  # noqa: E402
from .evaluation import EvaluationResult, evaluate  # noqa: E402
from . import datasets, metrics  # noqa: E402

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
    "OrthonormalLinear",
    "StepSize",
    "TransportMap",
    "W1Config",
    "fit_map",
    "fit_potential",
    "fit_step_size",
    "potential_step",
]
