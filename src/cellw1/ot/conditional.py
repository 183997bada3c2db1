"""One W1 map for many conditions: ``T(x, c) = x - eta(x, c) grad_x f(x, c) / |grad_x f(x, c)|``.

Why the condition must enter together with the cell: a potential ``f(x) + g(c)`` is no
conditional model. ``g(c)`` cancels in the dual, ``E_mu[f + g(c)] - E_nu_c[f + g(c)] =
E_mu f - E_nu_c f``, and leaves ``grad_x`` unchanged, so every condition would get the same
direction. Here ``f(x, c)`` reads the cell ``x`` and the condition code ``e(c)``
(:mod:`cellw1.ot.condition`) together, in one of two ways, both 1-Lipschitz in ``x`` for every
``c`` (``tests/test_conditional.py`` certifies it on random cells and conditions):

``"concat"``
    the Lipschitz GroupSort network of :mod:`cellw1.ot.lipschitz` on ``[x, e(c)]``: 1-Lipschitz
    jointly, hence in ``x`` alone, whatever ``e(c)`` is.
``"bias"``
    the same network on ``x``, with a condition-dependent bias ``A_l e(c)`` added before every
    GroupSort: adding a constant (in ``x``) to a layer does not change its Lipschitz constant
    in ``x``, and the condition can move every layer's sorting pattern, not only the first.

The step size ``eta(x, c) >= 0`` is :class:`~cellw1.ot.stepsize.StepSize` on ``[x, e(c)]``,
with ``e(c)`` the frozen potential's code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..checks import like_input, resolve_device
from ..errors import ConfigError, ModelFileError
from ..files.model_files import check_format, section
from .condition import Condition, ConditionEncoder
from .config import W1Config
from .fitted import FittedMap
from .lipschitz import GroupSort, LipschitzPotential, OrthonormalLinear
from .potential import CHUNK, build_potential, direction, evaluate
from .stepsize import StepSize
from .training import History, read_history

FORMAT = "cellw1.ConditionalMap"
FORMAT_VERSION = 1

Parametrisation = Literal["concat", "bias"]
PARAMETRISATIONS: tuple[str, ...] = ("concat", "bias")
Sampling = Literal["proportional", "balanced"]


@dataclass(frozen=True)
class ConditionalConfig(W1Config):
    """:class:`~cellw1.ot.config.W1Config` plus the settings of the conditional model.

    The W1 fields keep their meaning (phase 1 and 2 schedules, learner ``"ot_energy"`` or
    ``"minibatch_ot"``); ``batch_size`` is the number of cells per side of a step, drawn
    across conditions. Defaults differ where one model learns many maps: more potential
    steps, larger minibatches, and ``shrink_response`` on (each condition moves cells by the
    share of its response above sampling noise: better MMD and energy medians for this model,
    a few percent less response for strong knock-outs, ``docs/method.md``).

    Attributes
    ----------
    parametrisation
        ``"concat"`` or ``"bias"`` (see :mod:`cellw1.ot.conditional`).
    condition_dim
        Size ``k`` of the condition code ``e(c)``.
    condition_sampling
        ``"balanced"`` (default): each training step draws every condition equally often;
        ``"proportional"``: in proportion to their cells. Balanced had the lower median MMD
        over the 25 Papalexi targets (``docs/benchmarks.md``).
    pooling
        ``"mean"`` or ``"sum"`` of the label codes of a combination.
    conditions_per_step
        Conditions of one energy-refinement step (its ``batch_size`` cells are shared among them).
    """

    potential_iters: int = 2_000
    batch_size: int = 512
    step_size_learner: Literal["ot_energy", "minibatch_ot"] = "ot_energy"  # type: ignore[assignment]
    parametrisation: Parametrisation = "concat"
    condition_dim: int = 16
    condition_sampling: Sampling = "balanced"
    pooling: Literal["mean", "sum"] = "mean"
    conditions_per_step: int = 8
    shrink_response: bool = True

    def validate(self) -> None:
        super().validate()
        if self.step_size_learner not in ("ot_energy", "minibatch_ot"):
            raise ConfigError(
                f"step_size_learner={self.step_size_learner!r}: the conditional model learns its step size with "
                "'ot_energy' (default) or 'minibatch_ot'."
            )
        if self.parametrisation not in PARAMETRISATIONS:
            raise ConfigError(f"unknown parametrisation {self.parametrisation!r}; use one of {PARAMETRISATIONS}.")
        if self.condition_sampling not in ("proportional", "balanced"):
            raise ConfigError(
                f"unknown condition_sampling {self.condition_sampling!r}; use 'proportional' or 'balanced'."
            )
        if self.pooling not in ("mean", "sum"):
            raise ConfigError(f"unknown pooling {self.pooling!r}; use 'mean' or 'sum'.")
        for name in ("condition_dim", "conditions_per_step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1.")

    @classmethod
    def from_w1(cls, config: W1Config, **changes: Any) -> ConditionalConfig:
        """The conditional config with the fields of a plain ``W1Config`` (and ``changes``)."""
        base = {f.name: getattr(config, f.name) for f in dataclasses.fields(W1Config)}
        return cls(**{**base, **changes})


class ConditionalPotential(nn.Module):
    """``f(x, c)``, 1-Lipschitz in ``x: (n, d)`` for every code ``e: (n, k)``; returns ``(n,)``.

    Parameters
    ----------
    dim, condition_dim
        ``d`` and ``k``.
    config
        Widths, group size, orthonormalisation and ``parametrisation``.
    """

    def __init__(self, dim: int, condition_dim: int, config: ConditionalConfig) -> None:
        super().__init__()
        self.dim, self.condition_dim = int(dim), int(condition_dim)
        self.parametrisation = config.parametrisation
        if self.parametrisation == "concat":
            self.net: LipschitzPotential = build_potential(self.dim + self.condition_dim, config)
        else:
            widths = (self.dim, *config.hidden, 1)
            self.layers = nn.ModuleList(
                OrthonormalLinear(
                    a,
                    b,
                    orthonormalization=config.orthonormalization,
                    bjorck_order=config.bjorck_order,
                    bjorck_iters=config.bjorck_iters,
                )
                for a, b in zip(widths[:-1], widths[1:], strict=False)
            )
            self.shifts = nn.ModuleList(nn.Linear(self.condition_dim, h, bias=False) for h in config.hidden)
            self.activation = GroupSort(config.group_size)
        # features constant in training are left out (a 0/1 mask keeps f 1-Lipschitz in x)
        self.register_buffer("input_mask", torch.ones(self.dim))

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        x = x * self.input_mask
        if self.parametrisation == "concat":
            return self.net(torch.cat((x, code), 1))
        for layer, shift in zip(self.layers[:-1], self.shifts, strict=False):
            x = self.activation(layer(x) + shift(code))
        return self.layers[-1](x).squeeze(-1)


class ConditionalStepSize(nn.Module):
    """``eta(x, c) >= 0``: :class:`~cellw1.ot.stepsize.StepSize` on ``[x, e(c)]``."""

    def __init__(self, dim: int, condition_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = StepSize(int(dim) + int(condition_dim), hidden)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat((x, code), 1))


class AtCondition(nn.Module):
    """A conditional network with its condition fixed: ``x -> net(x, e)`` for one code ``e: (k,)``.

    So the functions of :mod:`cellw1.ot.potential` (``evaluate``, ``direction``) apply unchanged.
    """

    def __init__(self, net: nn.Module, code: torch.Tensor) -> None:
        super().__init__()
        self.net, self.code = net, code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.code.expand(len(x), -1))


def _members(condition: Condition) -> tuple[int, ...]:
    """A condition's label positions in one order: a combination in any order, as the encoder pools it."""
    return tuple(sorted(int(k) for k in condition.labels))


