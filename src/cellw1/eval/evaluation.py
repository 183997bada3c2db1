"""The evaluation protocol: split, fit every method and baseline, score held-out cells, compare.

For each split index ``r`` (``n_splits``, seeded; Chen et al., Sec. 3.2: "each method is
independently run 5 times with randomly split training and testing sets") and perturbation:

1. **Split.** The control cells and the perturbed cells are each split at random (seeded by
   ``seed``, ``r`` and the perturbation's name) into training and test cells, with

   ``n_test = min(max(round(0.2 * n), 500), 1000, n // 3)``

   test cells for a group of ``n`` cells: a fifth of the group, but at least 500 and at most
   1,000 cells, and never more than a third of the group (so small groups keep two thirds
   of their cells for training). See :func:`n_test_cells`.
2. **Fit.** Every method is fitted on the training cells with :func:`cellw1.fit`, the same
   call a user makes, and its fit time is recorded as the metric ``seconds``. All methods of a
   split share one embedding (PCA or autoencoder, fitted once), as in the paper; ``seconds``
   counts the method's own fit, not preprocessing or the embedding. The baselines that read
   the other perturbations' training cells of split ``r`` (``global_mean``, ``additive``,
   ``nearest``) are plug-ins given the split's context (:mod:`cellw1.eval.baselines`,
   :mod:`cellw1.eval.context`); ``nearest`` is scored once every perturbation of ``r`` is fitted.
3. **Predict.** The test *control* cells go through ``model.predict``.
4. **Score.** The predictions are compared with the test *perturbed* cells
   (:mod:`cellw1.eval.scoring`). In gene space (no ``obsm_key``) both are log-normalised by
   the model's own preprocessing (``model.preprocess``) and the metrics of
   :mod:`cellw1.eval.metrics`, the response distribution and PearsonDelta use the top
   ``n_de_genes`` differentially expressed genes, chosen by
   :func:`cellw1.eval.degenes.top_de_genes` on the **training** cells only; PearsonDelta on
   every gene and the centroid accuracy use every gene. With ``obsm_key`` (low-dimensional
   features such as the 4i data) every feature is used.
5. **Compare.** :meth:`EvaluationResult.comparisons` pairs ``w1`` with each baseline over the
   same perturbations and splits (:mod:`cellw1.eval.confidence`); docs/evaluation.md explains
   every metric and how to read the report.

Out-of-distribution mode, ``holdout=(covariate_key, value)``: the model is trained on every
cell (control and perturbed) whose ``obs[covariate_key]`` differs from ``value`` and tested
on the cells that have it: the held-out control cells are the input, the held-out perturbed
cells the truth. The split is then fixed, so splits differ only in the fit seed.

The code follows three steps: :func:`~cellw1.eval.plan.plan_evaluation` checks every argument
once and returns a frozen :class:`~cellw1.eval.plan.EvaluationPlan`;
:func:`~cellw1.eval.run.run_evaluation` runs its splits with one plug-in per method
(:mod:`cellw1.eval.plugin`, named in :mod:`cellw1.eval.registry`); and
:func:`~cellw1.eval.result.tabulate` makes the :class:`EvaluationResult`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..io.readers import read_in_memory
from ..ot.config import W1Config
from ..pp.preprocessing import Assumption
from ..tl.spec import EFFECT_ALPHA
from .degenes import DeDirection
from .plan import CONDITIONAL, DEFAULT_METHODS, plan_evaluation
from .registry import split_methods
from .result import EvaluationResult, tabulate
from .run import run_evaluation

if TYPE_CHECKING:
    import anndata as ad

    from ..ot.config import ConditionalConfig, W2Config
    from ..pp.embedding import EmbeddingConfig
    from ..tl.scgen import ScGenConfig


# -- evaluation ---------------------------------------------------------------------------------------
def evaluate(
    adata: ad.AnnData | str | os.PathLike,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | None = None,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    space: Literal["genes", "pca", "autoencoder"] = "genes",
    layer: str | None = None,
    obsm_key: str | None = None,
    n_splits: int | None = None,
    n_repeats: int | None = None,
    n_de_genes: int = 50,
    de_direction: DeDirection = "up",
    holdout: tuple[str, str] | None = None,
    config: W1Config | None = None,
    w2_config: W2Config | None = None,
    conditional_config: ConditionalConfig | None = None,
    scgen_config: ScGenConfig | None = None,
    embedding_config: EmbeddingConfig | None = None,
    input_kind: Assumption = "auto",
    effect_alpha: float | None = EFFECT_ALPHA,
    metrics: Sequence[str] | None = None,
    plot_perturbation: str | None = None,
    suite: Literal["cellw1", "cell-eval"] = "cellw1",
    external: Mapping[str, Callable[[ad.AnnData, ad.AnnData, str], Any]] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Benchmark prediction methods on held-out cells with the paper's protocol.

    See the module docstring for the protocol (split rule, DE genes, out-of-distribution mode).

    Parameters
    ----------
    adata
        Cells x genes (counts or log-normalised), never modified; or the path of an ``.h5ad``
        file or ``.zarr`` store, read into memory (an evaluation fits on every split's cells).
    condition_key, control
        Column of ``adata.obs`` with the conditions and the control label.
    perturbations
        Perturbations to evaluate; ``None``: every other label (category order for a
        categorical column, else sorted).
    methods
        Methods of :mod:`cellw1.tl.methods`, fitted with :func:`cellw1.fit`; the baselines that
        read the other perturbations of a split, ``"global_mean"``, ``"additive"`` and
        ``"nearest"`` (:mod:`cellw1.eval.baselines`); and ``"w1_conditional"``: one
        :func:`cellw1.fit_conditional` model of all perturbations per split index; every
        perturbation then shares one control split (:mod:`cellw1.eval.conditional`). The
        default is every baseline, the observed ceiling and ``"w1"``; ``"w2"`` and
        ``"scgen_vae"`` are slow and optional.
    space, layer, obsm_key, embedding_config, input_kind
        Passed to :func:`cellw1.fit` (and :func:`cellw1.fit_conditional`). With ``obsm_key`` the
        features are ``adata.obsm[obsm_key]`` and all of them are scored; otherwise predictions
        are scored in log-normalised gene space on the top ``n_de_genes`` DE genes of the
        training cells.
    n_splits
        Seeded random splits per perturbation (the paper uses 5). ``None``: 5 for data of up to
        100,000 cells, else 1.
    n_repeats
        Deprecated alias of ``n_splits`` (a FutureWarning).
    n_de_genes
        DE genes scored per perturbation (the paper uses 50).
    de_direction
        How they are ranked: ``"up"``, the most up-regulated first (the paper's and CellOT's
        protocol), or ``"either"``, the most changed in either direction (a knock-out's loss of
        expression then counts). The response axis always uses ``"either"``.
    holdout
        ``(covariate_key, value)``: out-of-distribution evaluation on the cells with that value.
    config, w2_config, conditional_config
        :class:`~cellw1.ot.config.W1Config` for ``"w1"``, :class:`~cellw1.ot.config.W2Config` for ``"w2"``
        and :class:`~cellw1.ot.conditional.ConditionalConfig` for ``"w1_conditional"``.
    scgen_config
        :class:`~cellw1.tl.scgen.ScGenConfig` for ``"scgen_vae"`` (the real scGen, optional).
    effect_alpha
        Level of the test for a response, made once per perturbation and split on the training
        cells (:mod:`cellw1.ot.effect`): where it finds none, every method that moves cells
        (``mean_shift``, ``w2``, ``w1``, ``scgen_vae``, ``w1_conditional``) predicts the controls,
        so no method gains from the gate; the metric row ``gated`` says where. ``None``: no
        test, for every method.
    metrics
        Metric names from :data:`cellw1.eval.metrics.METRICS` and
        :data:`cellw1.eval.scoring.SPLIT_METRICS` (docs/evaluation.md); ``None`` computes all.
    plot_perturbation
        Perturbation whose cells (repeat 0) are kept for the embedding figure; default the first.
    suite
        ``"cellw1"``: cellw1's metrics. ``"cell-eval"``: also cell-eval's full profile on each
        split's held-out cells, merged into the table under cell-eval's metric names
        (:mod:`cellw1.eval.celleval`; needs ``pip install "cellw1[eval]"``; gene expression only).
    external
        Other tools' predictions, scored on the same splits as the methods: name ->
        ``predict(train, test_control, perturbation)``, given copies of the split's training cells and
        held-out control cells (AnnData), returning the predicted cells (an AnnData, or an
        array with one row per test control cell and one column per gene) of the same kind as
        ``adata`` (counts for counts, log-normalised for log-normalised). Their ``seconds``
        is the call's wall time.
    seed
        Seed of the splits (with the split index and the perturbation's name); each fit uses
        ``seed + split``.
    progress
        Show a progress bar over perturbations x splits.

    Returns
    -------
    EvaluationResult
    """
    if isinstance(adata, str | os.PathLike):
        adata = read_in_memory(adata)
    plan = plan_evaluation(
        adata,
        condition_key,
        control,
        perturbations,
        methods=methods,
        configs={"w1": config, "w2": w2_config, "scgen_vae": scgen_config, CONDITIONAL: conditional_config},
        n_splits=n_splits,
        n_repeats=n_repeats,
        n_de_genes=n_de_genes,
        de_direction=de_direction,
        holdout=holdout,
        metrics=metrics,
        plot_perturbation=plot_perturbation,
        suite=suite,
        external=external,
        seed=seed,
        effect_alpha=effect_alpha,
        space=space,
        layer=layer,
        obsm_key=obsm_key,
        embedding_config=embedding_config,
        input_kind=input_kind,
    )
    rows, snapshot = run_evaluation(plan, split_methods(plan), progress=progress)
    return tabulate(rows, plan.settings(), snapshot)
