"""One conditional W1 model for the 25 Papalexi targets, against 25 separate W1 maps and CellFlow (issue 14).

Parts (``--parts``, comma-separated):

- ``separate``: :func:`cellw1.evaluate` with ``identity``, ``w1`` (one map per target) and
  ``w1_conditional`` (one model of all 25) on the same iid splits (``grna_frac >= 0.8``,
  split rule of ``docs/method.md``, one control split shared by all targets, seed 0), gene
  space (299 genes), top-50 DE genes. Reports median MMD and energy, the summed training
  seconds, the mean shift of the 20 targets without a strong effect (``control_shift``) and
  the predicted / observed mean-shift ratio of the 5 strong ones.
- ``sampling``: the conditional model with conditions drawn in proportion to their cells
  and balanced (default), the ``bias`` parametrisation (balanced), same splits (identity is fitted
  first so that every run is scored in the same units).
- ``cellflow``: the same splits in PCA-50 space (PCA of the training cells of every group):
  cellw1's conditional map (each cell moved by its condition's resolved share of the map's
  displacement, as ``predict`` does) against CellFlow (``cellflow-tools``, its documented API,
  one-hot condition), run in its own environment (``--cellflow-python``, else
  ``$CELLW1_CELLFLOW_PYTHON``) by ``_cellflow_runner.py`` through ``.npz`` files. Scored in the
  PCA space on the held-out cells: MMD, energy distance, the mean-shift ratio of the 5 strong targets, training seconds.

- ``raw_shift``: on the ``cellflow`` splits in gene space, how far the conditional map moves
  each target's mean on its top-50 DE genes before and after the output calibration.
- ``timing``: the ``cellflow`` part's conditional fit again, alone, with the machine's load.
- ``effect``: the test for a response (``cellw1.ot.effect``, 999 permutations) of every target,
  on its training cells (what the fits decide on) and on its held-out cells.

Results go to ``benchmarks/results/conditional/`` (``<part>.json`` and the evaluation tables).
The machine is shared (2 cores, other jobs): seconds compare within a part, not across runs.

    python -m benchmarks conditional_papalexi [--parts separate,sampling,cellflow,raw_shift,timing,effect]
"""

# %%
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

import cellw1
from cellw1.eval.metrics import energy_distance, mmd
from cellw1.eval.splits import shared_control_rng, split_group
from cellw1.eval.splits import split_rngs as _split_rngs

from ._common import HERE, RESULTS, one_thread, papalexi, parse, parser, peer_python, write_json

OUT = RESULTS / "conditional"
RUNNER = HERE / "_cellflow_runner.py"
#: CellFlow's settings of the ``cellflow`` part
CELLFLOW_PARAMS = {
    "width": 256,
    "condition_dim": 64,
    "lr": 1e-4,
    "accumulate": 1,
    "iterations": 5000,
    "batch_size": 1024,
    "seed": 0,
}
CONTROL, KEY = "non-targeting", "target"
STRONG = ("STAT1", "JAK2", "IFNGR1", "IFNGR2", "SMAD4")