class ConditionalMap(FittedMap):
    """A fitted conditional W1 map: one potential and one step size for every condition.

    Every method takes cells ``x: (n, d)`` (numpy or torch, returned in kind) and one
    :class:`~cellw1.ot.condition.Condition`.
    """

    FORMAT = FORMAT
    FORMAT_VERSION = FORMAT_VERSION

    def __init__(
        self,
        encoder: ConditionEncoder,
        potential: ConditionalPotential,
        step_size: ConditionalStepSize,
        config: ConditionalConfig,
        info: dict[str, Any] | None = None,
        *,
        history: History | None = None,
        still: Sequence[Condition] = (),
    ) -> None:
        self.encoder = encoder.requires_grad_(False).eval()
        #: training conditions without a detected response (:mod:`cellw1.ot.effect`): their step size is 0
        self.still = [Condition(_members(c), None, c.dose) for c in still]
        self.potential_net = potential.requires_grad_(False).eval()
        self.step_size_net = step_size.requires_grad_(False).eval()
        super().__init__(config, info, history)

    @property
    def dim(self) -> int:
        return self.potential_net.dim

    @property
    def device(self) -> torch.device:
        return self.encoder.scale.device

    def to(self, device: str | torch.device) -> ConditionalMap:
        dev = resolve_device(device)
        for net in (self.encoder, self.potential_net, self.step_size_net):
            net.to(dev)
        return self

    def __repr__(self) -> str:
        return (
            f"ConditionalMap(dim={self.dim}, labels={self.encoder.n_labels}, encoding={self.encoder.encoding!r}, "
            f"dose={self.encoder.has_dose}, parametrisation={self.config.parametrisation!r})"
        )

    def moves(self, condition: Condition) -> bool:
        """False for a training condition without a detected response: the map leaves its cells where they are."""
        labels = _members(condition)
        return condition.vectors is not None or all((labels, condition.dose) != (c.labels, c.dose) for c in self.still)

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def code(self, condition: Condition) -> torch.Tensor:
        """The condition code ``e(c): (k,)``."""
        return self.encoder.encode([condition])[0]

    def potential(self, x: Any, condition: Condition, *, batch_size: int = CHUNK) -> Any:
        """``f(x, c)``; returns ``(n,)``."""
        return like_input(
            evaluate(AtCondition(self.potential_net, self.code(condition)), self._points(x), batch_size), x
        )

    def direction(self, x: Any, condition: Condition, *, batch_size: int = CHUNK) -> Any:
        """Unit direction ``grad_x f / |grad_x f|`` (cells move along its negative); ``(n, d)``."""
        at = AtCondition(self.potential_net, self.code(condition))
        return like_input(direction(at, self._points(x), batch_size), x)

    def step_size(self, x: Any, condition: Condition, *, batch_size: int = CHUNK) -> Any:
        """Distance ``eta(x, c) >= 0`` each cell travels; ``(n,)``."""
        if not self.moves(condition):
            return like_input(torch.zeros(len(self._points(x)), device=self.device), x)
        return like_input(
            evaluate(AtCondition(self.step_size_net, self.code(condition)), self._points(x), batch_size), x
        )

    def transport(self, x: Any, condition: Condition, *, batch_size: int = CHUNK) -> Any:
        """``T(x, c) = x - eta(x, c) u(x, c)``; returns ``(n, d)``."""
        if not self.moves(condition):
            return like_input(self._points(x).clone(), x)
        code = self.code(condition)
        potential, step = AtCondition(self.potential_net, code), AtCondition(self.step_size_net, code)
        pts = self._points(x)
        out = []
        for i in range(0, len(pts), batch_size):
            chunk = pts[i : i + batch_size]
            out.append(chunk - evaluate(step, chunk, batch_size)[:, None] * direction(potential, chunk, batch_size))
        return like_input(torch.cat(out), x)

    def w1(self, source: Any, target: Any, condition: Condition) -> float:
        """Dual estimate ``mean f(source, c) - mean f(target, c)``, a lower bound on ``W1``."""
        at = AtCondition(self.potential_net, self.code(condition))
        s, t = self._points(source, "source"), self._points(target, "target")
        return float(evaluate(at, s).mean() - evaluate(at, t).mean())

    # -- files ----------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
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
            "still": [{"labels": list(c.labels), "dose": c.dose} for c in self.still],
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors.update({f"potential.{k}": v for k, v in self.potential_net.state_dict().items()})
        tensors.update({f"step_size.{k}": v for k, v in self.step_size_net.state_dict().items()})
        return tensors

    @classmethod
    def from_state(
        cls, tensors: dict[str, torch.Tensor], header: dict[str, Any], *, source: str = "model"
    ) -> ConditionalMap:
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
                net.load_state_dict(section(tensors, prefix))
            info, history = read_history(header)
            still = [Condition(tuple(c["labels"]), None, c["dose"]) for c in header.get("still", [])]
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{source} does not match its own description ({exc}); save the model again.") from exc
        return cls(encoder, potential, step, config, info, history=history, still=still)
