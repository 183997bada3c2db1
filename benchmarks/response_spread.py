"""Why W1 is not closer than the mean shift on the response distribution (issue 24): the spread along the response, stage by stage.

For each Papalexi target and split (the evaluation's splits, ``cellw1.eval.context.split_rows``;
each fit uses seed ``split``, gene space, the default ``W1Config``, the test for a response
made once by the W1 fit and followed by the mean shift), the held-out cells are scored along the
training response axis on the top-50 DE genes (``cellw1.eval.response``) at each stage:

- ``observed`` (held-out perturbed cells, the truth) and ``control`` (held-out controls, the input);
- ``mean_shift_raw`` / ``mean_shift``: the shifted controls before / after the calibration;
- ``w1_raw`` / ``w1``: the map ``x - eta(x) u(x)`` before / after the calibration;
- ``w1_step_mean`` and ``w1_step_half``: the same directions with each cell's step moved all or
  half of the way to the training controls' mean step (calibration refitted on the training
  controls moved alike), to show how much of W1's spread its per-cell steps make.

Each stage reports the scores' mean, SD, quantiles and share below 0.5, ``response_w1`` against
the observed scores, energy and MMD on the DE genes, and (W1 variants) the energy distance on
every gene before calibration, the space the step size is fitted in.

    python -m benchmarks response_spread [--targets STAT1,JAK2,IFNGR1,IFNGR2,SMAD4,ATF2] [--splits 3]
"""

# %%
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

import cellw1
from cellw1.eval.context import split_rows
from cellw1.eval.degenes import top_de_genes
from cellw1.eval.metrics import compute_metrics
from cellw1.eval.response import ResponseAxis, response_distance
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
    return out


def run_split(adata: Any, labels: np.ndarray, target: str, split: int) -> list[dict]:
    """Every stage's scores on one split of ``target``."""
    rows = split_rows(labels, CONTROL, [target], None, 0, split)[target]
    train_cells = adata[rows.train]
    w1 = cellw1.fit(train_cells, KEY, CONTROL, target, seed=split, progress=False)
    shift = cellw1.fit(
        train_cells, KEY, CONTROL, target, method="mean_shift", seed=split, progress=False,
        embedding=w1.embedding, effect=w1.effect,
    )  # fmt: skip
    train = w1.preprocess(train_cells).astype(np.float32)
    is_control = labels[rows.train] == CONTROL
    genes = top_de_genes(train[is_control], train[~is_control], w1.features, 50)
    cols = pd.Index(w1.features).get_indexer(genes)
    axis = ResponseAxis.fit(
        train[is_control][:, cols].astype(np.float64), train[~is_control][:, cols].astype(np.float64)
    )
    test_control = w1.preprocess(adata[rows.test_control]).astype(np.float32)
    observed = w1.preprocess(adata[rows.test_perturbed]).astype(np.float64)
    obs_scores = axis.scores(observed[:, cols])
    base = {"target": target, "split": split, "gated": not w1.method.has_response}
    out = [base | {"stage": "observed"} | score_summary(obs_scores, obs_scores)]
    for stage, (pred, raw) in stages(w1, shift, train, is_control, test_control).items():
        pred = np.asarray(pred, dtype=np.float64)
        row = base | {"stage": stage} | score_summary(axis.scores(pred[:, cols]), obs_scores)
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
    args = parse(p, argv)
    one_thread()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    adata = papalexi()
    labels = adata.obs[KEY].astype(str).to_numpy()
    rows = [row for t in args.targets.split(",") for s in range(args.splits) for row in run_split(adata, labels, t, s)]
    table = pd.DataFrame(rows)
    columns = ["mean", "sd", "q05", "q50", "q95", "below_half", "response_w1", "energy", "mmd", "energy_all_genes_raw"]
    print(table[~table.gated].groupby("stage", sort=False)[columns].mean().round(4).to_string())
    write_json(args.out, {"rows": rows}, args, indent=1)


if __name__ == "__main__":
    main()
