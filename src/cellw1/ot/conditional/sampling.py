"""Where the conditional solver's minibatches come from: the control group and every condition's cells.

:class:`ConditionGroups` holds the training and validation cells of each group (in memory,
or streamed from disk as :class:`~cellw1.ot.sampling.Cells`). Two samplers read it, one
for each phase, behind the interfaces the single map's samplers share:

* :class:`ConditionalBatches` (a :class:`~cellw1.ot.potential.DualSampler`, phase 1) draws
  target cells across conditions, condition ``c`` with probability ``pi_c``, and pairs each
  with a control cell and its condition;
* :class:`ConditionPools` (an :class:`~cellw1.ot.energy.EnergyBatches`, the energy
  refinement of phase 2) keeps a pool of control and target cells per condition and draws a
  few conditions a step.
"""

from __future__ import annotations

import torch

from ..energy import POOL_CELLS, EnergyPool, distinct_rows
from ..potential import DualBatch, direction
from ..sampling import Cells
from .config import ConditionalConfig
from .networks import ConditionalPotential, ConditionalStepSize, ConditionBoundModule

#: phase-1 steps between two buffers of cells streamed from disk
REFRESH_STEPS = 250


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
        self.pools: list[EnergyPool] = []

    def new_pools(self) -> None:
        """Per condition: control cells with their directions, and the condition's cells."""
        groups, generator = self.groups, self.generator
        if self.pools:
            groups.refresh()
        self.pools = []
        for c in range(len(self.codes)):
            x = distinct_rows(groups.source, POOL_CELLS, generator)
            y = distinct_rows(groups.targets[c], POOL_CELLS, generator)
            self.pools.append(EnergyPool(x, direction(ConditionBoundModule(self.potential, self.codes[c]), x), y))

    def loss(self) -> torch.Tensor:
        """Compute the mean energy loss of a few conditions' minibatches."""
        k, per, generator = self.conditions_per_batch, self.cells_per_condition, self.generator
        chosen = torch.multinomial(self.groups.pi, k, replacement=False, generator=generator).tolist()
        device = self.groups.source.device
        loss = torch.zeros((), device=device)
        for c in chosen:
            pool = self.pools[c]
            i, j = pool.draw(per, generator)
            loss = loss + pool.loss(i, j, self.step_size(pool.x[i], self.codes[c].expand(len(i), -1))) / k
        return loss
