"""``ConditionalMap``: a fitted conditional W1 map, ``T(x, c) = x - eta(x, c) u(x, c)``, and its file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...checks import like_input
from ...errors import ModelFileError
from ...files.model_files import check_format, tensors_under
from ..config import ConditionalConfig
from ..fitted import PotentialStepMap, transport_points
from ..potential import CHUNK, direction, dual_value, evaluate
from ..training import History, read_history
from .encoder import Condition, ConditionEncoder
from .networks import ConditionalPotential, ConditionalStepSize, ConditionBoundModule

FORMAT = "cellw1.ConditionalMap"
FORMAT_VERSION = 1


def _members(condition: Condition) -> tuple[int, ...]:
    """Sort a condition's label positions: a combination in any order, as the encoder pools it."""
    return tuple(sorted(int(k) for k in condition.labels))


class ConditionalMap(PotentialStepMap):
    """A fitted conditional W1 map: one potential and one step size for every condition.

    Every method takes cells ``x: (n, d)`` (numpy or torch, returned in kind) and one
    :class:`~cellw1.ot.conditional.encoder.Condition`.
    """

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION
    potential_net: ConditionalPotential
    step_size_net: ConditionalStepSize

    def __init__(
        self,
        encoder: ConditionEncoder,
        potential: ConditionalPotential,
        step_size: ConditionalStepSize,
        config: ConditionalConfig,
        info: dict[str, Any] | None = None,
        *,
        history: History | None = None,
        unresponsive: Sequence[Condition] = (),
    ) -> None:
        self.encoder = encoder.requires_grad_(False).eval()
        #: training conditions without a detected response (:mod:`cellw1.ot.effect`): their step size is 0
        self.unresponsive = [Condition(_members(c), None, c.dose) for c in unresponsive]
        super().__init__(potential, step_size, config, info, history)

    @property
    def device(self) -> torch.device:
        """Where the networks are."""
        return self.encoder.scale.device

    def networks(self) -> dict[str, torch.nn.Module]:
        """Name the encoder, the potential and the step size by the prefix of their tensors in the file."""
        return {"encoder": self.encoder, **super().networks()}

    def __repr__(self) -> str:
        """Size, encoder and parametrisation."""
        return (
            f"ConditionalMap(dim={self.dim}, labels={self.encoder.n_labels}, encoding={self.encoder.encoding!r}, "
            f"dose={self.encoder.has_dose}, parametrisation={self.config.parametrisation!r})"
        )

    def moves(self, condition: Condition) -> bool:
        """Say whether the map moves the cells of ``condition``.

        False for a training condition without a detected response: the map leaves its cells
        where they are.
        """
        return condition.vectors is not None or (_members(condition), condition.dose) not in self._still()

    def _still(self) -> set[tuple[tuple[int, ...], float | None]]:
        """``(labels, dose)`` of the unresponsive conditions, as a set kept while the list is the same.

        A screen asks once per condition, with thousands of unresponsive ones: a set, not a scan.
        """
        key = (id(self.unresponsive), len(self.unresponsive))
        cached = getattr(self, "_still_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, {(c.labels, c.dose) for c in self.unresponsive})
            self._still_cache = cached
        return cached[1]

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def code(self, condition: Condition) -> torch.Tensor:
        """Encode ``condition``: its code ``e(c): (k,)``."""
        return self.encoder.encode([condition])[0]

    def potential(self, x: Any, condition: Condition, *, batch_size: int = CHUNK) -> Any:
        """``f(x, c)``; returns ``(n,)``."""
        return like_input(
            evaluate(ConditionBoundModule(self.potential_net, self.code(condition)), self._points(x), batch_size), x
        )

    def direction(self, x: Any, condition: Condition, *, batch_size: int = CHUNK) -> Any:
        """Compute the unit direction ``grad_x f / |grad_x f|`` (cells move along its negative); ``(n, d)``."""
        at = ConditionBoundModule(self.potential_net, self.code(condition))
        return like_input(direction(at, self._points(x), batch_size), x)

    def step_size(self, x: Any, condition: Condition, *, batch_size: int = CHUNK) -> Any:
        """Distance ``eta(x, c) >= 0`` each cell travels; ``(n,)``."""
        if not self.moves(condition):
            return like_input(torch.zeros(len(self._points(x)), device=self.device), x)
        return like_input(
            evaluate(ConditionBoundModule(self.step_size_net, self.code(condition)), self._points(x), batch_size), x
        )

    def transport(self, x: Any, condition: Condition, *, batch_size: int = CHUNK) -> Any:
        """``T(x, c) = x - eta(x, c) u(x, c)``; returns ``(n, d)``."""
        if not self.moves(condition):
            return like_input(self._points(x).clone(), x)
        code = self.code(condition)
        potential, step = ConditionBoundModule(self.potential_net, code), ConditionBoundModule(self.step_size_net, code)
        return like_input(transport_points(potential, step, self._points(x), batch_size), x)

    def w1(self, source: Any, target: Any, condition: Condition) -> float:
        """Dual estimate ``mean f(source, c) - mean f(target, c)``, a lower bound on ``W1``."""
        at = ConditionBoundModule(self.potential_net, self.code(condition))
        return dual_value(at, self._points(source, "source"), self._points(target, "target"))

    # -- files ----------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """Describe the model file: the fitted map's header, the encoder's shape, the unresponsive conditions."""
        encoder = self.encoder
        return {
            **super().header(),
            "encoder": {
                "n_labels": encoder.n_labels,
                "dim": encoder.dim,
                "encoding": encoder.encoding,
                "pooling": encoder.pooling,
                "dose": encoder.has_dose,
                "vector_dim": encoder.vector_dim,
            },
            # the file's key for the unresponsive conditions (format 1)
            "still": [{"labels": list(c.labels), "dose": c.dose} for c in self.unresponsive],
        }

    @classmethod
    def from_state(
        cls, tensors: dict[str, torch.Tensor], header: dict[str, Any], *, source: str = "model"
    ) -> ConditionalMap:
        """Rebuild a map from the tensors and header of its file (:meth:`state_tensors`, :meth:`header`)."""
        check_format(header, FORMAT, FORMAT_VERSION, source=source)
        try:
            config = ConditionalConfig.from_dict(header["config"])
            spec = header["encoder"]
            encoder = ConditionEncoder(
                int(spec["n_labels"]),
                int(spec["dim"]),
                encoding=spec["encoding"],
                dose=bool(spec["dose"]),
                pooling=spec["pooling"],
                vector_dim=int(spec["vector_dim"]) or None,
            )
            potential = ConditionalPotential(int(header["dim"]), encoder.dim, config)
            step = ConditionalStepSize(int(header["dim"]), encoder.dim, config.step_hidden)
            for prefix, net in (("encoder.", encoder), ("potential.", potential), ("step_size.", step)):
                net.load_state_dict(tensors_under(tensors, prefix))
            info, history = read_history(header)
            unresponsive = [Condition(tuple(c["labels"]), None, c["dose"]) for c in header.get("still", [])]
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{source} does not match its own description ({exc}); save the model again.") from exc
        return cls(encoder, potential, step, config, info, history=history, unresponsive=unresponsive)
