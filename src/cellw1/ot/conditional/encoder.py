"""The condition encoder ``e(c)``: what a perturbation (and its dose) looks like to the networks.

A *condition* is a bag of labels (one perturbation, or several applied together) and, when
the experiment varies it, a dose. The encoder turns it into a vector ``e(c): (k,)`` that the
conditional potential and step size read beside the cell (:mod:`cellw1.ot.conditional.networks`):

``"learned"``
    one free vector per label (an embedding table, i.e. a one-hot code times a matrix); a
    label never seen in training cannot be encoded.
``"vector"``
    a user-supplied vector per label (gene or drug embeddings), standardised and passed
    through a small MLP, so a label never seen in training is encoded from its vector.

The labels of a bag are encoded one by one and pooled by their mean or sum, so the order of a
combination does not matter and a combination never seen in training (``A+B`` after ``A`` and
``B``) can still be encoded. A dose enters as ``t = log1p(dose) / log1p(max training dose)``
and moves the pooled code ``p`` along a learned direction, ``p + t D p`` (``D`` a free
matrix): the doses of one perturbation lie on a line in code space, so an unseen dose is
encoded between its neighbours (why a line and not an MLP of ``[p, t]``: ``docs/method.md``).
The potential is 1-Lipschitz in the cell for *every* ``e(c)``, so the encoder itself is free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError, InputError
from ..mlp import mlp

ConditionEncoding = Literal["learned", "vector"]
Pooling = Literal["mean", "sum"]
#: hidden width of the encoder's MLP of label vectors
ENCODER_HIDDEN = 64


@dataclass(frozen=True)
class Condition:
    """One condition as the engine sees it.

    Attributes
    ----------
    labels
        Positions of its labels in the encoder's label table (one for a single perturbation,
        several for a combination).
    vectors
        ``(j, p)`` vectors of labels *not* in the table (``"vector"`` encoding only), pooled
        together with ``labels``; ``None`` for none.
    dose
        The dose, or ``None`` for an encoder without doses.
    """

    labels: tuple[int, ...] = ()
    vectors: np.ndarray | None = None
    dose: float | None = None


class ConditionEncoder(nn.Module):
    """``e(c)``: a bag of labels (and a dose) in, a vector of ``dim`` numbers out.

    Parameters
    ----------
    n_labels
        Rows of the label table.
    dim
        Output size ``k``.
    encoding
        ``"learned"`` (a free vector per label) or ``"vector"`` (from ``label_vectors``).
    label_vectors
        ``(n_labels, p)`` user-supplied vectors (``"vector"`` encoding only).
    dose
        Whether conditions carry a dose.
    pooling
        ``"mean"`` or ``"sum"`` over the labels of a bag (order-invariant).
    """

    vectors: torch.Tensor
    vector_loc: torch.Tensor
    vector_scale: torch.Tensor
    dose_scale: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        n_labels: int,
        dim: int,
        *,
        encoding: ConditionEncoding = "learned",
        label_vectors: torch.Tensor | None = None,
        dose: bool = False,
        pooling: Pooling = "mean",
        vector_dim: int | None = None,
    ) -> None:
        super().__init__()
        if encoding not in ("learned", "vector"):
            raise ConfigError(f"unknown condition encoding {encoding!r}; use 'learned' or 'vector'.")
        if pooling not in ("mean", "sum"):
            raise ConfigError(f"unknown pooling {pooling!r}; use 'mean' or 'sum'.")
        self.n_labels, self.dim, self.encoding, self.pooling, self.has_dose = (
            int(n_labels),
            int(dim),
            encoding,
            pooling,
            dose,
        )
        if encoding == "learned":
            self.table = nn.Parameter(torch.randn(self.n_labels, self.dim))
            self.vector_dim = 0
        else:
            if label_vectors is None and vector_dim is None:
                raise ConfigError("the 'vector' encoding needs label_vectors.")
            p = int(label_vectors.shape[1]) if label_vectors is not None else int(vector_dim)  # type: ignore[arg-type]
            self.vector_dim = p
            self.register_buffer("vectors", torch.zeros(self.n_labels, p))
            self.register_buffer("vector_loc", torch.zeros(p))
            self.register_buffer("vector_scale", torch.ones(p))
            if label_vectors is not None:
                v = label_vectors.float()
                self.vectors.copy_(v)
                self.vector_loc.copy_(v.mean(0))
                if len(v) > 1:
                    self.vector_scale.copy_(v.std(0).clamp_min(1e-6))
            self.project = mlp((p, ENCODER_HIDDEN, self.dim))
        self.dose_net = nn.Linear(self.dim, self.dim) if dose else None
        #: ``log1p`` of the largest training dose: doses are read as ``t = log1p(dose) / dose_scale``
        #: and move the code ``p`` to ``p + t D p`` (``D`` is ``dose_net``)
        self.register_buffer("dose_scale", torch.ones(()))
        #: the output is multiplied by this (the data's per-feature spread), so conditions
        #: are as far apart as cells from the start
        self.register_buffer("scale", torch.ones(()))

    # -- pieces ------------------------------------------------------------------------------------
    def label_codes(self, vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Per-label codes ``(n_labels, dim)``, or of the raw ``vectors: (j, p)`` when given."""
        if self.encoding == "learned":
            if vectors is not None:
                raise InputError("this model encodes labels by a learned table; it cannot read label vectors.")
            return self.table
        source = self.vectors if vectors is None else vectors.to(self.vectors)
        return self.project((source - self.vector_loc) / self.vector_scale)

    def dose_feature(self, dose: torch.Tensor) -> torch.Tensor:
        """``t = log1p(dose) / log1p(max training dose)`` for ``dose: (m,)``."""
        return torch.log1p(dose.clamp_min(0.0)) / self.dose_scale

    def forward(
        self,
        members: torch.Tensor,
        dose: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
        extra_members: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode ``m`` conditions; returns ``(m, dim)``.

        Parameters
        ----------
        members
            ``(m, n_labels)`` 0/1: the labels of each condition's bag.
        dose
            ``(m,)`` doses (required when the encoder has doses).
        extra, extra_members
            Raw label vectors ``(j, p)`` outside the table and ``(m, j)`` 0/1 saying which
            condition holds which (``"vector"`` encoding).
        """
        members = members.to(self.scale)
        total = members @ self.label_codes()
        count = members.sum(1)
        if extra is not None and extra_members is not None and extra.shape[0] > 0:
            total = total + extra_members.to(self.scale) @ self.label_codes(extra)
            count = count + extra_members.to(self.scale).sum(1)
        pooled = total / count.clamp_min(1.0)[:, None] if self.pooling == "mean" else total
        if self.dose_net is not None:
            if dose is None:
                raise InputError("this model was fitted with doses; give the dose of each condition.")
            pooled = pooled + self.dose_feature(dose.to(pooled))[:, None] * self.dose_net(pooled)
        return pooled * self.scale

    def encode(self, conditions: Sequence[Condition]) -> torch.Tensor:
        """Encode :class:`Condition` objects; returns ``(len(conditions), dim)``."""
        members, dose, extra, extra_members = self.tensors(conditions)
        return self(members, dose, extra, extra_members)

    def tensors(
        self, conditions: Sequence[Condition]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Check ``conditions`` and make the inputs of :meth:`forward` for them."""
        device = self.scale.device
        members = torch.zeros(len(conditions), self.n_labels, device=device)
        extras: list[np.ndarray] = []
        owner: list[int] = []
        for i, condition in enumerate(conditions):
            for label in condition.labels:
                if not 0 <= int(label) < self.n_labels:
                    raise InputError(f"label position {label} is outside the encoder's table of {self.n_labels}.")
                members[i, int(label)] = 1.0
            if condition.vectors is not None:
                v = np.asarray(condition.vectors, dtype=np.float32)
                v = v[None] if v.ndim == 1 else v
                if self.encoding != "vector" or v.ndim != 2 or v.shape[1] != self.vector_dim:
                    raise InputError(
                        f"a label vector of {v.shape[-1]} numbers cannot be read: the model reads "
                        f"{self.vector_dim if self.encoding == 'vector' else 'no'} vectors."
                    )
                extras.append(v)
                owner.extend([i] * len(v))
            if not condition.labels and condition.vectors is None:
                raise InputError("a condition needs at least one label.")
            if self.has_dose and (condition.dose is None or not math.isfinite(condition.dose)):
                raise InputError("this model was fitted with doses; give a finite dose for every condition.")
        doses = [float(c.dose) for c in conditions if c.dose is not None]  # every one, when has_dose (checked above)
        dose = torch.tensor(doses, device=device) if self.has_dose else None
        if not extras:
            return members, dose, None, None
        extra = torch.from_numpy(np.concatenate(extras)).to(device)
        extra_members = torch.zeros(len(conditions), len(extra), device=device)
        extra_members[torch.tensor(owner), torch.arange(len(extra))] = 1.0
        return members, dose, extra, extra_members
