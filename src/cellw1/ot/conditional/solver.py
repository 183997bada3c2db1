"""``fit_conditional_map``: control cells and the cells of many conditions in, one :class:`ConditionalMap` out.

The single map's solver with one condition per target group: the same loops, samplers and
selector (:func:`~cellw1.ot.potential.ascend_dual`, :func:`~cellw1.ot.stepsize.regress`,
:func:`~cellw1.ot.energy.refine_energy`, :class:`~cellw1.ot.energy.StepSizeSelector`), fed
by the conditional samplers at the end of this module.

Phase 1 maximises ``sum_c pi_c (E_control f(x, c) - E_c f(y, c))`` over the conditional
potential and the condition encoder together: each step draws ``batch_size`` target cells
across conditions (condition ``c`` with probability ``pi_c``, in proportion to its cells or
balanced) and as many control cells, each paired with its target cell's condition.

Phase 2 is the default step-size learner of :mod:`cellw1.ot.stepsize` per condition, with
shared networks: exact minibatch-OT pairings of control cells with each condition's cells
give step targets (projected on ``u(x, c)``), ``eta(x, c)`` is regressed on them, then refined
on the energy distance between transported control cells and each condition's cells
(:class:`~cellw1.ot.energy.EnergyPool` per condition). The state kept is the one whose
transported validation cells match best, averaged over conditions with the weights ``pi``.

Where the minibatches come from: :class:`ConditionGroups` holds the training and validation
cells of the control group and of every condition (in memory, or streamed from disk as
:class:`~cellw1.ot.sampling.Cells`). Two samplers read it, one for each phase, behind the
interfaces the single map's samplers share:

* :class:`ConditionalBatches` (a :class:`~cellw1.ot.potential.DualSampler`, phase 1) draws
  target cells across conditions, condition ``c`` with probability ``pi_c``, and pairs each
  with a control cell and its condition;
* :class:`ConditionPools` (an :class:`~cellw1.ot.energy.EnergyBatches`, the energy
  refinement of phase 2) keeps a pool of control and target cells per condition and draws a
  few conditions a step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ...checks import as_points, check_pair, check_seed, resolve_device
from ...errors import ConfigError, InputError
from ..config import ConditionalConfig
from ..effect import EffectTest, effect_test
from ..energy import POOL_CELLS, EnergyPool, StepSizeSelector, ValidationMatch, refine_energy
from ..potential import DualBatch, ascend_dual, direction, mask_constant_features
from ..sampling import Cells, MemoryCells, checked_cells
from ..stepsize import ot_step_targets, regress
from ..training import combine, fit_threads
from .encoder import Condition, ConditionEncoder
from .fitted_map import ConditionalMap
from .networks import ConditionalPotential, ConditionalStepSize, ConditionBoundModule

logger = logging.getLogger(__name__)

#: validation control cells (at most) scored with each condition: the phase-1 dual and the step size's selector
SELECT_CELLS = 500
#: the selector scores a condition on ``SELECT_PER_TARGET`` validation controls per validation cell of it,
#: at least ``SELECT_MIN`` and at most ``SELECT_CELLS``: its cost per condition follows the condition's cells
SELECT_PER_TARGET, SELECT_MIN = 4, 100
#: pairings (control cell, condition) the step size's input standardisation is fitted on, at most
STANDARDIZE_ROWS = 1 << 16
#: energy pools kept built at once (more conditions: the least recently drawn are rebuilt when drawn again)
MAX_POOLS = 64
#: control cells in the fitted space (float32 bytes) read into memory once for the per-condition effect tests
CONTROL_SAMPLE_BYTES = 1 << 29
#: phase-1 steps between two buffers of cells streamed from disk
REFRESH_STEPS = 250


def fit_conditional_map(
    source: Any,
    targets: Sequence[Any],
    conditions: Sequence[Condition],
    config: ConditionalConfig | None = None,
    seed: int = 0,
    *,
    n_labels: int | None = None,
    label_vectors: Any = None,
    progress: bool = False,
) -> ConditionalMap:
    """Fit one W1 map from ``source`` cells to the cells of every condition.

    Parameters
    ----------
    source
        Control cells ``(n, d)`` (numpy or torch; never modified), or
        :class:`~cellw1.ot.sampling.Cells` (streamed from disk, for example).
    targets
        One ``(n_c, d)`` array (or :class:`~cellw1.ot.sampling.Cells`) of cells per condition.
    conditions
        The :class:`~cellw1.ot.conditional.encoder.Condition` of each entry of ``targets``
        (label positions in the table; doses for all or for none).
    config
        :class:`~cellw1.ot.config.ConditionalConfig` (defaults when ``None``).
    seed
        Seed of every random choice: the same seed gives identical results on the CPU.
    n_labels
        Size of the label table (default: the largest label position + 1).
    label_vectors
        ``(n_labels, p)`` user-supplied vectors per label: the ``"vector"`` encoding; ``None``
        learns a free code per label.
    progress
        Show progress bars.
    """
    config = config or ConditionalConfig()
    if not isinstance(config, ConditionalConfig):
        raise ConfigError(f"config must be a ConditionalConfig, got {type(config).__name__}.")
    seed = check_seed(seed)
    device = resolve_device(config.device)
    x, ys, n_labels, vectors = _checked_inputs(source, targets, conditions, n_labels, label_vectors, device)
    effects = _effect_tests(x, ys, config.effect_alpha, seed)
    unresponsive = _unresponsive(conditions, effects, config.effect_alpha)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    groups = ConditionGroups(x, ys, config, generator)
    with torch.random.fork_rng(devices=[]), fit_threads(config.cpu_threads, device):
        torch.manual_seed(seed)
        encoder = _encoder(n_labels, vectors, conditions, groups, config, device)
        _all_codes(encoder, conditions)  # checks every condition against the encoder first
        start = time.perf_counter()
        potential, phase1 = _fit_potential(encoder, groups, conditions, config, generator, progress)
        mid = time.perf_counter()
        codes = _all_codes(encoder, conditions)
        step, phase2 = _fit_step_size(potential, codes, groups, config, generator, rng, progress)
        end = time.perf_counter()
    history = combine(potential=phase1.pop("history"), step_size=phase2.pop("history"))
    info = {
        "seed": seed,
        "n_source": x.n_cells,
        "n_targets": [y.n_cells for y in ys],
        "n_conditions": len(ys),
        "streamed": groups.streaming,
        **phase1,
        **phase2,
        "potential_seconds": mid - start,
        "step_size_seconds": end - mid,
        "effects": [None if effect is None else effect.to_dict() for effect in effects],
    }
    logger.info("fitted a conditional W1 map for %d conditions in %.2f s", len(ys), end - start)
    return ConditionalMap(encoder, potential, step, config, info, history=history, unresponsive=unresponsive)


def _checked_inputs(
    source: Any,
    targets: Sequence[Any],
    conditions: Sequence[Condition],
    n_labels: int | None,
    label_vectors: Any,
    device: torch.device,
) -> tuple[Cells, list[Cells], int, torch.Tensor | None]:
    """Check the cells of every group, the size of the label table and the label vectors."""
    if len(targets) != len(conditions) or not targets:
        raise InputError(f"give one condition per target group ({len(targets)} groups, {len(conditions)} conditions).")
    x = checked_cells(source, "source", device)
    ys = [checked_cells(y, f"target {i}", device) for i, y in enumerate(targets)]
    for y in ys:
        check_pair(x.dim, y.dim)
    has_dose = [c.dose is not None for c in conditions]
    if any(has_dose) and not all(has_dose):
        raise InputError("either every condition has a dose or none has.")
    table = max(max(c.labels, default=-1) for c in conditions) + 1
    n_labels = table if n_labels is None else int(n_labels)
    if n_labels < table:
        raise InputError(f"n_labels={n_labels} but a condition uses label position {table - 1}.")
    vectors = None if label_vectors is None else as_points(label_vectors, "label_vectors", min_points=1)
    if vectors is not None and len(vectors) != n_labels:
        raise InputError(f"label_vectors has {len(vectors)} rows; it needs one per label ({n_labels}).")
    return x, ys, n_labels, vectors


def _effect_tests(x: Cells, ys: list[Cells], alpha: float | None, seed: int) -> list[EffectTest | None]:
    """Each condition's :func:`~cellw1.ot.effect.effect_test` against the controls (``None`` without ``alpha``).

    Controls read from disk are read once, in order (``CONTROL_SAMPLE_BYTES`` at most in the
    fitted space), not a scattered sample per condition; the samples drawn from them are the same.
    """
    if alpha is None:
        return [None] * len(ys)
    if not isinstance(x, MemoryCells) and x.n_cells * x.dim * 4 <= CONTROL_SAMPLE_BYTES:
        block = 8_192
        x = MemoryCells(
            torch.cat([x.read(np.arange(s, min(s + block, x.n_cells))) for s in range(0, x.n_cells, block)])
        )
    return [effect_test(x, y, seed=seed + i) for i, y in enumerate(ys)]


def _unresponsive(
    conditions: Sequence[Condition], effects: Sequence[EffectTest | None], alpha: float | None
) -> list[Condition]:
    """List the conditions whose cells the test for a response cannot tell from the controls (logged)."""
    unresponsive = [
        c for c, effect in zip(conditions, effects, strict=True) if effect is not None and not effect.detected(alpha)
    ]
    if unresponsive:
        logger.warning(
            "no response detected for %d of %d conditions (energy-distance permutation test, p > effect_alpha = %g): "
            "the map leaves their cells where they are; set effect_alpha=None to move them anyway.",
            len(unresponsive),
            len(conditions),
            alpha,
        )
    return unresponsive


def _encoder(
    n_labels: int,
    vectors: torch.Tensor | None,
    conditions: Sequence[Condition],
    groups: ConditionGroups,
    config: ConditionalConfig,
    device: torch.device,
) -> ConditionEncoder:
    """Build the condition encoder, its output on the scale of the control cells' spread."""
    has_dose = all(c.dose is not None for c in conditions)
    encoder = ConditionEncoder(
        n_labels,
        config.condition_dim,
        encoding="learned" if vectors is None else "vector",
        label_vectors=vectors,
        dose=has_dose,
        pooling=config.pooling,
    ).to(device)
    encoder.scale.fill_(float(groups.source.var(0).mean().sqrt().clamp_min(1e-6)))
    if has_dose:
        largest = max(float(c.dose) for c in conditions)  # type: ignore[arg-type]
        encoder.dose_scale.fill_(max(float(np.log1p(max(largest, 0.0))), 1e-6))
    return encoder


