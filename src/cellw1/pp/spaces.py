"""The feature spaces by name (``"genes"``, ``"pca"``, ``"autoencoder"``): check, fit and load."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, InputError, ModelFileError
from ..ot.sampling import Cells
from .autoencoder import Autoencoder
from .embedding import Embedding, EmbeddingConfig, GeneSpace, check_cells
from .pca import PCAEmbedding

EMBEDDINGS: dict[str, type[Embedding]] = {"genes": GeneSpace, "pca": PCAEmbedding, "autoencoder": Autoencoder}


def check_space(space: str) -> type[Embedding]:
    """The embedding class of ``space``; an unknown space is a ConfigError listing the known ones."""
    if space not in EMBEDDINGS:
        raise ConfigError(f"unknown space {space!r}; use one of {', '.join(map(repr, EMBEDDINGS))}.")
    return EMBEDDINGS[space]


def fit_embedding(
    space: str,
    x: np.ndarray | Cells,
    *,
    config: EmbeddingConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Embedding:
    """Fit the embedding named ``space`` on cells ``x: (n, g)`` of both groups together.

    Parameters
    ----------
    space
        ``"genes"``, ``"pca"`` or ``"autoencoder"``.
    x
        Preprocessed cells (float array; not modified), or, for the autoencoder,
        :class:`~cellw1.ot.sampling.Cells` streamed from disk.
    config
        Embedding hyper-parameters; :class:`EmbeddingConfig` defaults when ``None``.
    seed
        Seed of the autoencoder (initialisation, split, minibatches) and of randomised PCA.
    progress
        Show a progress bar while the autoencoder trains.

    Returns
    -------
    Embedding
    """
    cls = check_space(space)
    config = EmbeddingConfig() if config is None else config
    if not isinstance(config, EmbeddingConfig):
        raise ConfigError(f"config must be an EmbeddingConfig, got {type(config).__name__}.")
    if isinstance(x, Cells):  # streamed from disk: minibatches from the sampler's buffers
        if cls is not Autoencoder:
            raise ConfigError(f"the {space!r} embedding is fitted on cells in memory, not on streamed cells.")
        return cls.fit(x, config=config, seed=seed, progress=progress)
    arr = check_cells(x, "x")
    if len(arr) < 2:
        raise InputError(f"x has {len(arr)} cells; at least 2 are needed to fit an embedding.")
    if arr.shape[1] < 1:
        raise InputError("x has no features.")
    return cls.fit(arr, config=config, seed=seed, progress=progress)


def load_embedding(tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Embedding:
    """Rebuild any embedding from :meth:`Embedding.state_tensors` and :meth:`Embedding.header`."""
    kind = header.get("kind")
    if kind not in EMBEDDINGS:
        raise ModelFileError(f"unknown embedding kind {kind!r} (known: {', '.join(EMBEDDINGS)}); upgrade cellw1.")
    return EMBEDDINGS[kind].from_state(tensors, header)
