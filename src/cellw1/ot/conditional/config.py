"""``ConditionalConfig``: the settings of the conditional W1 model, on top of :class:`~cellw1.ot.config.W1Config`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ...errors import ConfigError
from ..config import W1Config

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
    share of its response above sampling noise; measured in ``docs/benchmarks.md``, reasons in
    ``docs/method.md``).

    Attributes
    ----------
    parametrisation
        ``"concat"`` or ``"bias"`` (see :mod:`cellw1.ot.conditional.networks`).
    condition_dim
        Size ``k`` of the condition code ``e(c)``.
    condition_sampling
        ``"balanced"`` (default): each training step draws every condition equally often;
        ``"proportional"``: in proportion to their cells (the comparison of both is in
        ``docs/benchmarks.md``).
    pooling
        ``"mean"`` or ``"sum"`` of the label codes of a combination.
    conditions_per_step
        Conditions of one energy-refinement step (its ``batch_size`` cells are shared among them).
    """

    potential_iters: int = 2_000
    batch_size: int = 512
    step_size_learner: Literal["ot_energy", "minibatch_ot"] = "ot_energy"
    parametrisation: Parametrisation = "concat"
    condition_dim: int = 16
    condition_sampling: Sampling = "balanced"
    pooling: Literal["mean", "sum"] = "mean"
    conditions_per_step: int = 8
    shrink_response: bool = True

    def validate(self) -> None:
        """Raise :class:`~cellw1.errors.ConfigError` naming the first invalid field."""
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
        """Make the conditional config with the fields of a plain ``W1Config`` (and ``changes``)."""
        base = {f.name: getattr(config, f.name) for f in dataclasses.fields(W1Config)}
        return cls(**{**base, **changes})