def _all_codes(encoder: ConditionEncoder, conditions: Sequence[Condition], chunk: int = 4_096) -> torch.Tensor:
    """The code of every condition ``(conditions, k)``, without a graph, ``chunk`` conditions at a time.

    The encoder's membership matrix is ``(conditions, labels)``: made for a chunk at a time, never
    for a whole screen (10,000 x 10,000 floats would be 400 MB).
    """
    with torch.no_grad():
        parts = []
        for start in range(0, len(conditions), chunk):
            members, dose, _, _ = encoder.tensors(conditions[start : start + chunk])
            parts.append(encoder(members, dose))
    return torch.cat(parts)


# -- phase 1 ------------------------------------------------------------------------------------------
def _fit_potential(
    encoder: ConditionEncoder,
    groups: ConditionGroups,
    conditions: Sequence[Condition],
    config: ConditionalConfig,
    generator: torch.Generator,
    progress: bool,
) -> tuple[ConditionalPotential, dict[str, Any]]:
    """Phase 1: the conditional potential and the condition encoder, trained together."""
    potential = ConditionalPotential(groups.source.shape[1], encoder.dim, config).to(groups.source.device)
    if config.mask_constant_features:
        assert groups.pooled_targets is not None
        mask_constant_features(potential.input_mask, groups.source, groups.pooled_targets)

    def bind(batch: DualBatch) -> ConditionBoundModule:
        # the codes of the step's conditions only: a step's cost does not grow with the conditions
        used, inverse = torch.unique(batch.conditions, return_inverse=True)
        members, dose, _, _ = encoder.tensors([conditions[c] for c in used.tolist()])
        code = encoder(members, dose)[inverse]
        return ConditionBoundModule(potential, torch.cat((code, code)))

    def validation_dual() -> float:
        """``sum_c pi_c (mean f(x, c) - mean f(y_c, c))`` on the validation cells."""
        codes = _all_codes(encoder, conditions)
        return _validation_dual(potential, codes, groups.val_source[:SELECT_CELLS], groups.val_targets, groups.pi)

    sampler = ConditionalBatches(groups, config.batch_size, generator)
    training = ascend_dual(
        [potential, encoder], bind, sampler, validation_dual, config, progress=progress, desc="conditional potential"
    )
    return potential, {
        "potential_steps": int(training.history["stopped_at"][0]),
        "potential_best_step": training.best_step,
        "potential_val_dual": training.best_score,
        "history": training.history,
    }


