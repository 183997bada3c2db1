"""Where the solvers' minibatches come from: cells held in memory, or cells streamed by rows.

A solver never indexes a data set itself. It asks a :class:`Cells` for its current *buffer*,
an in-memory ``(b, d)`` tensor of training cells, draws minibatches from it uniformly with
replacement (:func:`minibatches`), and asks for the next buffer when it has drawn about as
many cells as the buffer holds. Every method of :mod:`cellw1.tl.methods` fits from this one
contract.

* :class:`MemoryCells`: the buffer is every training cell, always the same tensor. This is
  what :func:`~cellw1.ot.solver.fit_map` makes of arrays.
* :class:`StreamedCells`: the cells are rows of a matrix read with ``read(rows)`` (a file on
  disk or an AnnData in memory; see :mod:`cellw1.io.source`), normalised and embedded as they
  are read, and memory holds one buffer of ``buffer_cells`` cells, whatever the number of
  cells in the matrix.

Sampling by rows: shuffled blocks and a shuffle buffer
------------------------------------------------------
Disks read contiguous rows fast and scattered rows slowly, so the training rows of a group
(in file order) are cut into *blocks* of ``block_cells`` consecutive rows. Each epoch visits
the blocks in a fresh random order; a buffer is ``buffer_cells / block_cells`` blocks read
one after the other, transformed (normalisation, embedding) and concatenated; minibatches
are drawn uniformly from the buffer. So every training cell is used once per epoch, each
minibatch mixes cells from ``buffer_cells / block_cells`` random places of the file (32 by
default), and a minibatch is uniform over the buffer. What is lost against uniform sampling
over the whole file is only the independence between blocks: cells of one block arrive
together. With rows stored in a meaningful order (sorted by sample or cell type) a buffer
still holds 32 random stretches of the file; use smaller blocks for files sorted at a fine
grain. When the buffer can hold every training cell, :class:`StreamedCells` reads them once
and samples exactly as :class:`MemoryCells` does, so both give the same map for the same seed.

The held-out validation cells of a group are a seeded uniform sample of its rows (at most
5,000 cells), read once and kept in memory.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..checks import as_points, split_validation
from ..errors import InputError

logger = logging.getLogger(__name__)

#: cells of one group held in memory at once when streaming from disk
BUFFER_CELLS = 32_768
#: consecutive rows read at once when streaming
BLOCK_CELLS = 1_024


def minibatch_indices(
    n: int, batch_size: int, n_steps: int, generator: torch.Generator, block: int = 500
) -> Iterator[torch.Tensor]:
    """Yield ``n_steps`` index batches drawn uniformly with replacement from ``range(n)``, made in blocks."""
    size = min(batch_size, n)
    for start in range(0, n_steps, block):
        steps = min(block, n_steps - start)
        yield from torch.randint(n, (steps, size), generator=generator).unbind(0)


class Cells(ABC):
    """The cells of one group, as the solver sees them: a current buffer and a way to the next.

    Attributes
    ----------
    n_cells
        Number of cells of the group (training and validation).
    dim
        Features per cell.
    """

    n_cells: int
    dim: int

    @property
    @abstractmethod
    def holds_all(self) -> bool:
        """The buffer holds every training cell and never changes."""

    @abstractmethod
    def read(self, positions: np.ndarray) -> torch.Tensor:
        """The cells at ``positions`` (indices among the ``n_cells``), in that order, ``(k, dim)``."""

    def blocks(self, size: int = 8_192) -> Iterator[torch.Tensor]:
        """Every cell, in order, ``size`` at a time (so a statistic over all cells needs one block in memory)."""
        for start in range(0, self.n_cells, size):
            yield self.read(np.arange(start, min(start + size, self.n_cells)))

    @abstractmethod
    def split(self, fraction: float, generator: torch.Generator) -> tuple[Cells, torch.Tensor]:
        """``(training cells, validation tensor)``: a seeded share ``fraction`` held out."""

    @abstractmethod
    def buffer(self) -> torch.Tensor:
        """The current buffer, ``(b, dim)`` float32 on the training device."""

    @abstractmethod
    def next_buffer(self) -> torch.Tensor:
        """Move on to the next buffer and return it."""


class MemoryCells(Cells):
    """Cells held in memory: one buffer, all of them.

    Parameters
    ----------
    x
        ``(n, d)`` float tensor, already checked (finite, two-dimensional).
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.n_cells, self.dim = int(x.shape[0]), int(x.shape[1])

    @property
    def holds_all(self) -> bool:
        """True: the one buffer holds every cell."""
        return True

    def read(self, positions: np.ndarray) -> torch.Tensor:
        """The cells at ``positions``, in that order, ``(k, dim)``."""
        return self.x[torch.as_tensor(np.asarray(positions, dtype=np.int64), device=self.x.device)]

    def split(self, fraction: float, generator: torch.Generator) -> tuple[MemoryCells, torch.Tensor]:
        """``(training cells, validation tensor)``: a seeded share ``fraction`` held out."""
        train, val = split_validation(self.n_cells, fraction, generator)
        return MemoryCells(self.x[train.to(self.x.device)]), self.x[val.to(self.x.device)]

    def buffer(self) -> torch.Tensor:
        """All the cells, ``(n, dim)``."""
        return self.x

    def next_buffer(self) -> torch.Tensor:
        """All the cells again: the buffer never changes."""
        return self.x


