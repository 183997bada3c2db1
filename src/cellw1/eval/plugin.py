"""What a method of :func:`cellw1.evaluate` is: a plug-in that predicts the held-out controls of a split.

Every method, fitted or not, is a :class:`SplitMethod`: given a :class:`SplitRun` (one
perturbation's split ``r``: its cells, its scorer and what the methods before it learnt), it
returns a :class:`Prediction` for the held-out control cells, or ``None`` to skip the split.
The run (:mod:`cellw1.eval.run`) scores every prediction the same way. The registry
(:mod:`cellw1.eval.registry`) names the plug-ins; a method's :attr:`~SplitMethod.stage` says
when it predicts, in the order of :data:`STAGES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from .context import SplitContext, SplitRows
from .scoring import SplitScorer, in_units_of, split_scorer

if TYPE_CHECKING:
    import anndata as ad

    from .plan import EvaluationPlan

Stage = Literal["shared", "own", "external", "context", "neighbours"]
#: when a method predicts a split, in this order:
#: ``shared``: fitted with :func:`cellw1.fit` on the split's training cells, in the split's one
#: embedding (the first such method fits it and sets the units every method is scored in);
#: ``own``: a model with an embedding of its own (``w1_conditional``);
#: ``external``: another tool's prediction; ``context``: a baseline read from the split's
#: context; ``neighbours``: once every perturbation of the split index has run (``nearest``)
STAGES: tuple[Stage, ...] = ("shared", "own", "external", "context", "neighbours")


@dataclass(frozen=True)
class Prediction:
    """A method's prediction for a split's held-out control cells.

    ``values``: ``(n_test_control, n_features)``, every feature, in the units of the split's
    scorer; ``seconds``: the method's own fit time; ``gated``: whether the split's test for a
    response found none (``None``: the method does not follow the test).
    """

    values: np.ndarray
    seconds: float
    gated: bool | None = None


@dataclass
class SplitCells:
    """Copies of a split's cells, so that no method can touch the user's AnnData."""

    train: ad.AnnData
    test_control: ad.AnnData
    test_perturbed: ad.AnnData

    @classmethod
    def of(cls, adata: ad.AnnData, rows: SplitRows) -> SplitCells:
        """Copy the training, held-out control and held-out perturbed cells of ``rows``."""
        # copies: views write through on some anndata versions
        return cls(adata[rows.train].copy(), adata[rows.test_control].copy(), adata[rows.test_perturbed].copy())


@dataclass
class SplitRun:
    """One split (``perturbation``, ``repeat``) while its methods predict it.

    ``cells`` are released once the split's own methods have run (the ``neighbours`` stage
    reads ``context``); ``scorer`` is set by the first fitted method, ``embedding`` is the
    split's shared embedding, ``effect`` the test for a response the first gated fit made (the
    later fits follow it instead of testing again), ``gated`` its outcome (``True`` when any
    fitted method that moves cells found none), ``models`` the fitted models other methods
    borrow (``nearest``), ``predictions`` every prediction made so far (float32, every
    feature) and ``siblings`` the runs of the same split index by perturbation, this one included.
    """

    plan: EvaluationPlan
    context: SplitContext
    cells: SplitCells | None
    embedding: Any = None
    effect: Any = None
    scorer: SplitScorer | None = None
    gated: bool | None = None
    models: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    siblings: dict[str, SplitRun] = field(default_factory=dict, repr=False)

    @property
    def fit_seed(self) -> int:
        """The seed of every fit of the split: the evaluation's seed plus the split index."""
        return self.plan.seed + self.context.repeat

    def held_cells(self) -> SplitCells:
        """Return the split's cells; only while its own methods run."""
        if self.cells is None:
            raise RuntimeError("the split's cells were released once its own methods ran")
        return self.cells

    def units(self) -> SplitScorer:
        """Return the split's scorer; set by its first fitted method."""
        if self.scorer is None:
            raise RuntimeError("no fitted method has set the split's units yet")
        return self.scorer

    def set_units(self, model: Any) -> SplitScorer:
        """Return the split's scorer, made in ``model``'s units if no fitted method has made it yet."""
        if self.scorer is None:
            cells, plan = self.held_cells(), self.plan
            self.scorer = split_scorer(
                self.context,
                model,
                cells.train,
                cells.test_control,
                cells.test_perturbed,
                plan.condition_key,
                plan.control,
                plan.n_de_genes,
                plan.de_direction,
            )
        return self.scorer

    def predicted_by(self, model: Any, seconds: float, gated: bool | None) -> Prediction:
        """Predict the held-out controls with a fitted model, in the split's units (the first model sets them).

        ``gated``: the model's test for a response found none; the split's test is the union
        of its fitted methods' tests.
        """
        scorer = self.set_units(model)
        if gated is not None:
            self.gated = gated if self.gated is None else self.gated or gated
        values = np.asarray(model.predict(self.held_cells().test_control).X, dtype=np.float64)
        return Prediction(in_units_of(values, model, scorer.model), seconds, gated)

    def follow_gate(self, values: np.ndarray) -> Prediction:
        """Predict ``values`` where the split's test found a response, else the split's controls (a baseline)."""
        if self.gated:
            values = self.units().control
        return Prediction(values, 0.0, self.gated)


class SplitMethod:
    """A method of the evaluation: predicts the held-out control cells of one split.

    Subclasses set :attr:`stage` and implement :meth:`predict`; :meth:`start_repeat` is called
    once per split index, before any of its splits (a model of every perturbation fits there).
    """

    stage: ClassVar[Stage] = "shared"

    def __init__(self, name: str, plan: EvaluationPlan) -> None:
        self.name = name
        self.plan = plan

    def start_repeat(self, repeat: int, splits: dict[str, SplitRows]) -> None:
        """Prepare split index ``repeat`` (every perturbation's rows in ``splits``); nothing by default."""

    def predict(self, split: SplitRun) -> Prediction | None:
        """Predict ``split``'s held-out control cells; ``None`` to skip the split."""
        raise NotImplementedError

    def __repr__(self) -> str:
        """Name the plug-in and its method."""
        return f"{type(self).__name__}({self.name!r})"
