"""What every training loop of cellw1 shares: the best state, early stopping, history, threads.

Each solver is a plain loop over its own public step (:func:`~cellw1.ot.potential.potential_step`,
:func:`~cellw1.ot.stepsize.regression_step`, :func:`~cellw1.ot.icnn.g_step`,
:func:`~cellw1.pp.autoencoder.autoencoder_step`...). Every ``eval_every`` steps it scores the
networks on held-out cells and hands the score to a :class:`Training`, which records it, keeps
the best state in memory and says when to stop; at the end :meth:`Training.finish` puts the
best state back. :func:`cpu_threads` runs a fit with the configured number of torch threads.

History
-------
:attr:`Training.history` is a plain ``dict`` of lists of numbers, one entry per evaluation:
``"step"`` (the step evaluated), the score under its own name (``"val_dual"``,
``"val_energy"``, ``"val_loss"``) and whatever else the solver records there (a training
loss...). :meth:`Training.finish` adds two one-element lists: ``"best_step"``, the step whose
state is kept (0: the initial state), and ``"stopped_at"``, the last step taken (below the
schedule's length when training stopped early).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

History = dict[str, list[float]]


class Plateau:
    """Track a validation score and tell when it has stopped improving.

    Parameters
    ----------
    patience
        Evaluations without a *significant* improvement before :attr:`stop` turns true;
        ``None`` never stops.
    min_delta
        Relative change that counts as significant: ``value > best (1 + min_delta)`` for
        ``mode="max"`` (on ``|best|``), ``value < best (1 - min_delta)`` for ``"min"``.
    mode
        ``"max"`` (a dual to maximise) or ``"min"`` (a distance to minimise).
    """

    def __init__(self, patience: int | None, min_delta: float, mode: Literal["max", "min"]) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = -math.inf  # best signed score seen
        self._reference = -math.inf  # signed score at the last significant improvement
        self.waited = 0

    def update(self, value: float) -> bool:
        """Record ``value``; return whether it is the best so far (keep that state).

        A NaN is never an improvement.
        """
        signed = self.sign * value
        if signed > self._reference + self.min_delta * abs(self._reference) or (
            math.isinf(self._reference) and not math.isnan(signed)
        ):
            self._reference, self.waited = signed, 0
        else:
            self.waited += 1
        improved = signed > self.best
        self.best = max(self.best, signed)
        return improved

    @property
    def stop(self) -> bool:
        """True once ``patience`` evaluations passed without a significant improvement."""
        return self.patience is not None and self.waited >= self.patience


class Training:
    """Keep the best state of ``modules``, stop early on a plateau, and record the history.

    Parameters
    ----------
    modules
        The networks being trained; their state (``state_dict``) at the best evaluation is
        kept in memory (a deep copy). The state at construction is the fallback.
    score
        Name of the validation score in :attr:`history` (``"val_dual"``, ``"val_energy"``...).
    mode
        ``"max"`` or ``"min"``: which direction of the score is better.
    patience, min_delta
        Early stopping (:class:`Plateau`): stop after ``patience`` evaluations without a
        relative improvement of ``min_delta``; ``patience=None`` runs the whole schedule.
    name
        What is trained, for the log.

    Notes
    -----
    A non-finite score means training diverged: it is recorded, never kept, and
    :attr:`stop` turns true, so the best finite state is returned.
    """

    def __init__(
        self,
        modules: nn.Module | Sequence[nn.Module],
        *,
        score: str,
        mode: Literal["max", "min"],
        patience: int | None = None,
        min_delta: float = 0.0,
        name: str = "training",
    ) -> None:
        self.modules: tuple[nn.Module, ...] = (modules,) if isinstance(modules, nn.Module) else tuple(modules)
        self.score, self.name = score, name
        self.plateau = Plateau(patience, min_delta, mode)
        self.history: History = {"step": [], score: []}
        self.best_step = 0
        self.diverged = False
        self._states = self._copy()

    def _copy(self) -> list[dict[str, torch.Tensor]]:
        return [copy.deepcopy(m.state_dict()) for m in self.modules]

    @property
    def best_score(self) -> float:
        """The best score seen (``-inf`` for ``"max"``, ``inf`` for ``"min"`` before any)."""
        return self.plateau.sign * self.plateau.best

    def consider(self, step: int, score: float) -> bool:
        """Offer the current state as a candidate without recording it in the history.

        An initial state, say; returns whether it is the best so far and was kept.
        """
        if not math.isfinite(score):
            return False
        improved = self.plateau.update(score)
        if improved:
            self.best_step = step
            self._states = self._copy()
        return improved

    def evaluate(self, step: int, score: float, **metrics: float) -> bool:
        """Record ``step``, the validation ``score`` and other ``metrics`` in :attr:`history`.

        ``metrics``: a training loss, say. Keeps the state when the score is the best so far and
        returns whether it is.
        """
        self.history["step"].append(step)
        self.history[self.score].append(score)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
        if not math.isfinite(score):
            self.diverged = True
            logger.warning(
                "%s diverged at step %d (non-finite validation score); keeping step %d.",
                self.name,
                step,
                self.best_step,
            )
            return False
        return self.consider(step, score)

    @property
    def stop(self) -> bool:
        """Whether to stop now: the score has stopped improving, or training diverged."""
        return self.diverged or self.plateau.stop

    def restore(self) -> None:
        """Put the best state back into the modules."""
        for module, state in zip(self.modules, self._states, strict=False):
            module.load_state_dict(state)

    def resume(self) -> None:
        """Restore the best state and restart the patience.

        A new stage of training (a refinement) starts from it, and that state stays a candidate.
        """
        self.restore()
        self.plateau.waited = 0
        self.diverged = False

    def finish(self, step: int) -> History:
        """Restore the best state; add ``"best_step"`` and ``"stopped_at"`` to the history and return it.

        ``"stopped_at"`` is ``step``, the last step taken.
        """
        self.restore()
        self.history["best_step"] = [self.best_step]
        self.history["stopped_at"] = [step]
        return self.history


def read_history(header: dict[str, Any]) -> tuple[dict[str, Any], History]:
    """The fit ``info`` and the training history stored in a saved header.

    Files from before histories were kept have none (empty); W2 maps and autoencoders saved
    before kept theirs in ``info["history"]``, from where it moves. Anything but a dict of
    lists of numbers is a ValueError.
    """
    info = dict(header.get("info") or {})
    history = header["history"] if "history" in header else info.pop("history", None)
    if history is None:
        return info, {}
    if not isinstance(history, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(x, int | float) for x in v)
        for k, v in history.items()
    ):
        raise ValueError("the training history is not a dict of lists of numbers")
    return info, {k: list(v) for k, v in history.items()}


def combine(**histories: History) -> History:
    """One history from several, each key prefixed with the name it is passed under.

    ``combine(potential={"step": [...]})`` is ``{"potential_step": [...]}``.
    """
    return {f"{name}_{key}": list(values) for name, history in histories.items() for key, values in history.items()}


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: unchanged), then restore.

    The thread policy of every fit (``config.cpu_threads``): the networks are small, so one
    thread per fit and processes for parallelism is the default.
    """
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def fit_threads(n: int | None, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """:func:`cpu_threads` for a fit on ``device``: the policy applies on the CPU only."""
    return cpu_threads(n if device.type == "cpu" else None)
