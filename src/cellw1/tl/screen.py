"""``cellw1.screen``: a pooled screen in, one row per perturbation, responders and look-alikes out.

The workflow, on one conditional W1 model (:func:`cellw1.fit_conditional`, fitted once in PCA
space by default):

1. **Calls.** Inside the fit, once the space is fitted, a fixed sample of control cells
   becomes the reference (:class:`~cellw1.ot.screen_test.ControlReference`) and every
   perturbation is tested against it (:func:`~cellw1.ot.screen_test.response_test`), one at a
   time; Benjamini-Hochberg q-values across the screen. A perturbation with ``q > fdr`` is
   predicted as its controls (the model's gate).
2. **Effect sizes.** The fitted potential ``f(., c)`` gives each perturbation's W1 distance to
   the controls through its dual, ``mean f(reference, c) - mean f(cells, c)`` (a lower bound of
   W1, on the training cells), with a normal 95% interval.
3. **Responders.** A perturbed cell's score is its position along its perturbation's mean
   response, in the reference's whitened coordinates (``S^-1/2``, those of the test); a cell
   responded when its score is above the reference's 95th percentile. The responder share
   corrects the 5% of controls that pass: ``max(0, (passed - 0.05) / 0.95)``. (The potential
   ``f(., c)`` of the conditional model was measured first: on the synthetic screen it told
   responders from escapers barely better than chance, ``docs/screens.md``.)
4. **Look-alikes.** Each called perturbation's whitened mean response is clustered by cosine
   distance (average linkage, :class:`sklearn.cluster.AgglomerativeClustering`); the map of
   the figure is the first two principal components of the normalised responses. The top
   genes of a perturbation are those its mean response changes most.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import InputError
from ..files.atomic import atomic_output
from ..io.source import open_source
from ..ot.config import ConditionalConfig, W1Config
from ..ot.sampling import StreamedCells
from ..ot.screen_test import REFERENCE_CELLS, ControlReference, ResponseTest, q_values, response_test
from ..pp.labels import condition_labels, label_text, present_labels
from .conditional.fit import fit_conditional_source
from .conditional.model import ConditionalModel
from .pipeline import spread_sample
from .spec import MIN_CELLS, ConditionalSpec

if TYPE_CHECKING:
    import anndata as ad

logger = logging.getLogger(__name__)

#: share of reference cells above which a perturbed cell is called a responder
RESPONDER_LEVEL = 0.95
#: cosine distance at which the clusters of perturbations are cut
CLUSTER_DISTANCE = 0.5
#: genes listed per perturbation
TOP_GENES = 5


class ScreenResult:
    """What :func:`screen` returns.

    Attributes
    ----------
    table
        One row per perturbation: ``cells``, ``w1`` with ``w1_low``/``w1_high`` (95%),
        ``energy``, ``p_value``, ``q_value``, ``called``, ``responder_share``, ``top_genes``,
        ``cluster`` (``-1``: not called) and ``map_1``/``map_2``.
    cells
        Per perturbed cell (indexed by ``obs_names``): its perturbation, ``response_score``
        and ``responder``.
    responses
        Mean response of each perturbation in the reference's whitened coordinates, rows as
        in ``table``.
    model
        The fitted :class:`~cellw1.tl.conditional.ConditionalModel`.
    reference
        The :class:`~cellw1.ot.screen_test.ControlReference` every perturbation was tested against.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        cells: pd.DataFrame,
        responses: np.ndarray,
        model: ConditionalModel,
        reference: ControlReference,
    ) -> None:
        self.table, self.cells, self.responses, self.model = table, cells, responses, model
        self.reference = reference

    def __repr__(self) -> str:
        """Count the perturbations, the calls and the clusters."""
        called = int(self.table["called"].sum())
        clusters = self.table["cluster"].max() + 1
        return f"ScreenResult({len(self.table)} perturbations, {called} called, {clusters} clusters)"

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``screen.csv``, ``cells.csv`` and the model (``model/``) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, frame in (("screen.csv", self.table), ("cells.csv", self.cells)):
            with atomic_output(directory / name) as tmp:
                frame.to_csv(tmp)
        self.model.save(directory / "model")
        return directory


