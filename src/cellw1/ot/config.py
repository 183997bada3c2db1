"""The solvers' configurations: one frozen dataclass per solver (W1, W2, conditional W1) with the paper's defaults."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Self

from ..checks import parse_device
from ..errors import ConfigError
from .lipschitz import ORTHONORMALIZATIONS

StepSizeLearner = Literal["ot_energy", "minibatch_ot", "gan", "ot_gan"]
STEP_SIZE_LEARNERS: tuple[str, ...] = ("ot_energy", "minibatch_ot", "gan", "ot_gan")
#: how the conditional networks take the condition code (:mod:`cellw1.ot.conditional.networks`)
Parametrisation = Literal["concat", "bias"]
PARAMETRISATIONS: tuple[str, ...] = ("concat", "bias")
#: how often each condition is drawn in a conditional training step
Sampling = Literal["proportional", "balanced"]


class Config:
    """What every solver configuration shares: a frozen dataclass that copies and round-trips as JSON."""

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (the config itself is frozen)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer file format)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} fields {sorted(unknown)}; the file may come from a newer cellw1."
            )
        return cls(**data)


@dataclass(frozen=True)
class W1Config(Config):
    """Hyper-parameters of the two-phase W1 solver (Chen et al., Methods 4.2).

    Phase 1 learns the 1-Lipschitz Kantorovich potential ``f`` by maximising
    ``E_source f - E_target f`` (eq. 13). Phase 2 learns the non-negative step size
    ``eta(x)`` so that ``T(x) = x - eta(x) grad f(x) / |grad f(x)|`` (eq. 5) lands on the target.

    Attributes
    ----------
    hidden
        Hidden widths of the potential; paper: ``(64, 64, 64, 64)``.
    group_size
        Units per GroupSort group (not the number of groups); paper: 4.
    orthonormalization
        ``"cayley"`` (paper) or ``"bjorck"``.
    bjorck_order, bjorck_iters
        Taylor order and iterations of Björck orthonormalisation.
    potential_iters
        Phase-1 optimisation steps (at most, with early stopping), also the length of the
        cosine learning-rate schedule; paper: 10,000. The default, 500, was the best setting
        for time to quality (``docs/speed.md``): a short schedule anneals the learning rate
        sooner, and the potential's direction field is what phase 2 needs. Potentials with
        fine structure (the 2-D swiss roll) gain from more steps (``docs/benchmarks.md``).
    potential_lr, potential_lr_min, potential_betas
        Adam with cosine annealing from ``potential_lr`` to ``potential_lr_min``;
        paper: 1e-2 -> 1e-4, betas (0.5, 0.5).
    batch_size
        Cells per side in each minibatch; paper: 256.
    step_size_learner
        ``"ot_energy"`` (default: the minibatch-OT regression, then ``energy_iters`` steps
        matching the transported cells to the target cells in energy distance),
        ``"minibatch_ot"`` (the regression alone, on exact minibatch OT pairings under the
        cost ``|x - y|^ot_exponent``), ``"gan"`` (the paper's adversarial learner, eqs.
        15-16) or ``"ot_gan"`` (the regression, then ``refine_iters`` adversarial steps at
        ``refine_lr``). See :mod:`cellw1.ot.stepsize`.
    step_hidden, discriminator_hidden
        Hidden widths of the step-size network and the GAN discriminator; paper: ``(64,)*4``.
    step_iters, step_lr, step_betas
        Adam steps of the ``"gan"`` learner, and the learning rate and betas of every phase-2
        learner but the refinements. The paper's GAN uses 10,000 steps at 1e-4 (Adam's default
        betas); :meth:`paper` sets exactly that.
    regression_iters
        Steps of the minibatch-OT regression (at most, with early stopping) of the
        ``"minibatch_ot"``, ``"ot_gan"`` and ``"ot_energy"`` learners. For ``"ot_energy"`` it is
        a warm start: the energy refinement that follows decides the final steps.
    ot_exponent
        ``p`` of the pairing cost ``|x - y|^p``; as ``p -> 1`` the optimal maps converge to the
        monotone W1 map (Caffarelli, Feldman & McCann 2002). Must be > 1.
    ot_batch_size
        Cells per side of each exact pairing (larger: less minibatch bias, more seconds).
    ot_passes
        Passes over the training source cells, each pairing every cell once; the regression
        target of a cell is the mean of its projected displacements over the passes.
    refine_iters, refine_lr
        Adversarial refinement steps and learning rate of the ``"ot_gan"`` learner.
    energy_iters, energy_lr
        Energy-distance refinement steps (at most, with early stopping) and learning rate of
        the ``"ot_energy"`` learner.
    mask_constant_features
        Features that take one value in all training cells (both groups) are left out of the
        potential, so no cell moves along them.
    effect_alpha
        Level of the test for a response (:mod:`cellw1.ot.effect`, an energy-distance
        permutation test of the two groups before fitting): when the perturbed cells cannot be
        told from the controls at this level, the map leaves cells where they are (its step
        size is 0). The test also measures the share of the response above sampling noise
        (``map.info["effect"]["resolved"]``). ``None`` moves cells whatever the test says.
    shrink_response
        Predictions move each cell only the measured share of the way (``resolved`` above,
        positive-part James-Stein): less noise for weak responses, a few percent less response
        for strong ones (``docs/method.md``). Off by default.
    val_fraction
        Share of each side held out to select the best potential and step size.
    eval_every
        Steps between two validation evaluations.
    patience
        Early stopping: a phase stops after ``patience`` validation evaluations without a
        relative improvement of ``min_delta`` (the validation dual for the potential, the
        validation energy distance for the step size). ``None`` runs the full schedule.
    min_delta
        Relative improvement that counts for early stopping.
    device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``... or ``"auto"`` (CUDA when present).
    cpu_threads
        Torch intra-op threads while fitting on the CPU (restored afterwards); ``None`` keeps
        torch's setting. The networks are small, so one thread is faster than two
        (``docs/speed.md``). Use processes for parallelism (``fit_all(scheduler=...)``).
    """

    hidden: tuple[int, ...] = (64, 64, 64, 64)
    group_size: int = 4
    orthonormalization: Literal["cayley", "bjorck"] = "cayley"
    bjorck_order: int = 1
    bjorck_iters: int = 20
    potential_iters: int = 500
    potential_lr: float = 1e-2
    potential_lr_min: float = 1e-4
    potential_betas: tuple[float, float] = (0.5, 0.5)
    batch_size: int = 256
    step_size_learner: StepSizeLearner = "ot_energy"
    step_hidden: tuple[int, ...] = (64, 64, 64, 64)
    discriminator_hidden: tuple[int, ...] = (64, 64, 64, 64)
    step_iters: int = 1_000
    regression_iters: int = 300
    step_lr: float = 1e-3
    step_betas: tuple[float, float] = (0.9, 0.999)
    ot_exponent: float = 1.1
    ot_batch_size: int = 512
    ot_passes: int = 2
    refine_iters: int = 2_000
    refine_lr: float = 1e-4
    energy_iters: int = 500
    energy_lr: float = 3e-4
    mask_constant_features: bool = True
    effect_alpha: float | None = 0.05
    shrink_response: bool = False
    val_fraction: float = 0.1
    eval_every: int = 100
    patience: int | None = 5
    min_delta: float = 1e-3
    device: str = "cpu"
    cpu_threads: int | None = 1

    def __post_init__(self) -> None:
        self.validate()
        for name in ("hidden", "step_hidden", "discriminator_hidden"):
            object.__setattr__(self, name, tuple(int(h) for h in getattr(self, name)))
        for name in ("potential_betas", "step_betas"):
            object.__setattr__(self, name, tuple(float(b) for b in getattr(self, name)))
        for field in dataclasses.fields(self):  # numpy scalars -> Python numbers (JSON-able)
            value = getattr(self, field.name)
            if _is_int(value):
                object.__setattr__(self, field.name, int(value))
            elif _is_number(value) and field.type.startswith("float"):
                object.__setattr__(self, field.name, float(value))

    def validate(self) -> None:
        """Raise :class:`~cellw1.errors.ConfigError` naming the first invalid field.

        Every field is checked against its annotation first (an integer where a count is
        meant, a finite number where a float is, no bools), then against its range.
        """
        check_fields(self)
        if self.orthonormalization not in ORTHONORMALIZATIONS:
            raise ConfigError(
                f"unknown orthonormalization {self.orthonormalization!r}; use one of {ORTHONORMALIZATIONS}."
            )
        if self.step_size_learner not in STEP_SIZE_LEARNERS:
            raise ConfigError(f"unknown step_size_learner {self.step_size_learner!r}; use one of {STEP_SIZE_LEARNERS}.")
        if self.group_size < 2:
            raise ConfigError(f"group_size={self.group_size!r} must be an integer >= 2 (1 is the identity).")
        for width in self.hidden:
            if width < 1 or width % self.group_size:
                raise ConfigError(
                    f"group_size {self.group_size} does not divide hidden width {width}; "
                    f"use widths that are multiples of {self.group_size}."
                )
        for name in ("step_hidden", "discriminator_hidden"):
            if any(width < 1 for width in getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r}: every width must be >= 1.")
        for name in (
            "potential_iters",
            "step_iters",
            "regression_iters",
            "batch_size",
            "ot_batch_size",
            "ot_passes",
            "eval_every",
            "refine_iters",
            "energy_iters",
            "bjorck_order",
            "bjorck_iters",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1.")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction={self.val_fraction!r} must lie in [0, 0.5).")
        if self.effect_alpha is not None and not 0.0 < self.effect_alpha < 1.0:
            raise ConfigError(f"effect_alpha={self.effect_alpha!r} must lie in (0, 1), or None to skip the test.")
        if not isinstance(self.shrink_response, bool):
            raise ConfigError(f"shrink_response={self.shrink_response!r} must be True or False.")
        if self.ot_exponent <= 1.0:
            raise ConfigError(
                f"ot_exponent={self.ot_exponent!r} must be > 1 (a strictly convex cost); 1.1 is the default."
            )
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience={self.patience!r} must be >= 1, or None to run the full schedule.")
        check_threads(self.cpu_threads)
        if self.min_delta < 0:
            raise ConfigError(f"min_delta={self.min_delta!r} must be >= 0.")
        if min(self.potential_lr, self.step_lr, self.refine_lr, self.energy_lr) <= 0 or self.potential_lr_min < 0:
            raise ConfigError("learning rates must be positive.")
        for name in ("potential_betas", "step_betas"):
            if not all(0.0 <= b < 1.0 for b in getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r}: Adam's betas must lie in [0, 1).")
        parse_device(self.device)

    @classmethod
    def paper(cls, **changes: Any) -> W1Config:
        """The paper's full schedule, for faithful reproduction (Methods 4.2).

        Potential: 10,000 Adam steps, lr 1e-2 -> 1e-4 (cosine), betas (0.5, 0.5), batch 256.
        Step size: the adversarial learner, 10,000 Adam steps at lr 1e-4. No early stopping, and
        no test for a response (every map moves cells, as in the paper).
        """
        base: dict[str, Any] = dict(
            potential_iters=10_000,
            step_size_learner="gan",
            step_iters=10_000,
            step_lr=1e-4,
            step_betas=(0.9, 0.999),
            patience=None,
            effect_alpha=None,
        )
        base.update(changes)
        return cls(**base)


def _is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite real number (an integer or a float), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_threads(cpu_threads: int | None) -> None:
    """``cpu_threads`` of a config: an integer >= 1, or ``None`` to keep torch's setting."""
    if cpu_threads is not None and cpu_threads < 1:
        raise ConfigError(f"cpu_threads={cpu_threads!r} must be >= 1, or None to keep torch's setting.")


