"""``fit_conditional_map``: control cells and the cells of many conditions in, one :class:`ConditionalMap` out.

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
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checks import as_points, check_pair, check_seed, resolve_device
from ..errors import ConfigError, InputError
from .condition import Condition, ConditionEncoder
from .conditional import AtCondition, ConditionalConfig, ConditionalMap, ConditionalPotential, ConditionalStepSize
from .effect import effect_test
from .energy import POOL_CELLS, POOL_STEPS, EnergyPool, energy_distance
from .potential import adam_kernel, constant_features, direction, evaluate
from .sampling import Cells, checked_cells
from .stepsize import ot_step_targets, regression_step
from .training import History, Plateau, combine, cpu_threads

logger = logging.getLogger(__name__)

#: validation cells per condition used to pick the step size's best state
SELECT_CELLS = 500


class _Data:
    """Training and validation cells of the control group and of every condition.

    The training cells are :class:`~cellw1.ot.sampling.Cells`: all in memory, or buffers
    streamed from disk (:meth:`refresh` moves to the next buffers). The validation cells are
    tensors held out once.
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
        #: probability of each condition in a training step
        self.pi = (weights / weights.sum()).float()
        self.streaming = not (self.source_cells.holds_all and all(y.holds_all for y in self.target_cells))
        self._take(self.source_cells.buffer(), [y.buffer() for y in self.target_cells])

    def _take(self, source: torch.Tensor, targets: list[torch.Tensor]) -> None:
        self.source, self.targets = source, targets
        self.counts = torch.tensor([len(y) for y in targets], dtype=torch.long)
        self.offsets = torch.cat((torch.zeros(1, dtype=torch.long), self.counts.cumsum(0)[:-1]))
        self.all_targets = torch.cat(targets)

    def refresh(self) -> None:
        """Move every group streamed from disk on to its next buffer (nothing in memory)."""
        if self.streaming:
            self.all_targets = None  # type: ignore[assignment]  # let the old buffers go first
            self._take(self.source_cells.next_buffer(), [y.next_buffer() for y in self.target_cells])

    def draw(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(conditions, control rows, target rows)`` of one step, ``size`` of each."""
        c = torch.multinomial(self.pi, size, replacement=True, generator=generator)
        within = (torch.rand(size, generator=generator) * self.counts[c]).long()
        return c, torch.randint(len(self.source), (size,), generator=generator), self.offsets[c] + within


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
        The :class:`~cellw1.ot.condition.Condition` of each entry of ``targets`` (label
        positions in the table; doses for all or for none).
    config
        :class:`~cellw1.ot.conditional.ConditionalConfig` (defaults when ``None``).
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
    if len(targets) != len(conditions) or not targets:
        raise InputError(f"give one condition per target group ({len(targets)} groups, {len(conditions)} conditions).")
    device = resolve_device(config.device)
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
    effects = [None if config.effect_alpha is None else effect_test(x, y, seed=seed + i) for i, y in enumerate(ys)]
    still = [
        c
        for c, effect in zip(conditions, effects, strict=True)
        if effect is not None and not effect.detected(config.effect_alpha)
    ]
    if still:
        logger.warning(
            "no response detected for %d of %d conditions (energy-distance permutation test, p > effect_alpha = %g): "
            "the map leaves their cells where they are; set effect_alpha=None to move them anyway.",
            len(still),
            len(ys),
            config.effect_alpha,
        )
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = _Data(x, ys, config, generator)
    with torch.random.fork_rng(devices=[]), cpu_threads(config.cpu_threads if device.type == "cpu" else None):
        torch.manual_seed(seed)
        encoder = ConditionEncoder(
            n_labels,
            config.condition_dim,
            encoding="learned" if vectors is None else "vector",
            label_vectors=vectors,
            dose=all(has_dose),
            pooling=config.pooling,
        ).to(device)
        encoder.scale.fill_(float(data.source.var(0).mean().sqrt().clamp_min(1e-6)))
        if all(has_dose):
            encoder.dose_scale.fill_(max(float(np.log1p(max(max(c.dose for c in conditions), 0.0))), 1e-6))  # type: ignore[type-var]
        members, dose, _, _ = encoder.tensors(conditions)
        start = time.perf_counter()
        potential, phase1 = _fit_potential(encoder, data, members, dose, config, generator, progress)
        mid = time.perf_counter()
        with torch.no_grad():
            codes = encoder(members, dose)
        step, phase2 = _fit_step_size(potential, codes, data, config, generator, rng, progress)
        end = time.perf_counter()
    history = combine(potential=phase1.pop("history"), step_size=phase2.pop("history"))
    info = {
        "seed": seed,
        "n_source": x.n_cells,
        "n_targets": [y.n_cells for y in ys],
        "n_conditions": len(ys),
        "streamed": data.streaming,
        **phase1,
        **phase2,
        "potential_seconds": mid - start,
        "step_size_seconds": end - mid,
        "effects": [None if effect is None else effect.to_dict() for effect in effects],
    }
    logger.info("fitted a conditional W1 map for %d conditions in %.2f s", len(ys), end - start)
    return ConditionalMap(encoder, potential, step, config, info, history=history, still=still)


#: phase-1 steps between two buffers of cells streamed from disk
REFRESH_STEPS = 250


# -- phase 1 ------------------------------------------------------------------------------------------
def _dual(potential: ConditionalPotential, codes: torch.Tensor, data: _Data) -> float:
    """Validation dual ``sum_c pi_c (mean f(x, c) - mean f(y_c, c))``."""
    total = 0.0
    for c, weight in enumerate(data.pi.tolist()):
        at = AtCondition(potential, codes[c])
        total += weight * float(evaluate(at, data.val_source).mean() - evaluate(at, data.val_targets[c]).mean())
    return total


def _fit_potential(
    encoder: ConditionEncoder,
    data: _Data,
    members: torch.Tensor,
    dose: torch.Tensor | None,
    config: ConditionalConfig,
    generator: torch.Generator,
    progress: bool,
) -> tuple[ConditionalPotential, dict[str, Any]]:
    """Phase 1: the conditional potential and the condition encoder, trained together."""
    device = data.source.device
    potential = ConditionalPotential(data.source.shape[1], encoder.dim, config).to(device)
    if config.mask_constant_features:
        constant = constant_features(data.source, data.all_targets)
        potential.input_mask.copy_((~constant).to(potential.input_mask))
    params = [*potential.parameters(), *encoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.potential_lr, betas=config.potential_betas, **adam_kernel(device))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.potential_iters, eta_min=config.potential_lr_min
    )
    plateau = Plateau(config.patience, config.min_delta, "max")
    best = (-float("inf"), 0, copy.deepcopy(potential.state_dict()), copy.deepcopy(encoder.state_dict()))
    history: History = {"step": [], "val_dual": []}
    b = config.batch_size
    step = 0
    bar = tqdm(range(1, config.potential_iters + 1), desc="conditional potential", disable=not progress, leave=False)
    for step in bar:
        if step > 1 and (step - 1) % REFRESH_STEPS == 0:
            data.refresh()
        c, i, j = data.draw(b, generator)
        c = c.to(device)
        optimizer.zero_grad(set_to_none=True)
        code = encoder(members, dose)[c]
        values = potential(
            torch.cat((data.source[i.to(device)], data.all_targets[j.to(device)])), torch.cat((code, code))
        )
        dual = values[:b].mean() - values[b:].mean()
        (-dual).backward()
        optimizer.step()
        schedule.step()
        if step % config.eval_every == 0 or step == config.potential_iters:
            with torch.no_grad():
                val = _dual(potential, encoder(members, dose), data)
            history["step"].append(float(step))
            history["val_dual"].append(val)
            if plateau.update(val):
                best = (val, step, copy.deepcopy(potential.state_dict()), copy.deepcopy(encoder.state_dict()))
            bar.set_postfix(val_dual=f"{val:.4f}")
            if plateau.stop:
                break
    potential.load_state_dict(best[2])
    encoder.load_state_dict(best[3])
    potential.requires_grad_(False)
    encoder.requires_grad_(False)
    history["best_step"] = [float(best[1])]
    return potential, {
        "potential_steps": step,
        "potential_best_step": best[1],
        "potential_val_dual": best[0],
        "history": history,
    }


# -- phase 2 ------------------------------------------------------------------------------------------
class _Selector:
    """Keeps the step-size state whose transported validation cells match best (weighted over conditions)."""

    def __init__(
        self,
        step: ConditionalStepSize,
        potential: ConditionalPotential,
        codes: torch.Tensor,
        data: _Data,
        config: ConditionalConfig,
    ) -> None:
        self.step, self.codes, self.pi = step, codes, data.pi.tolist()
        x = data.val_source[:SELECT_CELLS]
        self.x = x
        self.u = [direction(AtCondition(potential, codes[c]), x) for c in range(len(codes))]
        self.y = [y[:SELECT_CELLS] for y in data.val_targets]
        self.yy = [float(torch.cdist(y, y).mean()) for y in self.y]
        self.plateau = Plateau(config.patience, config.min_delta, "min")
        self.best, self.best_step, self.state = float("inf"), 0, copy.deepcopy(step.state_dict())
        self.history: History = {"step": [], "val_energy": []}

    def __call__(self, step: int) -> None:
        score = 0.0
        for c, weight in enumerate(self.pi):
            eta = evaluate(AtCondition(self.step, self.codes[c]), self.x)
            score += weight * energy_distance(self.x - eta[:, None] * self.u[c], self.y[c], self.yy[c])
        self.history["step"].append(float(step))
        self.history["val_energy"].append(score)
        if self.plateau.update(score):
            self.best, self.best_step, self.state = score, step, copy.deepcopy(self.step.state_dict())

    def resume(self) -> None:
        """Back to the best state; the patience restarts (a refinement starts from it)."""
        self.step.load_state_dict(self.state)
        self.plateau.waited = 0


def _fit_step_size(
    potential: ConditionalPotential,
    codes: torch.Tensor,
    data: _Data,
    config: ConditionalConfig,
    generator: torch.Generator,
    rng: np.random.Generator,
    progress: bool,
) -> tuple[ConditionalStepSize, dict[str, Any]]:
    """Phase 2: the minibatch-OT regression of ``eta(x, c)``, then the energy refinement.

    The step targets come from the current buffer of each group (every training cell in
    memory); the energy refinement moves on to the next buffers with each new pool."""
    device = data.source.device
    m = len(codes)
    # step targets: per condition, as many control cells as it has cells (at least one pairing batch)
    xs, cs, etas = [], [], []
    for c in range(m):
        size = min(len(data.source), max(int(data.counts[c]), config.ot_batch_size))
        rows = torch.randperm(len(data.source), generator=generator)[:size].to(device)
        x = data.source[rows]
        u = direction(AtCondition(potential, codes[c]), x)
        etas.append(
            ot_step_targets(
                x,
                u,
                data.targets[c],
                exponent=config.ot_exponent,
                batch_size=config.ot_batch_size,
                passes=config.ot_passes,
                rng=rng,
            )
        )
        xs.append(x)
        cs.append(torch.full((size,), c, dtype=torch.long, device=device))
    x_all, c_all, eta_all = torch.cat(xs), torch.cat(cs), torch.cat(etas)
    weights = (data.pi.to(device)[c_all] / torch.bincount(c_all, minlength=m).float()[c_all]).cpu()
    step = ConditionalStepSize(data.source.shape[1], codes.shape[1], config.step_hidden).to(device)
    step.net.inputs.fit(torch.cat((x_all, codes[c_all]), 1))
    mean = float(eta_all.mean())
    step.net.eta_scale.fill_(mean if mean > 0 else 1.0)
    step.net.eta_max.fill_(float(eta_all.max()))
    selector = _Selector(step, potential, codes, data, config)
    optimizer = torch.optim.Adam(step.parameters(), lr=config.step_lr, betas=config.step_betas, **adam_kernel(device))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.regression_iters, eta_min=config.step_lr / 100
    )
    done = 0
    for done in tqdm(
        range(1, config.regression_iters + 1),
        desc="conditional step size (regression)",
        disable=not progress,
        leave=False,
    ):
        idx = torch.multinomial(weights, config.batch_size, replacement=True, generator=generator).to(device)
        regression_step(step.net, optimizer, torch.cat((x_all[idx], codes[c_all[idx]]), 1), eta_all[idx])
        schedule.step()
        if done % config.eval_every == 0 or done == config.regression_iters:
            selector(done)
            if selector.plateau.stop:
                break
    total = done
    if config.step_size_learner == "ot_energy":
        selector.resume()
        total += _match_energy(step, potential, codes, data, config, selector, generator, progress, offset=total)
    step.load_state_dict(selector.state)
    step.requires_grad_(False)
    selector.history["best_step"] = [float(selector.best_step)]
    return step, {
        "step_size_steps": total,
        "step_size_best_step": selector.best_step,
        "step_size_val_energy": selector.best,
        "history": selector.history,
    }


def _pools(
    potential: ConditionalPotential, codes: torch.Tensor, data: _Data, generator: torch.Generator
) -> list[EnergyPool]:
    """One :class:`EnergyPool` per condition: control cells with their directions, the condition's cells."""
    pools = []
    for c in range(len(codes)):
        x = data.source[torch.randperm(len(data.source), generator=generator)[:POOL_CELLS].to(data.source.device)]
        y = data.targets[c]
        y = y[torch.randperm(len(y), generator=generator)[:POOL_CELLS].to(y.device)]
        pools.append(EnergyPool(x, direction(AtCondition(potential, codes[c]), x), y))
    return pools


def _match_energy(
    step: ConditionalStepSize,
    potential: ConditionalPotential,
    codes: torch.Tensor,
    data: _Data,
    config: ConditionalConfig,
    selector: _Selector,
    generator: torch.Generator,
    progress: bool,
    *,
    offset: int,
) -> int:
    """Descend the energy distance between ``T(x, c)`` and condition ``c``'s cells, a few conditions a step."""
    device = data.source.device
    optimizer = torch.optim.Adam(step.parameters(), lr=config.energy_lr, betas=config.step_betas, **adam_kernel(device))
    k = min(len(codes), config.conditions_per_step)
    per = max(config.batch_size // k, 16)
    done = 0
    for done in tqdm(
        range(1, config.energy_iters + 1), desc="conditional step size (energy)", disable=not progress, leave=False
    ):
        if (done - 1) % POOL_STEPS == 0:
            if done > 1:
                data.refresh()
            pools = _pools(potential, codes, data, generator)
        chosen = torch.multinomial(data.pi, k, replacement=False, generator=generator).tolist()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=device)
        for c in chosen:
            pool = pools[c]
            i = torch.randperm(len(pool.x), generator=generator)[:per].to(device)
            j = torch.randint(len(pool.y), (min(per, len(pool.y)),), generator=generator).to(device)
            loss = loss + pool.loss(i, j, step(pool.x[i], codes[c].expand(len(i), -1))) / k
        loss.backward()
        optimizer.step()
        if done % config.eval_every == 0 or done == config.energy_iters:
            selector(offset + done)
            if selector.plateau.stop:
                break
    return done
