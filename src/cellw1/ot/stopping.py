"""Early stopping on a validation score: time to quality rather than a fixed schedule."""

from __future__ import annotations

import math
from typing import Literal


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
        """Record ``value``; return whether it is the best so far (keep that state)."""
        signed = self.sign * value
        if signed > self._reference + self.min_delta * abs(self._reference) or math.isinf(self._reference):
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