def check_fields(config: Any) -> None:
    """Check every field of the dataclass ``config`` against its annotation (see :func:`_check_type`)."""
    for field in dataclasses.fields(config):
        _check_type(field.name, str(field.type), getattr(config, field.name))


def _check_type(name: str, annotation: str, value: Any) -> None:
    """Check ``value`` against a field's annotation (as written); other annotations are checked by range."""
    optional = annotation.endswith(" | None")
    kind = annotation.removesuffix(" | None")
    if optional and value is None:
        return
    if kind == "int":
        ok, expected = _is_int(value), "an integer"
    elif kind == "float":
        ok, expected = _is_number(value), "a finite number"
    elif kind == "str":
        ok, expected = isinstance(value, str), "a string"
    elif kind == "bool":
        ok, expected = isinstance(value, bool), "True or False"
    elif kind == "tuple[int, ...]":
        ok, expected = isinstance(value, tuple | list) and all(_is_int(v) for v in value), "a tuple of integers"
    elif kind == "tuple[float, float]":
        ok = isinstance(value, tuple | list) and len(value) == 2 and all(_is_number(v) for v in value)
        expected = "a pair of finite numbers"
    else:
        return
    if not ok:
        raise ConfigError(f"{name}={value!r} must be {expected}{' or None' if optional else ''}.")


