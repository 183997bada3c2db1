"""What every prediction method shares once fitted: control cells in, predicted cells out, saved as tensors + JSON."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..ot.training import History


class FittedMethod:
    """A fitted prediction method: control cells ``(n, k)`` in, predicted cells ``(n, k)`` out."""

    name = "base"

    def __init__(self, info: dict[str, Any] | None = None) -> None:
        self.info: dict[str, Any] = dict(info or {})

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted perturbed cells for control cells ``x: (n, k)``."""
        raise NotImplementedError

    def response(self, x: np.ndarray) -> np.ndarray:
        """How far the method moves each cell, ``|predict(x) - x|``; ``(n,)``."""
        return np.linalg.norm(self.predict(x) - x, axis=1).astype(np.float32)

    @property
    def has_response(self) -> bool:
        """Whether the method moves cells.

        False when it predicts its input: no response was detected for the perturbation
        (:mod:`cellw1.ot.effect`, ``info["gated"]``), or the method is identity.
        """
        return not self.info.get("gated", False)

    @property
    def response_share(self) -> float:
        """Share of the fitted displacement that :meth:`predict` applies.

        1, or for a W1 map fitted with ``shrink_response`` the share of the training response
        above sampling noise (:mod:`cellw1.ot.effect`).
        """
        return 1.0

    @property
    def history(self) -> History:
        """Training history of the fit (:mod:`cellw1.ot.training`); empty for untrained methods."""
        return {}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Weights to store (safetensors)."""
        return {}

    def header(self) -> dict[str, Any]:
        """JSON description; ``header()["name"]`` selects the class when loading."""
        return {"name": self.name, "info": self.info}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> FittedMethod:
        """Rebuild the method from :meth:`state_tensors` and :meth:`header`."""
        return cls(header.get("info"))


def partway(x: np.ndarray, moved: np.ndarray, share: float) -> np.ndarray:
    """``x + share (moved - x)``: each cell ``share`` of the way to where the map moves it."""
    if share >= 1.0:
        return moved
    return (x + np.float32(share) * (moved - x)).astype(np.float32)