def _validation_dual(
    potential: ConditionalPotential,
    codes: torch.Tensor,
    x: torch.Tensor,
    ys: Sequence[torch.Tensor],
    pi: torch.Tensor,
    rows: int = 1 << 15,
) -> float:
    """``sum_c pi_c (mean f(x, c) - mean f(y_c, c))``, several conditions per pass of the network.

    The validation controls ``x`` and each condition's cells ``y_c`` go through the potential
    in passes of about ``rows`` cells, not two small passes per condition.
    """
    total, c, n = 0.0, 0, len(codes)
    weights = pi.tolist()
    while c < n:
        stop, size = c, 0
        while stop < n and (stop == c or size + len(x) + len(ys[stop]) <= rows):
            size += len(x) + len(ys[stop])
            stop += 1
        cells = torch.cat([t for k in range(c, stop) for t in (x, ys[k])])
        sizes = [m for k in range(c, stop) for m in (len(x), len(ys[k]))]
        owners = np.repeat(np.arange(c, stop), 2)
        code = torch.cat([codes[k].expand(m, -1) for k, m in zip(owners, sizes, strict=True)])
        with torch.no_grad():
            values = torch.split(potential(cells, code), sizes)
        for k in range(c, stop):
            f_x, f_y = values[2 * (k - c)], values[2 * (k - c) + 1]
            total += weights[k] * float(f_x.mean() - f_y.mean())
        c = stop
    return total


