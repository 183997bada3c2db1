"""Combinations ("A+B") of the conditional W1 model against the additive baseline, on SYNTHETIC pairs (issue 25).

Data: :func:`cellw1.datasets.synthetic_combinations` (8 responding singles, 2 null singles, 4
pairs of each kind: additive, synergistic, epistatic, null member; 60 genes, 300 cells per
condition, 1,500 controls). Per seed and kind, 2 pairs are *trained* (2/3 of their cells in
training, the other third held out as the truth) and 2 are *unseen* (every cell held out);
every single is trained on; a third of the controls is held out as the input.

Predictions of each held-out pair, from the held-out controls, in log-normalised expression
(the model's preprocessing):

- ``model``: ``fit_conditional``'s default (members' displacements added per cell, each its
  whole response; a trained pair blended with its own prediction, the weight of ``docs/method.md``);
- ``model_shrunk``: the default before (issue 25's share fix): the same, with each member and a
  trained pair's own map at its resolved share (``shrink_response``), as each predicts alone
  (``composed(..., whole=False)``);
- ``members_sum``: the members' predicted changes added per cell, without the blend with a
  trained pair's own prediction;
- ``network_code``: the network at the combination's code (``view(..., compose=False)``: the
  mean-pooled code of an unseen pair, what ``predict`` gave before; a trained pair's own map);
- ``composed_maps``: ``T_B(T_A(x))``, each member's full prediction applied in turn (members
  in label order);
- ``additive``: controls + (mean A - mean control) + (mean B - mean control), training cells;
- ``larger_single``: controls + the mean shift of the member whose shift is larger;
- ``no_change``: the controls.

Scores against the held-out cells of the pair, all genes: MMD, energy distance, PearsonΔ
(correlation of the predicted and observed mean changes from the input controls) and the
share of the observed change reproduced (``<pred change, obs change> / |obs change|^2``).
For null-member pairs also the largest difference between the model's pair and its
responding member alone (its whole response, :meth:`cellw1.ConditionalModel.unshrunk`). Results
to ``benchmarks/results/combinations/synthetic.json``.

    python -m benchmarks combinations_synthetic [--seeds 0,1,2,3,4] [--config '{"pooling": "sum"}']
"""

# %%
from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np

import cellw1
from cellw1.eval.metrics import energy_distance, mmd
from cellw1.eval.systema import pearson_delta

from ._common import RESULTS, load, one_thread, parse, parser, read_json, write_json

OUT = RESULTS / "combinations"
METHODS = (
    "model",
    "model_shrunk",
    "network_code",
    "members_sum",
    "composed_maps",
    "additive",
    "larger_single",
    "no_change",
)


def score(pred: np.ndarray, obs: np.ndarray, start: np.ndarray) -> dict[str, float]:
    """MMD, energy, PearsonΔ and share of the observed change, the changes from the input controls ``start``."""
    predicted, observed = pred.mean(0) - start.mean(0), obs.mean(0) - start.mean(0)
    return {
        "mmd": float(mmd(pred, obs)),
        "energy": float(energy_distance(pred, obs)),
        # the library's PearsonΔ (cellw1.eval.systema); a prediction that does not move scores 0, not NaN
        "pearson_delta": float(pearson_delta(pred, obs, start.mean(0))) if predicted.std() > 0 else 0.0,
        "share": float(predicted @ observed / (observed @ observed)),
    }


