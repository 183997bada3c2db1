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
:meth:`Embedding.header`, :func:`~cellw1.pp.spaces.load_embedding`); the model that holds it
writes them to its safetensors file, never with pickle.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..checks import as_array
from ..errors import ConfigError, InputError, ModelFileError
from ..files.model_files import check_format
from ..ot.config import Config, check_fields, check_threads
from ..ot.training import History

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
class EmbeddingConfig(Config):
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
        2,000 cells; the cap bounds the fit's time on wide data, and early stopping usually
        ends sooner (docs/speed.md gives the time per step).
    ae_batch_size
        Cells per minibatch (drawn with replacement from the training split).
    ae_eval_every
        Steps between two evaluations of the full validation loss.
    ae_patience
        Training stops after this many steps without a lower validation loss (rounded up to
        whole evaluations); the state with the lowest validation loss is the one returned.
    ae_val_fraction
        Share of the cells (of both groups, shuffled) held out for validation.
    device
        Where the autoencoder trains and runs: ``"cpu"`` (default), ``"cuda"``, ``"auto"``.
    cpu_threads
        Torch intra-op threads while the autoencoder trains on the CPU (restored afterwards).
        ``None`` (default) keeps torch's setting: its layers are wider than the solvers' networks.
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
    cpu_threads: int | None = None

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
        check_threads(self.cpu_threads)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field (the device as text)."""
        return {**super().to_dict(), "device": str(self.device)}


# -- input checks ------------------------------------------------------------------------------
def check_cells(x: Any, name: str, n_columns: int | None = None, mismatch: str = "") -> np.ndarray:
    """``x`` as a finite C-contiguous 2-D float32 array.

    Made by :func:`cellw1.checks.as_array`; ``x`` itself when it already is one, never written to. ``mismatch`` is the error when ``x`` has
    not ``n_columns`` columns; it is formatted with ``got``.
    """
    arr = np.ascontiguousarray(as_array(x, name, dtype=np.float32, min_rows=0))
    if n_columns is not None and arr.shape[1] != n_columns:
        raise InputError(mismatch.format(got=arr.shape[1]))
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
    history
        Training history of a trained embedding (:mod:`cellw1.ot.training`); empty for the
        others.
    """

    kind: ClassVar[str] = ""

    def __init__(self, n_features: int, dim: int, info: dict[str, Any] | None = None) -> None:
        self.n_features = int(n_features)
        self.dim = int(dim)
        self.info: dict[str, Any] = dict(info or {})
        self.history: History = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_features={self.n_features}, dim={self.dim})"

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Latent coordinates of cells ``x: (n, n_features)``; a new float32 ``(n, dim)``."""
        arr = check_cells(
            x,
            "x",
            self.n_features,
            f"x has {{got}} features but the {self.kind} embedding was fitted on {self.n_features}; "
            "pass the same features, in the same order, as the training data.",
        )
        return self._apply(self._encode, arr, self.dim)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Cells ``(n, n_features)`` for latent coordinates ``z: (n, dim)``; a new float32 array."""
        arr = check_cells(
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
        """JSON description: ``kind`` selects the class in :func:`~cellw1.pp.spaces.load_embedding`."""
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
        """The gene space of ``x``'s columns: nothing to learn, the cells are only counted."""
        return cls(x.shape[1], {"n_cells": len(x)})

    @classmethod
    def _from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> GeneSpace:
        return cls(int(header["n_features"]), header.get("info"))
