"""Principal components as an embedding: ``z = (x - mean) V^T``, decoded on the principal subspace.

``V`` holds the top right singular vectors of the centred training cells, computed exactly
or, for large inputs, by randomised SVD (:data:`~cellw1.pp.embedding.EXACT_SVD_WORK`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np
import torch

from ..errors import ConfigError
from .embedding import CHUNK, EXACT_SVD_WORK, PCA_SOLVERS, Embedding, EmbeddingConfig

logger = logging.getLogger(__name__)


def _orient(components: np.ndarray) -> np.ndarray:
    """Flip signs so the largest-magnitude entry of every component is positive (a fixed choice)."""
    rows = np.arange(len(components))
    signs = np.sign(components[rows, np.abs(components).argmax(axis=1)])
    return components * np.where(signs == 0, 1.0, signs)[:, None]


def principal_components(
    x: np.ndarray, n_components: int, *, seed: int = 0, solver: Literal["auto", "exact", "randomized"] = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Top principal axes of the rows of ``x: (n, g)``.

    ``"exact"`` is the thin SVD of the centred data (float64). ``"randomized"`` is subspace
    iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4) with ``k + 10`` columns, four power
    iterations and a seeded Gaussian start, on a float32 centred copy: it costs
    ``O(n g k)`` instead of ``O(n g min(n, g))``. ``"auto"`` is exact up to ``2e9``
    multiply-adds (e.g. 5,000 x 300, or 1,000 x 2,000), randomised beyond.

    Returns
    -------
    mean : (g,) float64
    components : (k, g) float64, orthonormal rows, each oriented so its largest entry is positive
    variance : (k,) float64, the variance of the data along each component (ddof 1)
    total_variance : float, the sum of the variances of all ``g`` features
    """
    if solver not in PCA_SOLVERS:
        raise ConfigError(f"unknown PCA solver {solver!r}; use one of {PCA_SOLVERS}.")
    n, g = x.shape
    k = int(n_components)
    mean = x.mean(axis=0, dtype=np.float64)
    if solver == "exact" or (solver == "auto" and n * g * min(n, g) <= EXACT_SVD_WORK):
        centred = np.asarray(x, dtype=np.float64) - mean
        total = float(np.square(centred).sum()) / max(n - 1, 1)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        components, sing = vt[:k], s[:k]
    else:
        centred = np.asarray(x, dtype=np.float32) - mean.astype(np.float32)

        def orthonormal_basis(a: np.ndarray) -> np.ndarray:  # QR in float64, products in float32
            return np.linalg.qr(a.astype(np.float64))[0].astype(np.float32)

        squares = (float(np.square(centred[i : i + CHUNK], dtype=np.float64).sum()) for i in range(0, n, CHUNK))
        total = sum(squares) / max(n - 1, 1)
        width = min(k + 10, n, g)
        q = orthonormal_basis(centred @ np.random.default_rng(seed).standard_normal((g, width)).astype(np.float32))
        for _ in range(4):  # power iterations: (A A^T)^4 A sharpens the spectrum
            q = orthonormal_basis(centred @ orthonormal_basis(centred.T @ q))
        small = (centred.T @ q).T.astype(np.float64)  # (width, g) = Q^T A, whose SVD gives V
        _, s, vt = np.linalg.svd(small, full_matrices=False)
        components, sing = vt[:k], s[:k]
    return mean, _orient(components), sing**2 / max(n - 1, 1), total


class PCAEmbedding(Embedding):
    """Principal components: ``z = (x - mean) V^T`` and ``decode(z) = z V + mean``.

    ``V: (k, g)`` has orthonormal rows (the top right singular vectors of the centred training
    cells), so ``decode(encode(x))`` is the orthogonal projection of ``x`` on the affine
    principal subspace: exact for cells lying in it.

    Parameters
    ----------
    mean
        ``(g,)`` mean of the training cells.
    components
        ``(k, g)`` orthonormal principal axes, by decreasing variance.
    explained_variance
        ``(k,)`` variance of the training cells along each axis.
    """

    kind = "pca"

    def __init__(
        self,
        mean: np.ndarray,
        components: np.ndarray,
        explained_variance: np.ndarray,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)
        self.explained_variance = np.asarray(explained_variance, dtype=np.float32)
        k, g = self.components.shape if self.components.ndim == 2 else (-1, -1)
        if k < 1 or self.mean.shape != (g,) or self.explained_variance.shape != (k,):
            raise ValueError(
                f"mean {self.mean.shape}, components {self.components.shape} and explained_variance "
                f"{self.explained_variance.shape} do not fit together"
            )
        super().__init__(self.components.shape[1], self.components.shape[0], info)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) @ self.components.T

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return z @ self.components + self.mean

    @classmethod
    def fit(cls, x: np.ndarray, *, config: EmbeddingConfig, seed: int = 0, progress: bool = False) -> PCAEmbedding:
        """The principal components of ``x`` (at most ``config.n_components``, fewer than cells and genes)."""
        n, g = x.shape
        k = min(config.n_components, n - 1, g)
        if k < config.n_components:
            logger.info(
                "PCA: n_components=%d reduced to %d = min(n_cells - 1, n_features) for %d cells x %d features",
                config.n_components,
                k,
                n,
                g,
            )
        start = time.perf_counter()
        mean, components, variance, total = principal_components(x, k, seed=seed)
        seconds = time.perf_counter() - start
        ratio = float(variance.sum() / total) if total > 0 else 1.0
        info = {"n_cells": n, "seconds": seconds, "explained_variance_ratio": ratio, "seed": seed}
        logger.info(
            "PCA: %d components explain %.1f%% of the variance of %d cells (%.2f s)", k, 100 * ratio, n, seconds
        )
        return cls(mean, components, variance, info)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The mean, components and variances as tensors, by name."""
        return {
            "mean": torch.from_numpy(self.mean.copy()),
            "components": torch.from_numpy(self.components.copy()),
            "explained_variance": torch.from_numpy(self.explained_variance.copy()),
        }

    @classmethod
    def _from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> PCAEmbedding:
        return cls(
            tensors["mean"].cpu().numpy(),
            tensors["components"].cpu().numpy(),
            tensors["explained_variance"].cpu().numpy(),
            header.get("info"),
        )
