"""What the fitted maps share: points in and out, the file header, save and load; the W1 maps' networks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import torch
from torch import nn

from .._version import __version__
from ..checks import as_points, resolve_device
from ..errors import InputError
from ..files.model_files import load_tensors, save_tensors
from .potential import CHUNK, direction, evaluate
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
        """Collect the tensors saved in the map file, by name (weights, standardisation)."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any], *, source: str = "model") -> Self:
        """Rebuild the map the saved ``tensors`` and JSON ``header`` describe.

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


class PotentialStepMap(FittedMap):
    """Base of the fitted W1 maps, single and conditional: a frozen potential and step size.

    ``T(x) = x - eta(x) u(x)`` with ``u = grad f / |grad f|``: the networks of ``f`` and ``eta``
    (conditional ones read a condition code beside the cell), frozen and in evaluation mode.

    Parameters
    ----------
    potential, step_size
        The fitted networks ``f`` and ``eta``.
    config, info, history
        As for :class:`FittedMap`.
    """

    def __init__(
        self,
        potential: nn.Module,
        step_size: nn.Module,
        config: Any,
        info: dict[str, Any] | None = None,
        history: History | None = None,
    ) -> None:
        self.potential_net = potential.requires_grad_(False).eval()
        self.step_size_net = step_size.requires_grad_(False).eval()
        super().__init__(config, info, history)

    @property
    def dim(self) -> int:
        """Number of features ``d`` of the cells."""
        return cast(int, self.potential_net.dim)  # both potentials hold their input width

    def networks(self) -> dict[str, nn.Module]:
        """Name every network of the map by the prefix of its tensors in the file (all move with :meth:`to`)."""
        return {"potential": self.potential_net, "step_size": self.step_size_net}

    def to(self, device: str | torch.device) -> Self:
        """Move the networks to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``); returns the map."""
        dev = resolve_device(device)
        for net in self.networks().values():
            net.to(dev)
        return self

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Collect the weights and buffers of :meth:`networks`, each prefixed with its network's name."""
        return {
            f"{prefix}.{key}": value
            for prefix, net in self.networks().items()
            for key, value in net.state_dict().items()
        }


def transport_points(
    potential: nn.Module, step_size: nn.Module, points: torch.Tensor, batch_size: int = CHUNK
) -> torch.Tensor:
    """``T(x) = x - eta(x) u(x)`` for ``points: (n, d)``, ``batch_size`` rows at a time; ``(n, d)``.

    ``potential`` and ``step_size`` take cells alone: a single map's networks, or conditional
    ones bound to one condition.
    """
    out = []
    for i in range(0, len(points), batch_size):
        chunk = points[i : i + batch_size]
        u = direction(potential, chunk, batch_size)
        out.append(chunk - evaluate(step_size, chunk, batch_size)[:, None] * u)
    return torch.cat(out)