# -- phase 2 ------------------------------------------------------------------------------------------
def _fit_step_size(
    potential: ConditionalPotential,
    codes: torch.Tensor,
    groups: ConditionGroups,
    config: ConditionalConfig,
    generator: torch.Generator,
    rng: np.random.Generator,
    progress: bool,
) -> tuple[ConditionalStepSize, dict[str, Any]]:
    """Phase 2: the minibatch-OT regression of ``eta(x, c)``, then the energy refinement.

    The step targets come from the current buffer of each group (every training cell in
    memory); the energy refinement moves on to the next buffers with each new pool.
    """
    device = groups.source.device
    rows_all, c_all, eta_all = _step_targets(potential, codes, groups, config, generator, rng)
    counts = torch.bincount(c_all, minlength=len(codes)).float()
    weights = (groups.pi.to(device)[c_all] / counts[c_all]).cpu()
    step = ConditionalStepSize(groups.source.shape[1], codes.shape[1], config.step_hidden).to(device)
    # the inputs' centre and scale from at most STANDARDIZE_ROWS evenly spread pairings (every one when fewer)
    spread = torch.linspace(0, len(rows_all) - 1, min(len(rows_all), STANDARDIZE_ROWS)).round().long()
    spread = spread if len(spread) < len(rows_all) else torch.arange(len(rows_all))
    step.net.inputs.fit(torch.cat((groups.source[rows_all[spread]], codes[c_all[spread]]), 1))
    step.net.scale_to(eta_all)
    selector = StepSizeSelector(step, _validation_matches(step, potential, codes, groups), config)
    batches = _regression_batches(groups.source, rows_all, c_all, eta_all, codes, weights, config.batch_size, generator)
    total = regress(step.net, batches, selector, config, progress=progress, desc="conditional step size (regression)")
    if config.step_size_learner == "ot_energy":
        selector.resume()
        pools = ConditionPools(step, potential, codes, groups, config, generator)
        desc = "conditional step size (energy)"
        total += refine_energy(step, pools, selector, config, offset=total, progress=progress, desc=desc)
    history = selector.finish(total)
    step.requires_grad_(False)
    return step, {
        "step_size_steps": total,
        "step_size_best_step": selector.best_step,
        "step_size_val_energy": selector.best_score,
        "history": history,
    }