@dataclass(frozen=True)
class W2Config(Config):
    """Hyper-parameters of the OT-ICNN solver (Makkuva et al. 2020).

    As used by CellOT and by the W1 paper's baseline (Methods "Hyperparameters and training details").

    Attributes
    ----------
    hidden
        Hidden widths of both ICNNs; paper: ``(64, 64, 64, 64)``.
    negative_slope
        Slope of the LeakyReLU activations for negative inputs; paper/CellOT: 0.2.
    n_iters
        Outer steps (one ``f`` update each); default 600, a benchmark-length schedule (its time,
        and the length each W2 number used, are in ``docs/benchmarks.md``). The paper's 100,000
        are far longer (times in ``docs/method.md``): :meth:`paper`.
    n_inner
        ``g`` updates per outer step; paper: 10.
    lr, betas
        Adam learning rate and betas of both networks; paper: 1e-4, ``(0.5, 0.9)``.
    batch_size
        Cells per side in each minibatch; paper/CellOT: 256.
    penalty
        Weight of the soft penalty ``sum relu(-W)^2`` on the negative z-path weights of ``g``
        (CellOT's ``fnorm_penalty``: 1). ``f`` is clamped instead.
    val_fraction
        Share of each side held out to select the best state.
    eval_every
        Outer steps between two validation evaluations (energy distance between transported
        validation source cells and validation target cells). The initial state is
        evaluated too.
    device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``... or ``"auto"``.
    standardize
        Fit in isotropically standardised coordinates (deviation 2 of the W2 section of docs/method.md;
        the Brenier map is unchanged by it). ``False``: the paper's raw coordinates.
    quadratic
        Add the skip term ``0.5 * a * |x|^2`` (``a >= 0``, initially 1) to both networks so
        training starts from the identity map (deviation 1). ``False``: the paper's ICNN.
    quadratic_lr_scale
        Learning rate of ``a`` relative to ``lr`` (deviation 1: 10, so ``a`` learns at 1e-3).
    cpu_threads
        Torch intra-op threads while fitting on the CPU (restored afterwards); ``None`` keeps
        torch's setting. One, as for :class:`W1Config`: the networks are as small.
    """

    hidden: tuple[int, ...] = (64, 64, 64, 64)
    negative_slope: float = 0.2
    n_iters: int = 600
    n_inner: int = 10
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    batch_size: int = 256
    penalty: float = 1.0
    val_fraction: float = 0.1
    eval_every: int = 250
    device: str = "cpu"
    standardize: bool = True
    quadratic: bool = True
    quadratic_lr_scale: float = 10.0
    cpu_threads: int | None = 1

    def __post_init__(self) -> None:
        check_fields(self)  # before the conversions below, which would hide a 64.5 or a bool
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~cellw1.errors.ConfigError` naming the first invalid field."""
        check_fields(self)
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(
                f"hidden={self.hidden!r} must be a non-empty list of positive widths, e.g. (64, 64, 64, 64)."
            )
        for name in ("n_iters", "n_inner", "batch_size", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 1.")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r} must be positive; the paper uses 1e-4.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas={self.betas!r} must be two numbers in [0, 1); the paper uses (0.5, 0.9).")
        if not 0.0 <= self.negative_slope < 1.0:
            raise ConfigError(
                f"negative_slope={self.negative_slope!r} must lie in [0, 1) for a convex, non-decreasing activation."
            )
        if self.penalty < 0:
            raise ConfigError(f"penalty={self.penalty!r} must be >= 0.")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction={self.val_fraction!r} must lie in [0, 0.5).")
        if not self.quadratic_lr_scale > 0:
            raise ConfigError(f"quadratic_lr_scale={self.quadratic_lr_scale!r} must be positive (default 10).")
        for name in ("standardize", "quadratic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be True or False.")
        check_threads(self.cpu_threads)

    @classmethod
    def paper(cls, **changes: Any) -> W2Config:
        """The paper's full schedule: 100,000 outer steps, validated every 1,000 (default: 600 and 250).

        Far longer than the default (times in ``docs/method.md``, the W2 baseline).
        """
        base: dict[str, Any] = dict(n_iters=100_000, eval_every=1_000)
        base.update(changes)
        return cls(**base)


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
