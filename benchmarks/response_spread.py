"""The spread of cells along their response, stage by stage, for W1 and the mean shift (issue 24).

For each Papalexi target and split (the evaluation's splits, ``cellw1.eval.context.split_rows``;
each fit uses seed ``split``, gene space, the default ``W1Config``, the test for a response
made once by the W1 fit and followed by the mean shift), the held-out cells are scored along the
training response axis (``cellw1.eval.response``) on the top-50 DE genes ranked in either
direction, as the evaluation does (``--axis-genes up``: the up-regulated genes only, the axis
before that fix, which misses a knock-out's down-regulated response; ``all``: every gene), at
each stage:

- ``observed`` (held-out perturbed cells, the truth) and ``control`` (held-out controls, the input);
- ``mean_shift_raw`` / ``mean_shift``: the shifted controls before / after the calibration;
- ``w1_raw`` / ``w1``: the map ``x - eta(x) u(x)`` before / after the calibration;
- ``w1_step_mean`` and ``w1_step_half``: the same directions with each cell's step moved all or
  half of the way to the training controls' mean step (calibration refitted on the training
  controls moved alike), to show how much of W1's spread its per-cell steps make;
- ``w1_potential_quantile``: the same directions with the monotone 1-D step along the potential
  (each cell's ``f`` moved to the perturbed cells' ``f`` at its quantile among the controls),
  calibrated alike: a step tied to where the cell starts, not learned.

Each stage reports the scores' mean, SD, quantiles and share below 0.5, ``response_w1`` against
the observed scores, energy and MMD on the scored (up-regulated) DE genes, and (W1 variants) the energy distance on
every gene before calibration, the space the step size is fitted in.

    python -m benchmarks response_spread [--targets STAT1,JAK2,IFNGR1,IFNGR2,SMAD4,ATF2] [--splits 3]
    python -m benchmarks response_spread --axis-genes up --out benchmarks/results/response_spread_up.json
    python -m benchmarks response_spread --axis-genes all --out benchmarks/results/response_spread_all.json
"""

# %%
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

import cellw1
from cellw1.eval.context import split_rows
from cellw1.eval.degenes import de_gene_rankings
from cellw1.eval.metrics import compute_metrics
from cellw1.eval.response import ResponseAxis, response_distance
from cellw1.ot.potential import gradient
from cellw1.pp.calibration import calibrate, fit_calibration

from ._common import RESULTS, one_thread, papalexi, parse, parser, write_json

logger = logging.getLogger(__name__)
OUT = RESULTS / "response_spread.json"
CONTROL, KEY = "non-targeting", "target"
#: share of each cell's step kept around the mean step: 0 is one step for every cell
STEP_SHARES = {"w1_step_mean": 0.0, "w1_step_half": 0.5}


def score_summary(scores: np.ndarray, observed: np.ndarray) -> dict[str, float]:
    """Mean, SD, quantiles, share below half the mean response, and the 1-D W1 to ``observed``."""
    q = np.quantile(scores, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean": float(scores.mean()),
        "sd": float(scores.std()),
        **{f"q{p:02d}": float(v) for p, v in zip((5, 25, 50, 75, 95), q, strict=True)},
        "below_half": float(np.mean(scores < 0.5)),
        "response_w1": response_distance(scores, observed),
    }


def shrunk_steps(model: Any, control: np.ndarray, train_control: np.ndarray, share: float) -> np.ndarray:
    """``x - eta_s(x) u(x)`` with ``eta_s = mean + share (eta - mean)`` (mean over the training controls), raw."""
    emb, transport = model.embedding, model.method.map
    mean_step = float(np.asarray(transport.step_size(emb.encode(train_control))).mean())
    z = emb.encode(control)
    steps = mean_step + share * (np.asarray(transport.step_size(z)) - mean_step)
    return np.asarray(emb.decode(z - steps[:, None] * np.asarray(transport.direction(z))), dtype=np.float32)


def quantile_steps(
    model: Any, control: np.ndarray, train_control: np.ndarray, train_perturbed: np.ndarray
) -> np.ndarray:
    """W1's directions with the monotone 1-D step along the potential, raw.

    Each cell moves until its potential ``f`` reaches the perturbed cells' ``f`` at the quantile
    its own ``f`` holds among the training controls (three Newton steps along ``-u(x)``), so
    the moved cells' ``f`` follows the perturbed cells' distribution.
    """
    emb, transport = model.embedding, model.method.map
    f_control = np.sort(np.asarray(transport.potential(emb.encode(train_control))))
    f_perturbed = np.asarray(transport.potential(emb.encode(train_perturbed)))
    z = np.asarray(emb.encode(control), dtype=np.float32)
    f = np.asarray(transport.potential(z))
    rank = np.searchsorted(f_control, f, side="right") / len(f_control)
    goal = np.quantile(f_perturbed, np.clip(rank, 0.5 / len(f_control), 1 - 0.5 / len(f_control)))
    u = np.asarray(transport.direction(z))
    steps = np.maximum(f - goal, 0.0)
    for _ in range(3):
        moved = (z - steps[:, None] * u).astype(np.float32)
        slope = np.linalg.norm(np.asarray(gradient(transport.potential_net, torch.from_numpy(moved))), axis=1)
        steps = np.maximum(steps + (np.asarray(transport.potential(moved)) - goal) / np.maximum(slope, 0.2), 0.0)
    return np.asarray(emb.decode(z - steps[:, None] * u), dtype=np.float32)