def screen(
    adata: ad.AnnData | str | os.PathLike,
    condition_key: str,
    control: str,
    perturbations: Sequence[str] | None = None,
    *,
    space: Literal["genes", "pca"] = "pca",
    config: ConditionalConfig | W1Config | None = None,
    fdr: float = 0.05,
    seed: int = 0,
    layer: str | None = None,
    progress: bool = True,
    buffer_cells: int | None = None,
) -> ScreenResult:
    """Which perturbations of a screen respond, how their cells respond, and which act alike.

    Parameters
    ----------
    adata
        Cells x genes (never modified): an AnnData, or a path to an ``.h5ad``/``.zarr``
        (streamed, see :func:`cellw1.fit_conditional`).
    condition_key, control
        Column of ``obs`` with each cell's perturbation, and the control label.
    perturbations
        Perturbations to screen (default: every label with at least 20 cells but the control;
        smaller ones are left out with a warning).
    space, config, seed, layer, buffer_cells
        As for :func:`cellw1.fit_conditional`.
    fdr
        Level of the calls: a perturbation is called when its q-value is at most ``fdr``.
    progress
        Progress bars (with their ETA); ``False`` for none.
    """
    if not 0.0 < float(fdr) < 1.0:
        raise InputError(f"fdr={fdr!r} must be between 0 and 1.")
    start = time.perf_counter()
    with open_source(adata, "cellw1.screen") as source:
        labels = condition_labels(source, condition_key)
        control = label_text(control)
        chosen = _chosen(labels, control, perturbations)
        values = labels.to_numpy()
        tests: list[ResponseTest] = []
        held: dict[str, Any] = {}

        def gate(cells: list[StreamedCells]) -> list[bool]:
            reference = _reference(cells[0], seed)
            held["reference"], held["cells"] = reference, cells
            for y in tqdm(cells[1:], desc="screen: response tests", disable=not progress, leave=False):
                tests.append(response_test(reference, y.read(np.arange(y.n_cells))))
            held["q"] = q_values([t.p_value for t in tests])
            logger.info(
                "screen: %d of %d perturbations called at q <= %g", int((held["q"] <= fdr).sum()), len(tests), fdr
            )
            return list(held["q"] <= fdr)

        spec = ConditionalSpec(
            condition_key=condition_key,
            control=control,
            perturbations=tuple(chosen),
            space=space,
            config=config,  # type: ignore[arg-type]  # a W1Config is converted by the spec
            seed=seed,
            layer=layer,
            progress=progress,
            buffer_cells=buffer_cells,
            warn_missing=False,  # counted once above
        )
        model = fit_conditional_source(source, spec, gate=gate)
        rows = _rows(values, chosen)
        table, cells, responses = _describe(model, chosen, rows, source.obs.index, held, tests, progress)
    table["q_value"] = held["q"]
    table["called"] = held["q"] <= fdr
    _cluster(table, responses)
    model.info["screen_seconds"] = time.perf_counter() - start
    logger.info("screen: %d perturbations in %.1f s", len(chosen), model.info["screen_seconds"])
    return ScreenResult(table, cells, responses, model, held["reference"])