def _step_targets(
    potential: ConditionalPotential,
    codes: torch.Tensor,
    groups: ConditionGroups,
    config: ConditionalConfig,
    generator: torch.Generator,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows of control cells in groups.source, their condition, step target)`` of every pairing.

    Per condition, as many control cells as it has cells (at least one pairing batch) are
    paired with its cells by exact minibatch OT (:func:`~cellw1.ot.stepsize.ot_step_targets`).
    The control cells are kept as rows of the current buffer, not copies.
    """
    device = groups.source.device
    picked, cs, etas = [], [], []
    for c in range(len(codes)):
        size = min(len(groups.source), max(int(groups.counts[c]), config.ot_batch_size))
        rows = torch.randperm(len(groups.source), generator=generator)[:size].to(device)
        x = groups.source[rows]
        u = direction(ConditionBoundModule(potential, codes[c]), x)
        etas.append(
            ot_step_targets(
                x,
                u,
                groups.targets[c],
                exponent=config.ot_exponent,
                batch_size=config.ot_batch_size,
                passes=config.ot_passes,
                rng=rng,
            )
        )
        picked.append(rows)
        cs.append(torch.full((size,), c, dtype=torch.long, device=device))
    return torch.cat(picked), torch.cat(cs), torch.cat(etas)


def _validation_matches(
    step: ConditionalStepSize, potential: ConditionalPotential, codes: torch.Tensor, groups: ConditionGroups
) -> list[ValidationMatch]:
    """Collect the held-out cells of every condition, weighted by ``pi``, for the step size's selector.

    A condition is scored on ``SELECT_PER_TARGET`` validation controls per validation cell of
    its own (``SELECT_MIN`` to ``SELECT_CELLS``), so its cost and memory follow its cells.
    """
    matches = []
    for c, weight in enumerate(groups.pi.tolist()):
        y = groups.val_targets[c][:SELECT_CELLS]
        x = groups.val_source[: min(SELECT_CELLS, max(SELECT_MIN, SELECT_PER_TARGET * len(y)))]
        u = direction(ConditionBoundModule(potential, codes[c]), x)
        matches.append(ValidationMatch(ConditionBoundModule(step, codes[c]), x, u, y, weight))
    return matches


def _regression_batches(
    source: torch.Tensor,
    rows_all: torch.Tensor,
    c_all: torch.Tensor,
    eta_all: torch.Tensor,
    codes: torch.Tensor,
    weights: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless minibatches ``([x, e(c)], eta targets)``: each condition drawn with weight ``pi_c``."""
    while True:
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=generator).to(source.device)
        yield torch.cat((source[rows_all[idx]], codes[c_all[idx]]), 1), eta_all[idx]


