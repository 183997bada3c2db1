"""The fitted object: a W1 transport map ``T(x) = x - eta(x) grad f(x) / |grad f(x)|``."""

from __future__ import annotations

from typing import Any

import torch

from ..checks import like_input
from ..errors import ModelFileError
from ..files.model_files import check_format, tensors_under
from .config import W1Config
from .fitted import PotentialStepMap, transport_points
from .lipschitz import LipschitzPotential
from .potential import CHUNK, build_potential, direction, dual_value, evaluate
from .stepsize import StepSize
from .training import History, read_history

FORMAT = "cellw1.TransportMap"
FORMAT_VERSION = 1


class TransportMap(PotentialStepMap):
    """A fitted W1 optimal transport map from a source to a target distribution.

    Parameters
    ----------
    potential
        The 1-Lipschitz Kantorovich potential ``f`` (large on the source, small on the target).
    step_size
        The non-negative step-size network ``eta``.
    config
        The configuration it was fitted with.
    info
        Fit diagnostics (best steps, validation dual and energy distance, seconds).
    history
        Training history (:mod:`cellw1.ot.training`), one entry per validation evaluation:
        ``potential_step``, ``potential_train_dual``, ``potential_val_dual`` and
        ``potential_best_step``, ``potential_stopped_at`` for phase 1; ``step_size_step``,
        ``step_size_loss``, ``step_size_val_energy`` and ``step_size_best_step``,
        ``step_size_stopped_at`` for phase 2.

    Notes
    -----
    Every method accepts a numpy array or a torch tensor ``x: (n, d)`` and returns the same
    kind. Work is done in chunks of ``batch_size`` rows, so a million cells never build one
    large autograd graph.
    """

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    potential_net: LipschitzPotential
    step_size_net: StepSize

    def __init__(
        self,
        potential: LipschitzPotential,
        step_size: StepSize,
        config: W1Config,
        info: dict[str, Any] | None = None,
        *,
        history: History | None = None,
    ) -> None:
        super().__init__(potential, step_size, config, info, history)

    # -- properties ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device holding the networks."""
        return next(self.potential_net.parameters()).device

    @property
    def moves(self) -> bool:
        """False for the map of a perturbation without a detected response.

        Such a map has step size 0 everywhere (:mod:`cellw1.ot.effect`).
        """
        return bool(self.step_size_net.eta_max > 0)

    @property
    def resolved(self) -> float:
        """Share of the training groups' difference above sampling noise (:mod:`cellw1.ot.effect`).

        1 without the test (``effect_alpha=None``, maps saved before it was measured).
        """
        return float((self.info.get("effect") or {}).get("resolved", 1.0))

    def __repr__(self) -> str:
        """Size, learner and device; says when no response was detected."""
        unmoved = "" if self.moves else ", no response detected: cells stay"
        return (
            f"TransportMap(dim={self.dim}, step_size_learner={self.config.step_size_learner!r}, "
            f"device={self.device}{unmoved})"
        )

    # -- evaluation -----------------------------------------------------------------------------
    def potential(self, x: Any, *, batch_size: int = CHUNK) -> Any:
        """Kantorovich potential ``f(x)``; returns ``(n,)``."""
        return like_input(evaluate(self.potential_net, self._points(x), batch_size), x)

    def direction(self, x: Any, *, batch_size: int = CHUNK) -> Any:
        """Compute the unit transport direction ``grad f(x) / |grad f(x)|`` (cells move along ``-u``); ``(n, d)``."""
        return like_input(direction(self.potential_net, self._points(x), batch_size), x)

    def step_size(self, x: Any, *, batch_size: int = CHUNK) -> Any:
        """Distance ``eta(x) >= 0`` each cell travels; returns ``(n,)``."""
        return like_input(evaluate(self.step_size_net, self._points(x), batch_size), x)

    def transport(self, x: Any, *, batch_size: int = CHUNK) -> Any:
        """Transported points ``T(x) = x - eta(x) u(x)``; returns ``(n, d)``."""
        return like_input(transport_points(self.potential_net, self.step_size_net, self._points(x), batch_size), x)

    def w1(self, source: Any, target: Any) -> float:
        """Dual estimate ``mean f(source) - mean f(target)``, a lower bound on ``W1``."""
        return dual_value(self.potential_net, self._points(source, "source"), self._points(target, "target"))

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def from_state(
        cls, tensors: dict[str, torch.Tensor], header: dict[str, Any], *, source: str = "model"
    ) -> TransportMap:
        """Rebuild a map from :meth:`state_tensors` and :meth:`header` output."""
        check_format(header, FORMAT, FORMAT_VERSION, source=source)
        try:
            config = W1Config.from_dict(header["config"])
            potential = build_potential(int(header["dim"]), config)
            step_size = StepSize(int(header["dim"]), config.step_hidden)
            weights = tensors_under(tensors, "potential.")
            weights.setdefault("input_mask", torch.ones(int(header["dim"])))  # files from before the mask
            potential.load_state_dict(weights)
            step_size.load_state_dict(tensors_under(tensors, "step_size."))
            info, history = read_history(header)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{source} does not match its own description ({exc}); save the model again.") from exc
        return cls(potential, step_size, config, info, history=history)