def _rows(values: np.ndarray, chosen: list[str]) -> list[np.ndarray]:
    """Row numbers of each chosen label, increasing: the cells sorted by label once, not a pass per label."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    where = {label: k for k, label in enumerate(uniques)}
    return [order[bounds[where[p]] : bounds[where[p] + 1]] for p in chosen]


def _chosen(labels: pd.Series, control: str, perturbations: Sequence[str] | None) -> list[str]:
    counts = labels.value_counts()
    if control not in counts.index:
        raise InputError(f"control {control!r} is not a label; labels: {present_labels(labels)[:20]}.")
    given = present_labels(labels) if perturbations is None else [label_text(p) for p in perturbations]
    missing = [p for p in given if p not in counts.index]
    if missing:
        raise InputError(f"perturbations {missing[:10]} have no cells; give labels of obs.")
    small = [p for p in given if p != control and counts[p] < MIN_CELLS]
    if small:
        logger.warning(
            "screen: %d perturbations with fewer than %d cells are left out: %s", len(small), MIN_CELLS, small[:10]
        )
    chosen = [p for p in given if p != control and counts[p] >= MIN_CELLS]
    if not chosen:
        raise InputError(f"no perturbation has at least {MIN_CELLS} cells.")
    return chosen


def _reference(control: StreamedCells, seed: int) -> ControlReference:
    """Draw the fixed, seeded sample of control cells every perturbation is compared with."""
    positions = spread_sample(np.arange(control.n_cells), REFERENCE_CELLS, seed)
    return ControlReference(control.read(positions).cpu().numpy())


def _describe(
    model: ConditionalModel,
    chosen: list[str],
    rows: list[np.ndarray],
    obs_names: Any,
    held: dict[str, Any],
    tests: list[ResponseTest],
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Per perturbation, one at a time: W1 dual and interval, responders, mean response, top genes."""
    reference: ControlReference = held["reference"]
    cells: list[StreamedCells] = held["cells"]
    z = reference.energy_cells.numpy()
    genes = np.asarray(model.features)
    records, scores, responses = [], [], []
    for k, label in enumerate(tqdm(chosen, desc="screen: responses", disable=not progress, leave=False)):
        condition, test = model.condition(label), tests[k]
        y = cells[k + 1].read(np.arange(cells[k + 1].n_cells)).cpu().numpy()
        f_ref = np.asarray(model.map.potential(z, condition), dtype=np.float64)
        f_y = np.asarray(model.map.potential(y, condition), dtype=np.float64)
        w1 = float(f_ref.mean() - f_y.mean())
        half = 1.96 * float(np.sqrt(f_ref.var(ddof=1) / len(f_ref) + f_y.var(ddof=1) / len(f_y)))
        # the observed response, whitened by the reference: its direction scores the cells
        response = (y.mean(0) - reference.mean) @ reference.whiten
        unit = response / max(float(np.linalg.norm(response)), 1e-12)
        score = ((y - reference.mean) @ reference.whiten) @ unit
        level = float(np.quantile(((z - reference.mean) @ reference.whiten) @ unit, RESPONDER_LEVEL))
        passed = float((score > level).mean())
        centre = z.mean(0, keepdims=True)
        change = model.embedding.decode(centre + (y.mean(0) - reference.mean)[None]) - model.embedding.decode(centre)
        top = np.argsort(-np.abs(change[0]))[:TOP_GENES]
        responses.append(response)
        scores.append(
            pd.DataFrame(
                {"perturbation": label, "response_score": score, "responder": score > level}, index=obs_names[rows[k]]
            )
        )
        records.append(
            {
                "perturbation": label,
                "cells": test.cells,
                "w1": w1,
                "w1_low": w1 - half,
                "w1_high": w1 + half,
                "energy": test.energy,
                "statistic": test.statistic,
                "p_value": test.p_value,
                "responder_share": max(0.0, (passed - (1 - RESPONDER_LEVEL)) / RESPONDER_LEVEL),
                "top_genes": ",".join(genes[top]),
            }
        )
    table = pd.DataFrame.from_records(records).set_index("perturbation")
    return table, pd.concat(scores), np.stack(responses).astype(np.float32)


def _cluster(table: pd.DataFrame, responses: np.ndarray) -> None:
    """Clusters of the called perturbations by cosine distance of their responses, and their 2-D map."""
    from sklearn.cluster import AgglomerativeClustering

    called = table["called"].to_numpy()
    table["cluster"] = -1
    unit = responses / np.maximum(np.linalg.norm(responses, axis=1, keepdims=True), 1e-12)
    if called.sum() >= 2:
        fit = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=CLUSTER_DISTANCE
        ).fit(unit[called])
        table.loc[called, "cluster"] = fit.labels_
    elif called.sum() == 1:
        table.loc[called, "cluster"] = 0
    centred = unit - unit[called].mean(0) if called.any() else unit
    basis = (
        np.linalg.svd(centred[called], full_matrices=False)[2][:2] if called.sum() >= 2 else np.eye(2, unit.shape[1])
    )
    coords = centred @ basis.T
    table["map_1"] = coords[:, 0]
    table["map_2"] = coords[:, 1] if coords.shape[1] > 1 else 0.0


def nearest(result: ScreenResult, perturbation: str, k: int = 3, *, called_only: bool = True) -> list[str]:
    """Find the ``k`` perturbations whose mean responses are closest (cosine) to ``perturbation``'s.

    Among the called ones, with ``called_only``.
    """
    names = list(result.table.index)
    if perturbation not in names:
        raise InputError(f"{perturbation!r} is not a perturbation of this screen.")
    unit = result.responses / np.maximum(np.linalg.norm(result.responses, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit[names.index(perturbation)]
    allowed = result.table["called"].to_numpy() if called_only else np.ones(len(names), dtype=bool)
    order = [i for i in np.argsort(-similarity) if names[i] != perturbation and allowed[i]]
    return [names[i] for i in order[:k]]


__all__ = ["ScreenResult", "nearest", "screen"]