# -- the solver's data: the cells of every group and their minibatches --------------------------------
class ConditionGroups:
    """Training and validation cells of the control group and of every condition.

    The training cells are :class:`~cellw1.ot.sampling.Cells`: all in memory, or buffers
    streamed from disk (:meth:`refresh` moves to the next buffers). The validation cells are
    tensors held out once.

    Attributes
    ----------
    source, targets
        The current buffers: control cells ``(n, d)``, and the cells of each condition.
    pooled_targets
        ``targets`` concatenated, with ``offsets`` and ``counts`` of each condition in it.
    val_source, val_targets
        Validation cells of the control group and of each condition.
    pi
        Probability of each condition in a training step (``config.condition_sampling``).
    streaming
        Whether any group is streamed from disk.
    """

    def __init__(
        self, source: Cells, targets: list[Cells], config: ConditionalConfig, generator: torch.Generator
    ) -> None:
        self.source_cells, val = source.split(config.val_fraction, generator)
        self.val_source = val if len(val) else self.source_cells.buffer()
        self.target_cells: list[Cells] = []
        self.val_targets: list[torch.Tensor] = []
        for y in targets:
            train, val = y.split(config.val_fraction, generator)
            self.target_cells.append(train)
            self.val_targets.append(val if len(val) else train.buffer())
        sizes = torch.tensor([float(y.n_cells) for y in targets], dtype=torch.float64)
        weights = sizes if config.condition_sampling == "proportional" else torch.ones_like(sizes)
        self.pi = (weights / weights.sum()).float()
        self.streaming = not (self.source_cells.holds_all and all(y.holds_all for y in self.target_cells))
        self._take(self.source_cells.buffer(), [y.buffer() for y in self.target_cells])

    def _take(self, source: torch.Tensor, targets: list[torch.Tensor]) -> None:
        self.source, self.targets = source, targets
        self.counts = torch.tensor([len(y) for y in targets], dtype=torch.long)
        self.offsets = torch.cat((torch.zeros(1, dtype=torch.long), self.counts.cumsum(0)[:-1]))
        self.pooled_targets: torch.Tensor | None = torch.cat(targets)

    def refresh(self) -> None:
        """Move every group streamed from disk on to its next buffer (nothing in memory)."""
        if self.streaming:
            self.pooled_targets = None  # let the old buffers go first
            self._take(self.source_cells.next_buffer(), [y.next_buffer() for y in self.target_cells])

    def draw(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(conditions, control rows, rows in pooled_targets)`` of one step, ``size`` of each."""
        c = torch.multinomial(self.pi, size, replacement=True, generator=generator)
        within = (torch.rand(size, generator=generator) * self.counts[c]).long()
        return c, torch.randint(len(self.source), (size,), generator=generator), self.offsets[c] + within


class ConditionalBatches:
    """:class:`~cellw1.ot.potential.DualSampler` of the conditional map.

    Each step draws ``batch_size`` target cells across conditions (condition ``c`` with
    probability ``pi_c``) and as many control cells, each paired with its target cell's
    condition; streamed groups move on to their next buffers every ``REFRESH_STEPS`` steps.
    """

    def __init__(self, groups: ConditionGroups, batch_size: int, generator: torch.Generator) -> None:
        self.groups, self.batch_size, self.generator = groups, batch_size, generator
        self.drawn = 0

    def draw(self) -> DualBatch:
        """Draw the next minibatch: control cells, target cells and the condition of each pair."""
        groups = self.groups
        if self.drawn > 0 and self.drawn % REFRESH_STEPS == 0:
            groups.refresh()
        self.drawn += 1
        c, i, j = groups.draw(self.batch_size, self.generator)
        device = groups.source.device
        assert groups.pooled_targets is not None
        return DualBatch(groups.source[i.to(device)], groups.pooled_targets[j.to(device)], c.to(device))


class ConditionPools:
    """:class:`~cellw1.ot.energy.EnergyBatches` of the conditional map: a pool per condition.

    A minibatch takes ``k = min(conditions, conditions_per_step)`` conditions (without
    replacement, with probabilities ``pi``) and ``batch_size / k`` control cells (at least
    16) moved towards each; the loss is the mean of their energy losses.
    """

    def __init__(
        self,
        step_size: ConditionalStepSize,
        potential: ConditionalPotential,
        codes: torch.Tensor,
        groups: ConditionGroups,
        config: ConditionalConfig,
        generator: torch.Generator,
    ) -> None:
        self.step_size, self.potential, self.codes, self.groups = step_size, potential, codes, groups
        self.generator = generator
        self.conditions_per_batch = min(len(codes), config.conditions_per_step)
        self.cells_per_condition = max(config.batch_size // self.conditions_per_batch, 16)
        self.rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.built: dict[int, EnergyPool] = {}

    def new_pools(self) -> None:
        """Per condition: the rows of its pool's control cells and of its own cells (pools are built when drawn)."""
        groups, generator = self.groups, self.generator
        if self.rows:
            groups.refresh()
        self.built = {}
        self.rows = [
            (
                torch.randperm(len(groups.source), generator=generator)[:POOL_CELLS],
                torch.randperm(len(groups.targets[c]), generator=generator)[:POOL_CELLS],
            )
            for c in range(len(self.codes))
        ]

    def pool(self, c: int) -> EnergyPool:
        """Condition ``c``'s pool: control cells with their directions, and its cells.

        Built on first use in a pool period; at most ``MAX_POOLS`` stay built, so memory does not
        grow with the conditions (a pool is a function of its rows: rebuilt, it is the same).
        """
        if c in self.built:
            return self.built[c]
        rows_x, rows_y = self.rows[c]
        device = self.groups.source.device
        x, y = self.groups.source[rows_x.to(device)], self.groups.targets[c][rows_y.to(device)]
        pool = EnergyPool(x, direction(ConditionBoundModule(self.potential, self.codes[c]), x), y)
        if len(self.built) >= MAX_POOLS:
            del self.built[next(iter(self.built))]
        self.built[c] = pool
        return pool

    def loss(self) -> torch.Tensor:
        """Compute the mean energy loss of a few conditions' minibatches."""
        k, per, generator = self.conditions_per_batch, self.cells_per_condition, self.generator
        chosen = torch.multinomial(self.groups.pi, k, replacement=False, generator=generator).tolist()
        device = self.groups.source.device
        loss = torch.zeros((), device=device)
        for c in chosen:
            pool = self.pool(c)
            i, j = pool.draw(per, generator)
            loss = loss + pool.loss(i, j, self.step_size(pool.x[i], self.codes[c].expand(len(i), -1))) / k
        return loss