class StreamedCells(Cells):
    """Cells of one group read by rows from a matrix, one buffer at a time.

    Parameters
    ----------
    matrix
        Anything with ``read(sorted_rows)``: a :class:`cellw1.io.readers.DiskMatrix` or a
        :class:`cellw1.io.source.MemoryMatrix` (the :class:`cellw1.io.source.Matrix` contract).
    rows
        The group's row numbers in the matrix, increasing.
    transform
        Raw rows (dense array or CSR matrix) in, ``(k, dim)`` float32 cells out
        (normalisation and embedding).
    dim
        Width of ``transform``'s output.
    buffer_cells, block_cells
        Cells held in memory at once, and consecutive rows read together (see the module
        docstring).
    seed
        Seed of the block order.
    device
        Where buffers are put.
    """

    def __init__(
        self,
        matrix: Any,
        rows: np.ndarray,
        transform: Callable[[Any], np.ndarray],
        dim: int,
        *,
        buffer_cells: int = BUFFER_CELLS,
        block_cells: int = BLOCK_CELLS,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) > 1 and not (np.diff(rows) > 0).all()):
            raise InputError("rows must be increasing row numbers of the matrix.")
        if int(buffer_cells) < 1 or int(block_cells) < 1:
            raise InputError(f"buffer_cells={buffer_cells} and block_cells={block_cells} must be >= 1.")
        self.matrix, self.rows, self.transform = matrix, rows, transform
        self.n_cells, self.dim = len(rows), int(dim)
        self.buffer_cells = int(buffer_cells)
        self.block_cells = min(int(block_cells), self.buffer_cells)
        self.seed = seed
        self.device = torch.device(device)
        self._order: np.ndarray | None = None  # positions (into rows) of the training cells, in sampling order
        self._current: torch.Tensor | None = None
        self._blocks: Iterator[np.ndarray] | None = None
        self.buffers_read = 0

    # -- reading ---------------------------------------------------------------------------------
    def read(self, positions: np.ndarray) -> torch.Tensor:
        """Transformed cells at ``positions`` (indices into :attr:`rows`), in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return torch.empty((0, self.dim), device=self.device)
        order = np.argsort(positions, kind="stable")
        raw = self.matrix.read(self.rows[positions[order]])
        values = np.asarray(self.transform(raw), dtype=np.float32)
        if not np.isfinite(values).all():
            bad = self.rows[positions[order]][~np.isfinite(values).all(axis=1)]
            raise InputError(
                f"{len(bad)} cells have NaN or inf values (first rows: {bad[:5].tolist()}); "
                "remove or impute those cells first."
            )
        restored = np.empty_like(values)
        restored[order] = values
        return torch.from_numpy(restored).to(self.device)

    # -- Cells -----------------------------------------------------------------------------------
    @property
    def holds_all(self) -> bool:
        """Whether one buffer holds every training cell (then it is read once and kept)."""
        return len(self._positions()) <= self.buffer_cells

    def _positions(self) -> np.ndarray:
        return np.arange(self.n_cells) if self._order is None else self._order

    def split(self, fraction: float, generator: torch.Generator) -> tuple[StreamedCells, torch.Tensor]:
        """``(training cells, validation tensor)``: a seeded share ``fraction`` held out.

        The training cells stream from the same matrix; the validation cells are read once.
        """
        train, val = split_validation(self.n_cells, fraction, generator)
        training = StreamedCells(
            self.matrix,
            self.rows,
            self.transform,
            self.dim,
            buffer_cells=self.buffer_cells,
            block_cells=self.block_cells,
            seed=self.seed,
            device=self.device,
        )
        training._order = train.numpy()
        return training, self.read(val.numpy())

    def buffer(self) -> torch.Tensor:
        """The current buffer, ``(b, dim)``; the first is read on the first call."""
        if self._current is None:
            return self.next_buffer()
        return self._current

    def next_buffer(self) -> torch.Tensor:
        """Read the next buffer and return it.

        The next blocks of training rows in the seeded block order, until ``buffer_cells`` cells;
        when one buffer holds every training cell, it is read once and kept.
        """
        if self.holds_all:
            if self._current is None:
                self._current = self.read(self._positions())
                self.buffers_read += 1
            return self._current
        if self._blocks is None:
            self._blocks = self._block_stream()
        self._current = None  # let the old buffer go before the new one is read
        blocks, count = [], 0
        while count < self.buffer_cells:
            blocks.append(next(self._blocks))
            count += len(blocks[-1])
        buffer = torch.empty((count, self.dim), device=self.device)  # filled in place: no concatenated copy
        start = 0
        for block in blocks:
            buffer[start : start + len(block)] = self.read(block)
            start += len(block)
        self._current = buffer
        self.buffers_read += 1
        return self._current

    def _block_stream(self) -> Iterator[np.ndarray]:
        """Blocks of training positions, increasing within a block, blocks shuffled each epoch."""
        positions = np.sort(self._positions())  # file order
        blocks = [positions[i : i + self.block_cells] for i in range(0, len(positions), self.block_cells)]
        rng = np.random.default_rng([self.seed, len(positions)])
        while True:
            for k in rng.permutation(len(blocks)):
                yield blocks[k]


def as_cells(x: Cells | torch.Tensor) -> Cells:
    """``x`` itself when it is :class:`Cells`, else the tensor ``x`` as :class:`MemoryCells`."""
    return x if isinstance(x, Cells) else MemoryCells(x)


def checked_cells(x: Any, name: str, device: torch.device) -> Cells:
    """``x`` itself when it is :class:`Cells`, else the array ``x`` checked, copied to ``device``."""
    if isinstance(x, Cells):
        return x
    return MemoryCells(as_points(x, name).to(device))


def minibatches(
    cells: Cells,
    batch_size: int,
    n_steps: int,
    generator: torch.Generator,
    *,
    reuse: int = 1,
    prepare: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
    prepared: tuple[torch.Tensor, ...] | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield ``n_steps`` minibatches ``(x, *extras)`` of ``batch_size`` cells from ``cells``.

    Indices are drawn uniformly with replacement from the current buffer; after about
    ``reuse * len(buffer) / batch_size`` steps (``reuse`` passes over it) the next buffer is
    taken. ``prepare(buffer)`` computes per-cell tensors that travel with the cells (the
    directions and step targets of phase 2); ``prepared`` is its result for the current
    buffer when the caller already has it.
    """
    remaining = n_steps
    buffer = cells.buffer()
    extras = prepared if prepared is not None else (prepare(buffer) if prepare else ())
    while remaining > 0:
        steps = remaining if cells.holds_all else min(remaining, max(1, reuse * len(buffer) // batch_size))
        for idx in minibatch_indices(len(buffer), batch_size, steps, generator):
            idx = idx.to(buffer.device)
            yield (buffer[idx], *(e[idx] for e in extras))
        remaining -= steps
        if remaining > 0 and not cells.holds_all:
            del buffer, extras, idx  # the old buffer goes before the next one is read
            buffer = cells.next_buffer()
            extras = prepare(buffer) if prepare else ()
