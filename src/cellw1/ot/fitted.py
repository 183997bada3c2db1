"""What the fitted W1 and W2 maps share: points in and out, the file header, save and load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

from .._version import __version__
from ..checks import as_points
from ..errors import InputError
from ..files.model_files import load_tensors, save_tensors
from .training import History


class FittedMap:
    """Base of the fitted maps: what every map file holds and how it is saved and loaded.

    The maps are :class:`~cellw1.ot.transport.TransportMap`, :class:`~cellw1.ot.w2.W2Map` and
    :class:`~cellw1.ot.conditional.ConditionalMap`.

    A subclass sets :attr:`FORMAT` and :attr:`FORMAT_VERSION` and defines ``dim``, ``device``,
    ``to``, ``state_tensors`` and ``from_state``; its ``__init__`` passes ``config``, ``info`` and
    ``history`` to this one.

    Attributes
    ----------
    history
        The training history of the fit (:mod:`cellw1.ot.training`): a dict of lists of
        numbers, saved with the map; empty for maps saved before histories were kept.
    """

    FORMAT: ClassVar[str]
    FORMAT_VERSION: ClassVar[int]

    def __init__(self, config: Any, info: dict[str, Any] | None = None, history: History | None = None) -> None:
        self.config = config
        #: fit diagnostics (cells, best steps, seconds...)
        self.info: dict[str, Any] = dict(info or {})
        self.history: History = dict(history or {})

    @property
    def dim(self) -> int:
        """Number of features of the cells the map was fitted on."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """The device the map's networks are on."""
        raise NotImplementedError

    def to(self, device: str | torch.device) -> Self:
        """Move the map's networks and tensors to ``device``; returns the map itself."""
        raise NotImplementedError

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors saved in the map file, by name (weights, standardisation)."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any], *, source: str = "model") -> Self:
        """The map the saved ``tensors`` and JSON ``header`` describe.

        ``source`` names the file in error messages.
        """
        raise NotImplementedError

    def _points(self, x: Any, name: str = "x") -> torch.Tensor:
        """``x: (n, dim)`` as a float tensor on the map's device; other widths are an InputError."""
        t = as_points(x, name, min_points=1, purpose="")
        if t.shape[1] != self.dim:
            raise InputError(f"{name} has {t.shape[1]} features but the map was fitted on {self.dim}.")
        return t.to(self.device)

    def header(self) -> dict[str, Any]:
        """JSON description of the map (format, dimension, config, fit info, training history)."""
        return {
            "format": self.FORMAT,
            "format_version": self.FORMAT_VERSION,
            "cellw1_version": __version__,
            "dim": self.dim,
            "config": self.config.to_dict(),
            "info": self.info,
            "history": self.history,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the map to one safetensors file (weights + JSON header), atomically.

        A crash mid-save leaves any previous file at ``path`` intact. No pickle is used.
        """
        return save_tensors(path, self.state_tensors(), self.header())

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Self:
        """Load a map written by :meth:`save` (no pickle; checksummed) onto ``device``."""
        tensors, header = load_tensors(path, kind=cls.__name__)
        return cls.from_state(tensors, header, source=f"{cls.__name__} file {str(path)!r}").to(device)