def summary(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per method: median MMD / energy, summed seconds, no-effect shifts (an evaluation's table)."""
    wide = table.pivot_table(index=["method", "perturbation"], columns="metric", values="value")
    out: dict[str, dict[str, float]] = {}
    targets = sorted(set(table["perturbation"]))
    weak = [p for p in targets if p not in STRONG]
    for method in wide.index.get_level_values(0).unique():
        w = wide.loc[method]
        row = {
            "mmd_median": float(w["mmd"].median()),
            "energy_median": float(w["energy"].median()),
            "seconds_total": float(w["seconds"].sum()),
            "no_effect_shift_median": float(w.loc[weak, "control_shift"].median()),
            "no_effect_shift_max": float(w.loc[weak, "control_shift"].max()),
            "mmd_median_strong": float(w.loc[list(STRONG), "mmd"].median()),
            "mmd_median_no_effect": float(w.loc[weak, "mmd"].median()),
        }
        out[method] = row
    return out


def run_separate(adata: ad.AnnData, out: Path) -> dict:
    """The ``separate`` part: identity, one W1 map per target and one conditional model, summarised.

    One ``cellw1.evaluate`` split in gene space, saved under ``out``; an earlier run's ``results.csv`` is
    summarised instead of fitted again.
    """
    start = time.perf_counter()
    if (out / "separate" / "results.csv").exists():  # summarise an earlier run
        table = pd.read_csv(out / "separate" / "results.csv")
    else:
        result = cellw1.evaluate(
            adata,
            KEY,
            CONTROL,
            methods=["identity", "w1", "w1_conditional"],
            space="genes",
            n_splits=1,
            progress=False,
        )
        result.save(out / "separate")
        table = result.table
    found = summary(table)
    found["_seconds_whole_evaluation"] = time.perf_counter() - start
    return found


def run_sampling(adata: ad.AnnData, out: Path) -> dict:
    """The conditional model's summary under each condition sampling (proportional, balanced, bias)."""
    found = {}
    for name, changes in (
        ("proportional", {"condition_sampling": "proportional"}),
        ("balanced", {"condition_sampling": "balanced"}),
        ("bias", {"parametrisation": "bias", "condition_sampling": "balanced"}),
    ):
        config = cellw1.ConditionalConfig(**changes)
        result = cellw1.evaluate(
            adata,
            KEY,
            CONTROL,
            methods=["identity", "w1_conditional"],
            space="genes",
            conditional_config=config,
            n_splits=1,
            progress=False,
        )
        result.save(out / f"sampling_{name}")
        found[name] = summary(result.table)["w1_conditional"]
    return found


# -- CellFlow against the conditional map, in PCA-50 space ---------------------------------------------
def splits(adata: ad.AnnData, targets: list[str], seed: int = 0, repeat: int = 0) -> tuple[np.ndarray, dict]:
    """The splits of ``cellw1.evaluate`` with ``w1_conditional``: training rows, and test rows per target."""
    labels = adata.obs[KEY].astype(str).to_numpy()
    control_rows = np.flatnonzero(labels == CONTROL)
    train_c, test_c = split_group(control_rows.size, shared_control_rng(seed, repeat))
    train, tests = [control_rows[train_c]], {}
    for target in targets:
        rows = np.flatnonzero(labels == target)
        tr, te = split_group(rows.size, _split_rngs(seed, repeat, target)[1])
        train.append(rows[tr])
        tests[target] = rows[te]
    return np.sort(np.concatenate(train)), {"control": control_rows[test_c], **tests}


def shift_ratio(pred: np.ndarray, obs: np.ndarray, ctrl: np.ndarray) -> float:
    """Length of the predicted mean shift from the controls over that of the observed cells."""
    return float(np.linalg.norm(pred.mean(0) - ctrl.mean(0)) / np.linalg.norm(obs.mean(0) - ctrl.mean(0)))


def scores(pred: dict[str, np.ndarray], obs: dict[str, np.ndarray], ctrl: np.ndarray) -> dict:
    """Per target MMD, energy and shift ratio of ``pred`` against ``obs``, with their medians over targets."""
    per = {
        t: {
            "mmd": float(mmd(pred[t], obs[t])),
            "energy": float(energy_distance(pred[t], obs[t])),
            "shift_ratio": shift_ratio(pred[t], obs[t], ctrl),
        }
        for t in obs
    }
    return {
        "mmd_median": float(np.median([v["mmd"] for v in per.values()])),
        "energy_median": float(np.median([v["energy"] for v in per.values()])),
        "shift_ratio_strong_median": float(np.median([per[t]["shift_ratio"] for t in STRONG])),
        "per_target": per,
    }


def run_cellflow(adata: ad.AnnData, out: Path, python: str, params: dict) -> dict:
    """The ``cellflow`` part: the PCA-space conditional model, the identity and CellFlow on the same splits.

    CellFlow runs in its own interpreter ``python`` with ``params``, on the model's PCA embedding; its
    error is recorded in place of its scores if it fails.
    """
    targets = sorted(t for t in adata.obs[KEY].astype(str).unique() if t != CONTROL)
    train_rows, tests = splits(adata, targets)
    train = adata[train_rows].copy()
    start, load = time.perf_counter(), os.getloadavg()[0]
    model = cellw1.fit_conditional(train, KEY, CONTROL, space="pca", progress=False)
    cellw1_seconds = model.map.info["potential_seconds"] + model.map.info["step_size_seconds"]
    whole_seconds = time.perf_counter() - start
    loads = {"cellw1_load_before": load, "cellw1_load_after": os.getloadavg()[0]}

    def encode(rows: np.ndarray) -> np.ndarray:
        return model.embedding.encode(model.preprocessor.transform(adata[rows].X))

    labels = train.obs[KEY].astype(str).to_numpy()
    z_train = model.embedding.encode(model.preprocessor.transform(train.X))
    ctrl = encode(tests["control"])
    obs = {t: encode(tests[t]) for t in targets}
    found: dict = {"n_train": len(train_rows), "n_test_control": len(ctrl)}
    # as the model predicts (with shrink_response, each cell moves its condition's resolved share of the way)
    methods = {t: model.view(t).method for t in targets}
    pred = {t: method.predict(ctrl) for t, method in methods.items()}
    share = {t: method.response_share for t, method in methods.items()}
    found["cellw1_conditional"] = {
        **scores(pred, obs, ctrl),
        "train_seconds": cellw1_seconds,
        "fit_seconds_with_preprocessing": whole_seconds,
        "resolved": share,
        **loads,
    }
    found["identity"] = scores({t: ctrl for t in targets}, obs, ctrl)
    with tempfile.TemporaryDirectory() as tmp:
        inp, res = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        is_ctrl = labels == CONTROL
        np.savez(
            inp,
            control=z_train[is_ctrl],
            perturbed=z_train[~is_ctrl],
            labels=labels[~is_ctrl].astype("U"),
            test_control=ctrl,
            names=np.array(targets, dtype="U"),
            params=json.dumps(params),
        )
        start, load = time.perf_counter(), os.getloadavg()[0]
        proc = subprocess.run([python, str(RUNNER), str(inp), str(res)], capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        loads = {"load_before": load, "load_after": os.getloadavg()[0]}
        if proc.returncode != 0:
            found["cellflow"] = {"error": proc.stderr[-4000:], "params": params}
            return found
        got = np.load(res)
        cf_pred = {t: got[f"pred_{i}"] for i, t in enumerate(targets)}
        found["cellflow"] = {
            **scores(cf_pred, obs, ctrl),
            "train_seconds": float(got["train_seconds"]),
            "predict_seconds": float(got["predict_seconds"]),
            "wall_seconds": wall,
            "params": params,
            "versions": json.loads(str(got["versions"])),
            **loads,
        }
    return found


def raw_shift(adata: ad.AnnData) -> dict:
    """How far the conditional map moves each target's mean on its top-50 DE genes, and the real cells.

    The map is the gene-space one on the ``separate`` splits; its shift is measured before and after
    the output calibration, beside how far the real test cells are from the controls.
    """
    from cellw1.eval.degenes import top_de_genes

    targets = sorted(t for t in adata.obs[KEY].astype(str).unique() if t != CONTROL)
    train_rows, tests = splits(adata, targets)
    train = adata[train_rows].copy()
    model = cellw1.fit_conditional(train, KEY, CONTROL, space="genes", progress=False)
    values, labels = model.preprocessor.transform(train.X), train.obs[KEY].astype(str).to_numpy()
    ctrl_in = adata[tests["control"]].copy()
    ctrl = model.preprocessor.transform(ctrl_in.X)
    found: dict = {}
    for target in targets:
        genes = top_de_genes(values[labels == CONTROL], values[labels == target], model.features, 50)
        cols = [model.features.index(g) for g in genes]
        raw = np.maximum(model.view(target).method.predict(ctrl), 0.0)  # gene space: the map's own output
        calibrated = np.asarray(model.predict(ctrl_in, perturbation=target).X)
        observed = model.preprocessor.transform(adata[tests[target]].X)
        found[target] = {
            name: float(np.linalg.norm(x[:, cols].mean(0) - ctrl[:, cols].mean(0)))
            for name, x in (("raw", raw), ("calibrated", calibrated), ("observed", observed))
        }
    weak = [t for t in targets if t not in STRONG]
    found["_median_other_20"] = {
        k: float(np.median([found[t][k] for t in weak])) for k in ("raw", "calibrated", "observed")
    }
    return found


def effect(adata: ad.AnnData, resamples: int = 999) -> dict:
    """The test for a response (``cellw1.ot.effect``) of every target, on training and held-out cells.

    Training cells are tested against the training controls (what the fits decide on), held-out cells
    against the held-out controls (the ``separate`` splits; log-normalised genes, as the gene-space
    models see them).
    """
    from cellw1.ot.effect import effect_test
    from cellw1.ot.sampling import MemoryCells

    targets = sorted(t for t in adata.obs[KEY].astype(str).unique() if t != CONTROL)
    train_rows, tests = splits(adata, targets)
    model = cellw1.fit(
        adata[train_rows].copy(), KEY, CONTROL, targets[0], space="genes", method="identity", progress=False
    )
    values = model.preprocessor.transform(adata.X)
    labels = adata.obs[KEY].astype(str).to_numpy()
    in_train = np.isin(np.arange(adata.n_obs), train_rows)

    def cells(rows: np.ndarray) -> MemoryCells:
        return MemoryCells(torch.from_numpy(np.asarray(values[rows], dtype=np.float32)))

    train_ctrl = cells(np.flatnonzero((labels == CONTROL) & in_train))
    found: dict = {}
    for target in targets:
        train = effect_test(train_ctrl, cells(np.flatnonzero((labels == target) & in_train)), resamples=resamples)
        test = effect_test(cells(tests["control"]), cells(tests[target]), resamples=resamples)
        found[target] = {"training": train.to_dict(), "held_out": test.to_dict()}
        print(f"{target:10s} training p {train.p_value:.3f}  held-out p {test.p_value:.3f}", flush=True)
    return found


def time_conditional(adata: ad.AnnData, repeats: int = 2) -> dict:
    """Fit the PCA-space conditional model of the ``cellflow`` part again, noting the machine's load."""
    targets = sorted(t for t in adata.obs[KEY].astype(str).unique() if t != CONTROL)
    train = adata[splits(adata, targets)[0]].copy()
    runs = []
    for _ in range(repeats):
        load = os.getloadavg()[0]
        info = cellw1.fit_conditional(train, KEY, CONTROL, space="pca", progress=False).map.info
        runs.append(
            {
                "train_seconds": info["potential_seconds"] + info["step_size_seconds"],
                "load_before": load,
                "load_after": os.getloadavg()[0],
            }
        )
    return {"runs": runs}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen parts (CellFlow's interpreter checked first) and write each part's results."""
    p = parser(__doc__, name="conditional_papalexi", out=OUT)  # every part fits 25 targets: no quick run
    p.add_argument("--parts", default="separate,sampling,cellflow")
    p.add_argument(
        "--cellflow-python", default=None, help="python of the CellFlow venv (default: $CELLW1_CELLFLOW_PYTHON)"
    )
    p.add_argument("--cellflow-params", default=json.dumps(CELLFLOW_PARAMS))
    args = parse(p, argv)
    parts = args.parts.split(",")
    python = None
    if "cellflow" in parts:  # before any fit: a missing environment is said at once
        python = peer_python(
            "CELLW1_CELLFLOW_PYTHON",
            "CellFlow",
            "python3.11 -m venv cellflow-venv && cellflow-venv/bin/pip install cellflow-tools",
            args.cellflow_python,
        )
    one_thread()
    args.out.mkdir(parents=True, exist_ok=True)
    adata = papalexi()
    parts_run = {
        "separate": lambda: run_separate(adata, args.out),
        "sampling": lambda: run_sampling(adata, args.out),
        "cellflow": lambda: run_cellflow(adata, args.out, python, json.loads(args.cellflow_params)),
        "raw_shift": lambda: raw_shift(adata),
        "effect": lambda: effect(adata),
        "timing": lambda: time_conditional(adata),  # the conditional fit of the cellflow part again, timed alone
    }
    unknown = [part for part in parts if part not in parts_run]
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; choose from {list(parts_run)}")
    for part in parts:
        found = parts_run[part]()
        write_json(args.out / f"{part}.json", found, args)
        print(part, json.dumps({k: v for k, v in found.items() if k != "per_target"}, indent=1)[:3000], flush=True)