def stages(w1: Any, shift: Any, train: np.ndarray, is_control: np.ndarray, test_control: np.ndarray) -> dict:
    """Each stage's prediction of ``test_control`` (gene space), and its raw map output where it has one."""

    def raw(model: Any, x: np.ndarray) -> np.ndarray:
        return np.asarray(model.embedding.decode(model.method.predict(model.embedding.encode(x))), dtype=np.float32)

    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {"control": (test_control, None)}
    out["mean_shift_raw"] = (raw(shift, test_control), None)
    out["mean_shift"] = (shift.predict_values(test_control)[0], None)
    if not w1.method.has_response:  # gated: both methods predict the controls
        out["w1"] = (w1.predict_values(test_control)[0], None)
        return out
    out["w1_raw"] = (raw(w1, test_control), None)
    out["w1"] = (w1.predict_values(test_control)[0], raw(w1, test_control))
    for name, share in STEP_SHARES.items():
        moved = shrunk_steps(w1, test_control, train[is_control], share)
        calibration = fit_calibration(shrunk_steps(w1, train[is_control], train[is_control], share), train[~is_control])
        out[name] = (calibrate(moved, calibration), moved)
    control, perturbed = train[is_control], train[~is_control]
    moved = quantile_steps(w1, test_control, control, perturbed)
    calibration = fit_calibration(quantile_steps(w1, control, control, perturbed), perturbed)
    out["w1_potential_quantile"] = (calibrate(moved, calibration), moved)
    return out


def run_split(adata: Any, labels: np.ndarray, target: str, split: int, direction: str = "either") -> list[dict]:
    """Every stage's scores on one split of ``target``, along the axis on the top-50 DE genes ranked ``direction``.

    ``direction="all"``: the axis on every gene.
    """
    rows = split_rows(labels, CONTROL, [target], None, 0, split)[target]
    train_cells = adata[rows.train]
    w1 = cellw1.fit(train_cells, KEY, CONTROL, target, seed=split, progress=False)
    shift = cellw1.fit(
        train_cells, KEY, CONTROL, target, method="mean_shift", seed=split, progress=False,
        embedding=w1.embedding, effect=w1.effect,
    )  # fmt: skip
    train = w1.preprocess(train_cells).astype(np.float32)
    is_control = labels[rows.train] == CONTROL
    ranked = de_gene_rankings(train[is_control], train[~is_control], w1.features, 50)  # one test, both ways
    cols = pd.Index(w1.features).get_indexer(ranked["up"])
    if direction == "all":
        on_axis = np.arange(len(w1.features))
    else:
        on_axis = pd.Index(w1.features).get_indexer(ranked[direction])
    axis = ResponseAxis.fit(
        train[is_control][:, on_axis].astype(np.float64), train[~is_control][:, on_axis].astype(np.float64)
    )
    test_control = w1.preprocess(adata[rows.test_control]).astype(np.float32)
    observed = w1.preprocess(adata[rows.test_perturbed]).astype(np.float64)
    obs_scores = axis.scores(observed[:, on_axis])
    base = {"target": target, "split": split, "gated": not w1.method.has_response}
    out = [base | {"stage": "observed"} | score_summary(obs_scores, obs_scores)]
    for stage, (pred, raw) in stages(w1, shift, train, is_control, test_control).items():
        pred = np.asarray(pred, dtype=np.float64)
        row = base | {"stage": stage} | score_summary(axis.scores(pred[:, on_axis]), obs_scores)
        row |= compute_metrics(pred[:, cols], observed[:, cols], ["energy", "mmd"])
        if raw is not None:
            row["energy_all_genes_raw"] = compute_metrics(raw.astype(np.float64), observed, ["energy"])["energy"]
        out.append(row)
    logger.info("%s split %d: %s", target, split, {r["stage"]: round(r["response_w1"], 3) for r in out})
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Score every stage on every target and split, print the means and write every row."""
    p = parser(__doc__, name="response_spread", out=OUT, quick={"targets": "STAT1", "splits": 1})
    p.add_argument("--targets", default="STAT1,JAK2,IFNGR1,IFNGR2,SMAD4,ATF2")
    p.add_argument("--splits", type=int, default=3)
    p.add_argument(
        "--axis-genes", choices=("either", "up", "all"), default="either",
        help="genes of the response axis: top DE in either direction (the evaluation's), up only (before), all",
    )  # fmt: skip
    args = parse(p, argv)
    one_thread()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    adata = papalexi()
    labels = adata.obs[KEY].astype(str).to_numpy()
    rows = [
        row | {"axis_genes": args.axis_genes}
        for t in args.targets.split(",")
        for s in range(args.splits)
        for row in run_split(adata, labels, t, s, args.axis_genes)
    ]
    table = pd.DataFrame(rows)
    columns = ["mean", "sd", "q05", "q50", "q95", "below_half", "response_w1", "energy", "mmd", "energy_all_genes_raw"]
    print(table[~table.gated].groupby("stage", sort=False)[columns].mean().round(4).to_string())
    write_json(args.out, {"rows": rows}, args, indent=1)


if __name__ == "__main__":
    main()