def run(seed: int, config: cellw1.ConditionalConfig) -> dict:
    """Fit one conditional model on a seed's SYNTHETIC pairs and score every held-out pair against the baselines.

    Half of the pairs of each kind are trained (a third of their cells held out), the others unseen. Returns
    the fit seconds and, per pair, its kind, status, interaction and the scores of the model and of each
    baseline (additive, larger single, composed maps, no change, ...).
    """
    adata = load("synthetic_combinations", n_control=1500, n_per_condition=300, n_pairs_per_kind=4, seed=seed)
    truth = adata.uns["synthetic"]
    labels = adata.obs["condition"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    control = rng.permutation(np.flatnonzero(labels == "control"))
    train_rows, test_ctrl = [np.sort(control[len(control) // 3 :])], np.sort(control[: len(control) // 3])
    status, held = {}, {}
    for kind in ("additive", "synergistic", "epistatic", "null_member"):
        pairs = sorted(p for p, k in truth["kinds"].items() if k == kind)
        for i, pair in enumerate(rng.permutation(pairs).tolist()):
            rows = rng.permutation(np.flatnonzero(labels == pair))
            status[pair] = "trained" if i < len(pairs) // 2 else "unseen"
            cut = len(rows) // 3 if status[pair] == "trained" else len(rows)
            held[pair] = np.sort(rows[:cut])
            train_rows.append(rows[cut:])
    singles = [g for g in adata.obs["condition"].cat.categories if g != "control" and "+" not in g]
    train_rows += [np.flatnonzero(labels == s) for s in singles]
    train = adata[np.sort(np.concatenate(train_rows))].copy()
    start = time.perf_counter()
    model = cellw1.fit_conditional(train, "condition", "control", config=config, seed=seed, progress=False)
    seconds = time.perf_counter() - start
    pre = model.preprocessor.transform
    ctrl_in = adata[test_ctrl].copy()
    x = pre(ctrl_in.X)
    train_ctrl = pre(train[train.obs["condition"] == "control"].X).mean(0)
    shift = {s: pre(train[train.obs["condition"] == s].X).mean(0) - train_ctrl for s in singles}
    found: dict = {"fit_seconds": seconds, "pairs": {}}
    for pair, rows in held.items():
        a, b = pair.split("+")
        obs = pre(adata[rows].X)
        pred = model.predict(ctrl_in, perturbation=pair).X
        reverse = model.predict(ctrl_in, perturbation=f"{b}+{a}").X
        first = model.view(a).predict_values(x)[0]
        larger = max((a, b), key=lambda s: float(np.linalg.norm(shift[s])))
        predictions = {
            "model": pred,
            # the default before issue 25's share fix: members and a trained pair's own map at their resolved shares
            "model_shrunk": model.composed(pair, None, whole=False).predict(ctrl_in).X,
            "network_code": model.view(pair, compose=False).predict(ctrl_in).X,
            "members_sum": model.composed(pair, None, interaction=False).predict(ctrl_in).X,
            "composed_maps": model.view(b).predict_values(first)[0],
            "additive": np.maximum(x + shift[a] + shift[b], 0.0),
            "larger_single": np.maximum(x + shift[larger], 0.0),
            "no_change": x,
        }
        entry = {
            "kind": truth["kinds"][pair],
            "status": status[pair],
            "output": model.view(pair).output,
            "order_invariant": bool(np.array_equal(pred, reverse)),
            "interaction": model.interaction(pair),
            **{m: score(p, obs, x) for m, p in predictions.items()},
        }
        if entry["interaction"] is not None:
            entry["interaction"] = {**entry["interaction"].to_dict(), "weight": entry["interaction"].weight()}
        if entry["kind"] == "null_member":
            member = a if a not in truth["null_members"] else b
            alone = model.unshrunk(member).predict(ctrl_in).X  # its whole response, as a combination adds it
            entry["largest_difference_from_member_alone"] = float(np.abs(pred - alone).max())
        found["pairs"][pair] = entry
    return found


WIN_KEYS = ("mmd", "energy", "pearson_delta")


def model_wins(group: list[dict], method: str, key: str) -> int:
    """Pairs where the model beats ``method`` on ``key`` (PearsonΔ: higher is better, the others lower)."""
    if key == "pearson_delta":
        return sum(c["model"][key] > c[method][key] for c in group)
    return sum(c["model"][key] < c[method][key] for c in group)


def table(results: dict) -> str:
    """Per kind and status: median of each score per method over pairs and seeds; model's wins over additive."""
    cases = [c for per_seed in results.values() for c in per_seed["pairs"].values()]
    lines = []
    for kind in ("additive", "synergistic", "epistatic", "null_member"):
        for status in ("trained", "unseen"):
            group = [c for c in cases if c["kind"] == kind and c["status"] == status]
            if not group:
                continue
            lines += [
                f"\n{kind}, {status} ({len(group)} pairs x seeds)",
                "| method | MMD | energy | PearsonΔ | share | model wins MMD | energy | PearsonΔ |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for m in METHODS:
                med = {k: np.median([c[m][k] for c in group]) for k in ("mmd", "energy", "pearson_delta", "share")}
                wins = "" if m == "model" else " | ".join(f"{model_wins(group, m, k)}/{len(group)}" for k in WIN_KEYS)
                lines.append(
                    f"| {m} | {med['mmd']:.4g} | {med['energy']:.4g} | {med['pearson_delta']:.3f} | {med['share']:.3f} "
                    f"| {wins or ' | '} |"
                )
    for status in ("unseen", "trained"):
        nulls = [
            c["largest_difference_from_member_alone"]
            for c in cases
            if c["kind"] == "null_member" and c["status"] == status
        ]
        if nulls:
            lines.append(
                f"\n{status} null-member pairs: largest |pair - member alone| = {max(nulls):.3g} over {len(nulls)}"
            )
    weights = {}
    for c in cases:
        if c["interaction"] is not None:
            weights.setdefault(c["kind"], []).append(c["interaction"]["weight"])
    lines.append(
        "trained pairs, median weight of their own map: "
        + ", ".join(f"{k} {np.median(v):.2f}" for k, v in weights.items())
    )
    lines.append(f"order-invariant (bit-exact): {sum(c['order_invariant'] for c in cases)}/{len(cases)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run each seed (kept in the results file as it finishes) and print the table of all saved seeds."""
    quick = {"seeds": [0], "config": json.dumps({"potential_iters": 50, "regression_iters": 20, "energy_iters": 20})}
    p = parser(__doc__, name="combinations_synthetic", seeds="0,1,2,3,4", out=OUT / "synthetic.json", quick=quick)
    p.add_argument("--config", default="{}", help="ConditionalConfig fields as JSON")
    args = parse(p, argv)
    config = cellw1.ConditionalConfig(**json.loads(args.config))
    one_thread()
    results = read_json(args.out)
    for seed in args.seeds:  # --seeds "": the table of the saved runs
        results[str(seed)] = run(seed, config)
        write_json(args.out, results, args)
        print(f"seed {seed} done ({results[str(seed)]['fit_seconds']:.0f} s fit)", flush=True)
    print(table(results), flush=True)
