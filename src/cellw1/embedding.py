"""Feature spaces a map is fitted in: the genes themselves, principal components, or an autoencoder.

An :class:`Embedding` encodes cells ``x: (n, g)`` into ``z: (n, k)``, where the transport map
is fitted, and decodes predicted ``z`` back to genes. It is fitted once on the training cells
of both groups (control and perturbed), so both are described in the same coordinates.

* :class:`GeneSpace` (``"genes"``): the identity; the W1 solver works on thousands of genes.
* :class:`PCAEmbedding` (``"pca"``): ``z = (x - mean) V^T`` with the top right singular
  vectors ``V`` of the centred cells; ``decode`` is the inverse on the principal subspace.
* :class:`Autoencoder` (``"autoencoder"``): MLP encoder and decoder trained on the mean
  squared reconstruction error, as in the paper's sciplex3 experiments (CellOT's settings:
  hidden ``(512, 512)``, latent 50, Adam lr 1e-3, weight decay 1e-5; ``(32, 32)`` and 8 for
  the 48 features of 4i). The paper trains 250,000 steps; here training stops early when the
  validation loss stops improving (Methods 4.2, "Hyperparameters and training details").

Every embedding stores itself as tensors plus a JSON header (:meth:`Embedding.state_tensors`,
:meth:`Embedding.header`, :func:`load_embedding`); the caller writes them with
:func:`cellw1._io.save_tensors`, never with pickle.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._data import resolve_device
from ._io import check_format
from .config import check_fields
from .errors import ConfigError, InputError, ModelFileError
from .potential import adam_kernel
from .sampling import Cells, MemoryCells, minibatches

logger = logging.getLogger(__name__)

FORMAT = "cellw1.Embedding"
FORMAT_VERSION = 1
#: rows encoded or decoded at once
CHUNK = 8_192
#: inputs with fewer features get the small autoencoder of the paper's 4i setting
LOW_DIM = 100
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}
#: exact SVD up to this many multiply-adds (``n * g * min(n, g)``); randomised beyond
EXACT_SVD_WORK = 2e9
PCA_SOLVERS: tuple[str, ...] = ("auto", "exact", "randomized")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Hyper-parameters of the embeddings (only the ones of the chosen space are used).

    Attributes
    ----------
    n_components
        Principal components kept by ``"pca"``; clipped to ``min(n_cells - 1, n_genes)``.
    ae_hidden
        Hidden widths of the encoder (the decoder mirrors them). ``None``: ``(512, 512)``, or
        ``(32, 32)`` for inputs with fewer than 100 features (paper / CellOT).
    ae_latent
        Latent size. ``None``: 50, or 8 for inputs with fewer than 100 features.
    ae_activation
        ``"relu"`` (CellOT) or ``"silu"``.
    ae_lr, ae_weight_decay
        Adam learning rate and L2 weight decay; paper: 1e-3 and 1e-5.
    ae_max_iters
        Most Adam steps (paper: 250,000). 3,000 steps of a batch of 256 are ~380 passes over
        2,000 cells. With hidden ``(512, 512)`` a step takes ~17 ms at 300 genes and ~150 ms
        at 7,000 genes on one CPU thread, so the cap is ~1 and ~8 minutes; early stopping
        usually ends sooner (2,000 cells x 300 genes of Zhao et al.: 1,100 steps, 20 s).
    ae_batch_size
        Cells per minibatch (drawn with replacement from the training split).
    ae_eval_every
        Steps between two evaluations of the full validation loss.
    ae_patience
        Training stops after this many steps without a lower validation loss; the state with
        the lowest validation loss is the one returned.
    ae_val_fraction
        Share of the cells (of both groups, shuffled) held out for validation.
    device
        Where the autoencoder trains and runs: ``"cpu"`` (default), ``"cuda"``, ``"auto"``.
    """

    n_components: int = 50
    ae_hidden: tuple[int, ...] | None = None
    ae_latent: int | None = None
    ae_activation: Literal["relu", "silu"] = "relu"
    ae_lr: float = 1e-3
    ae_weight_decay: float = 1e-5
    ae_max_iters: int = 3_000
    ae_batch_size: int = 256
    ae_eval_every: int = 100
    ae_patience: int = 500
    ae_val_fraction: float = 0.1
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_fields(self)  # before the conversion below, which would hide a 512.5 or a bool
        if self.ae_hidden is not None:
            object.__setattr__(self, "ae_hidden", tuple(int(h) for h in self.ae_hidden))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~cellw1.errors.ConfigError` naming the first invalid field."""
        check_fields(self)
        for name in ("n_components", "ae_max_iters", "ae_batch_size", "ae_eval_every", "ae_patience"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an integer >= 1.")
        if self.ae_hidden is not None and (len(self.ae_hidden) == 0 or min(self.ae_hidden) < 1):
            raise ConfigError(
                f"ae_hidden={self.ae_hidden!r} must be None (automatic) or positive widths, e.g. (512, 512)."
            )
        if self.ae_latent is not None and (not isinstance(self.ae_latent, (int, np.integer)) or self.ae_latent < 1):
            raise ConfigError(f"ae_latent={self.ae_latent!r} must be None (automatic) or an integer >= 1.")
        if self.ae_activation not in ACTIVATIONS:
            raise ConfigError(f"unknown ae_activation {self.ae_activation!r}; use one of {tuple(ACTIVATIONS)}.")
        if not self.ae_lr > 0:
            raise ConfigError(f"ae_lr={self.ae_lr!r} must be positive; the paper uses 1e-3.")
        if not self.ae_weight_decay >= 0:
            raise ConfigError(f"ae_weight_decay={self.ae_weight_decay!r} must be >= 0; the paper uses 1e-5.")
        if not 0.0 <= self.ae_val_fraction < 0.5:
            raise ConfigError(f"ae_val_fraction={self.ae_val_fraction!r} must lie in [0, 0.5).")
        if not isinstance(self.device, (str, torch.device)):
            raise ConfigError(f"device={self.device!r} must be a string such as 'cpu', 'cuda' or 'auto'.")

    def replace(self, **changes: Any) -> EmbeddingConfig:
        """A copy with some fields changed (the config itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["device"] = str(out["device"])
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer file format)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(
                f"unknown EmbeddingConfig fields {sorted(unknown)}; the file may come from a newer cellw1."
            )
        return cls(**data)


# -- input checks ------------------------------------------------------------------------------
def _rows(x: Any, name: str, n_columns: int | None = None, mismatch: str = "") -> np.ndarray:
    """``x`` as a finite C-contiguous 2-D float32 array (``x`` itself when it already is one;
    never written to). ``mismatch`` is the error when ``x`` has not ``n_columns`` columns; it is
    formatted with ``got``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{name} has dtype {arr.dtype}; pass real numbers of shape (n_cells, n_features).")
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_cells, n_features), got shape {arr.shape}.")
    if n_columns is not None and arr.shape[1] != n_columns:
        raise InputError(mismatch.format(got=arr.shape[1]))
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"{name} contains NaN or inf in {bad} rows; remove or impute those cells.")
    return arr


# -- the interface -----------------------------------------------------------------------------
class Embedding(ABC):
    """A fitted map between gene space ``(n, n_features)`` and a latent space ``(n, dim)``.

    Attributes
    ----------
    kind
        Registry name (``"genes"``, ``"pca"``, ``"autoencoder"``).
    n_features
        Number of input features ``g``.
    dim
        Latent size ``k``.
    info
        Fit diagnostics (seconds, losses...).
    """

    kind: ClassVar[str] = ""

    def __init__(self, n_features: int, dim: int, info: dict[str, Any] | None = None) -> None:
        self.n_features = int(n_features)
        self.dim = int(dim)
        self.info: dict[str, Any] = dict(info or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_features={self.n_features}, dim={self.dim})"

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Latent coordinates of cells ``x: (n, n_features)``; a new float32 ``(n, dim)``."""
        arr = _rows(
            x, "x", self.n_features,
            f"x has {{got}} features but the {self.kind} embedding was fitted on {self.n_features}; "
            "pass the same features, in the same order, as the training data.",
        )
        return self._apply(self._encode, arr, self.dim)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Cells ``(n, n_features)`` for latent coordinates ``z: (n, dim)``; a new float32 array."""
        arr = _rows(
            z, "z", self.dim, f"z has {{got}} columns but the {self.kind} embedding has {self.dim} latent dimensions."
        )
        return self._apply(self._decode, arr, self.n_features)

    @staticmethod
    def _apply(fn: Any, arr: np.ndarray, width: int) -> np.ndarray:
        out = np.empty((len(arr), width), dtype=np.float32)
        for start in range(0, len(arr), CHUNK):
            out[start : start + CHUNK] = fn(arr[start : start + CHUNK])
        return out

    @abstractmethod
    def _encode(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _decode(self, z: np.ndarray) -> np.ndarray: ...

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The fitted numbers, as CPU tensors (empty for the identity)."""
        return {}

    def header(self) -> dict[str, Any]:
        """JSON description: ``kind`` selects the class in :func:`load_embedding`."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "n_features": self.n_features,
            "dim": self.dim,
            "info": self.info,
        }

    @classmethod
    @abstractmethod
    def fit(cls, x: np.ndarray, *, config: EmbeddingConfig, seed: int = 0, progress: bool = False) -> Embedding:
        """Fit on cells ``x: (n, g)`` (already checked: finite float32)."""

    @classmethod
    @abstractmethod
    def _from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Embedding: ...

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Embedding:
        """Rebuild an embedding from :meth:`state_tensors` and :meth:`header` output.

        Raises :class:`~cellw1.errors.ModelFileError` when they do not describe this class or
        do not fit together.
        """
        check_format(header, FORMAT, FORMAT_VERSION, source="the stored embedding")
        if header.get("kind") != cls.kind:
            raise ModelFileError(f"the stored embedding is {header.get('kind')!r}, not {cls.kind!r}.")
        try:
            embedding = cls._from_state(tensors, header)
            if embedding.n_features != int(header["n_features"]) or embedding.dim != int(header["dim"]):
                raise ValueError(f"shape {embedding.n_features} -> {embedding.dim} differs from the header's")
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelFileError(
                f"the stored {cls.kind} embedding does not match its description ({exc}); save it again."
            ) from exc
        return embedding


# -- genes -------------------------------------------------------------------------------------
class GeneSpace(Embedding):
    """The identity: the map is fitted on the genes themselves (``dim == n_features``)."""

    kind = "genes"

    def __init__(self, n_features: int, info: dict[str, Any] | None = None) -> None:
        super().__init__(n_features, n_features, info)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return x

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return z

    @classmethod
    def fit(cls, x: np.ndarray, *, config: EmbeddingConfig, seed: int = 0, progress: bool = False) -> GeneSpace:
        return cls(x.shape[1], {"n_cells": len(x)})

    @classmethod
    def _from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> GeneSpace:
        return cls(int(header["n_features"]), header.get("info"))


# -- PCA ---------------------------------------------------------------------------------------
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
        n, g = x.shape
        k = min(config.n_components, n - 1, g)
        if k < config.n_components:
            logger.info(
                "PCA: n_components=%d reduced to %d = min(n_cells - 1, n_features) for %d cells x %d features",
                config.n_components, k, n, g,
            )
        start = time.perf_counter()
        mean, components, variance, total = principal_components(x, k, seed=seed)
        seconds = time.perf_counter() - start
        ratio = float(variance.sum() / total) if total > 0 else 1.0
        info = {"n_cells": n, "seconds": seconds, "explained_variance_ratio": ratio, "seed": seed}
        logger.info("PCA: %d components explain %.1f%% of the variance of %d cells (%.2f s)",
                    k, 100 * ratio, n, seconds)
        return cls(mean, components, variance, info)

    def state_tensors(self) -> dict[str, torch.Tensor]:
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


# -- autoencoder -------------------------------------------------------------------------------
def _mlp(widths: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers ``widths[0] -> ... -> widths[-1]`` with the activation between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class AutoencoderNet(nn.Module):
    """Encoder ``g -> hidden -> latent`` and mirrored decoder ``latent -> hidden[::-1] -> g``."""

    def __init__(self, n_features: int, hidden: Sequence[int], latent: int, activation: str = "relu") -> None:
        super().__init__()
        self.n_features, self.latent, self.activation = int(n_features), int(latent), activation
        self.hidden = tuple(int(h) for h in hidden)
        self.encoder = _mlp((self.n_features, *self.hidden, self.latent), activation)
        self.decoder = _mlp((self.latent, *self.hidden[::-1], self.n_features), activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x: (n, g)``."""
        return self.decoder(self.encoder(x))


def autoencoder_step(net: AutoencoderNet, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> torch.Tensor:
    """One Adam step on the mean squared reconstruction error of ``batch``; returns it (detached)."""
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(net(batch), batch)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def reconstruction_error(net: AutoencoderNet, x: torch.Tensor, chunk: int = CHUNK) -> float:
    """Mean squared reconstruction error over all cells and features of ``x`` (full batch)."""
    total = x.new_zeros((), dtype=torch.float64)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        total += (net(block) - block).square().sum(dtype=torch.float64)
    return float(total) / max(x.numel(), 1)


def autoencoder_shape(n_features: int, config: EmbeddingConfig) -> tuple[tuple[int, ...], int]:
    """Hidden widths and latent size for ``n_features`` inputs (the paper's two settings)."""
    low = n_features < LOW_DIM
    hidden = config.ae_hidden or ((32, 32) if low else (512, 512))
    latent = config.ae_latent or (8 if low else 50)
    if latent >= n_features:
        logger.warning("autoencoder latent size %d is not smaller than the %d input features", latent, n_features)
    return tuple(hidden), int(latent)


class Autoencoder(Embedding):
    """An MLP autoencoder: ``encode`` is the encoder, ``decode`` the decoder.

    Parameters
    ----------
    net
        The trained :class:`AutoencoderNet` (put in evaluation mode, gradients off).
    info
        Fit diagnostics: ``steps``, ``best_step``, ``val_loss`` (the kept state's validation
        MSE), ``val_variance`` (mean feature variance of the validation cells, the MSE of
        predicting their mean), ``stopped_early``, ``seconds``, ``history``.
    """

    kind = "autoencoder"

    def __init__(self, net: AutoencoderNet, info: dict[str, Any] | None = None) -> None:
        self.net = net.requires_grad_(False).eval()
        super().__init__(net.n_features, net.latent, info)

    @property
    def device(self) -> torch.device:
        """Device holding the networks."""
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> Autoencoder:
        """Move the networks to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``); returns self."""
        self.net.to(resolve_device(device))
        return self

    @torch.no_grad()
    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self.net.encoder(torch.tensor(x, device=self.device)).cpu().numpy()

    @torch.no_grad()
    def _decode(self, z: np.ndarray) -> np.ndarray:
        return self.net.decoder(torch.tensor(z, device=self.device)).cpu().numpy()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def header(self) -> dict[str, Any]:
        return {**super().header(), "hidden": list(self.net.hidden), "activation": self.net.activation}

    @classmethod
    def _from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> Autoencoder:
        if header.get("activation") not in ACTIVATIONS:
            raise ValueError(f"unknown activation {header.get('activation')!r}")
        net = AutoencoderNet(int(header["n_features"]), header["hidden"], int(header["dim"]), header["activation"])
        net.load_state_dict(tensors)
        return cls(net, header.get("info"))

    @classmethod
    def fit(cls, x: np.ndarray | Cells, *, config: EmbeddingConfig, seed: int = 0, progress: bool = False) -> Autoencoder:
        """Train on ``x: (n, g)`` with minibatch Adam and early stopping.

        A shuffled ``ae_val_fraction`` of the cells is held out (all cells are used for
        validation too when there are too few to split). Every ``ae_eval_every`` steps the
        validation MSE is computed on all held-out cells; the best state is kept in memory and
        training stops ``ae_patience`` steps after the last improvement, or at
        ``ae_max_iters``. Initialisation, split and minibatches derive from ``seed`` only
        (the global torch RNG is left as it was), so a seed gives the same network on the CPU.
        ``x`` may also be :class:`~cellw1.sampling.Cells` streamed from disk (normalised
        genes, on ``config.device``): minibatches then come from its buffers.
        """
        device = resolve_device(config.device)
        cells = x if isinstance(x, Cells) else MemoryCells(torch.tensor(x, device=device))
        hidden, latent = autoencoder_shape(cells.dim, config)
        generator = torch.Generator().manual_seed(seed)
        training, val = cells.split(config.ae_val_fraction, generator)
        n_train = cells.n_cells - len(val)
        if len(val) == 0:
            val = training.buffer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = AutoencoderNet(cells.dim, hidden, latent, config.ae_activation).to(device)
        optimizer = torch.optim.Adam(
            net.parameters(), lr=config.ae_lr, weight_decay=config.ae_weight_decay, **adam_kernel(device)
        )
        batches = minibatches(training, config.ae_batch_size, config.ae_max_iters, generator)
        history: dict[str, list[float]] = {"step": [], "train_loss": [], "val_loss": []}
        best_loss, best_step, best_state = math.inf, 0, copy.deepcopy(net.state_dict())
        running, count, step, stopped_early = torch.zeros((), device=device), 0, 0, False
        bar = tqdm(range(1, config.ae_max_iters + 1), desc="autoencoder", disable=not progress, leave=False)
        start = time.perf_counter()
        for step in bar:
            running += autoencoder_step(net, optimizer, next(batches)[0])
            count += 1
            if step % config.ae_eval_every == 0 or step == config.ae_max_iters:
                val_loss = reconstruction_error(net, val)
                history["step"].append(step)
                history["train_loss"].append(float(running) / count)
                history["val_loss"].append(val_loss)
                running, count = running.zero_(), 0
                bar.set_postfix(val_mse=f"{val_loss:.4g}")
                if val_loss < best_loss:
                    best_loss, best_step, best_state = val_loss, step, copy.deepcopy(net.state_dict())
                elif step - best_step >= config.ae_patience:
                    stopped_early = True
                    break
        bar.close()
        seconds = time.perf_counter() - start
        net.load_state_dict(best_state)
        val_variance = float(val.var(dim=0).mean()) if len(val) > 1 else 0.0
        info = {
            "seed": seed,
            "n_cells": cells.n_cells,
            "n_train": n_train,
            "n_val": len(val),
            "steps": step,
            "max_iters": config.ae_max_iters,
            "stopped_early": stopped_early,
            "best_step": best_step,
            "val_loss": best_loss,
            "val_variance": val_variance,
            "seconds": seconds,
            "ms_per_step": 1000.0 * seconds / max(step, 1),
            "config": config.to_dict(),
            "history": history,
        }
        logger.info(
            "autoencoder %s -> %d: validation MSE %.4g (feature variance %.4g) at step %d of %d%s, %.1f s",
            (cells.dim, *hidden), latent, best_loss, val_variance, best_step, step,
            " (early stop)" if stopped_early else "", seconds,
        )
        return cls(net, info)


# -- registry ----------------------------------------------------------------------------------
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
        :class:`~cellw1.sampling.Cells` streamed from disk.
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
    arr = _rows(x, "x")
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
