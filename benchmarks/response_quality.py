"""How far cells move, and whether the potential stays honest: step-size learners side by side.

Part ``d50`` (issue 10, item 1). d = 50, 4,000 cells a side, target ``y = z + 1 + 0.8 tanh(z A)``
with a random ``A`` (scale ``1/sqrt(d)``), 1,000 fresh held-out cells of each side. Every
learner is fitted with :func:`cellw1.fit_map` in the same run and scored by the energy distance
between the transported held-out source and the held-out target, next to the *floor*: the
energy distance between two independent 1,000-cell samples of the target itself (the
estimator is not debiased, so no map scores below about that). Also the ratio of the predicted
to the true mean shift. Timing: the whole default fit against the reference's schedule,
10,000 + 10,000 plain steps written the reference's way (separate forward passes for source
and target, a fresh orthonormalisation each pass, a GAN step), timed for ``--plain-steps``
steps of each phase in the same run and scaled to 10,000.

Part ``toys`` (items 5 and 6). The paper's six 2-D toys, fitted on 2,000 points, seeds 0-2:
the dual on 1,000 fresh points against POT's exact ``emd2`` on the same points (and on 4,000
fresh points, to show the finite-sample bias of ``emd2`` itself), bookshelf Spearman and
circles inner -> inner fraction after transport, and the energy distance. Beside the learners,
an *oracle* potential that no network can beat by much: the exact discrete Kantorovich
potential of the same 2,000 training points (POT's ``emd`` dual), extended to new points by
its c-transform ``f(x) = min_j |x - y_j| - v_j`` (1-Lipschitz), scored the same way.

Part ``speed`` (item 7). The whole default fit against the old default (``minibatch_ot``, no
feature mask) in the same run, at d = 50 (PCA), 1,000 and 7,000 genes of
``benchmarks/speed.py``'s synthetic data, 4,000 cells a side, with held-out MMD and energy.

Writes ``benchmarks/results/response_quality.json`` and prints markdown tables. Run on a quiet
machine, one timing job at a time::

    python -m benchmarks response_quality [--parts d50,toys] [--seeds 0,1,2] [--learners ...]
"""

# %%
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import ot
import torch

import cellw1
from cellw1.datasets import load_toy
from cellw1.eval.metrics import energy_distance
from cellw1.eval.monotonicity import bookshelf_spearman, circles_inner_to_inner
from cellw1.ot.lipschitz import LipschitzPotential

from ._common import RESULTS, one_thread, parse, parser, write_json
from .speed import make_data, w1_case

TOYS = ("bookshelf", "circles", "swiss_roll", "moons", "8gaussians", "checkerboard")


def learners() -> dict[str, cellw1.W1Config]:
    """Every learner and variant compared, by name."""
    base = cellw1.W1Config()
    return {
        "default (ot_energy)": base,
        "minibatch_ot (old default)": base.replace(
            step_size_learner="minibatch_ot", mask_constant_features=False, regression_iters=1000
        ),
        "ot_energy 1000 regression steps": base.replace(regression_iters=1000),
        "gan": base.replace(step_size_learner="gan"),
        "ot_gan": base.replace(step_size_learner="ot_gan"),
        "ot_energy 1500 energy steps": base.replace(energy_iters=1500),
        "ot_energy lr 1e-3": base.replace(energy_lr=1e-3),
        "potential 2000 steps": base.replace(potential_iters=2000),
        "potential 6x64 3000 steps": base.replace(potential_iters=3000, hidden=(64,) * 6, patience=None),
        "paper (10k + 10k GAN)": cellw1.W1Config.paper(),
    }


def d50_data(seed: int, d: int = 50, n: int = 4000, n_test: int = 1000) -> tuple[np.ndarray, ...]:
    """Seeded d = 50 data: Gaussian sources, targets a shifted tanh warp, a test pair and the energy floor.

    Returns ``(x, y, x_test, y_test, floor)``; ``floor`` is the energy distance between two target samples.
    """
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / np.sqrt(d)

    def target(k: int) -> np.ndarray:
        z = rng.normal(size=(k, d))
        return (z + 1 + 0.8 * np.tanh(z @ a)).astype(np.float32)

    x, y = rng.normal(size=(n, d)).astype(np.float32), target(n)
    x_test, y_test = rng.normal(size=(n_test, d)).astype(np.float32), target(n_test)
    floor = energy_distance(target(n_test), y_test)
    return x, y, x_test, y_test, floor


def plain_seconds(x: np.ndarray, y: np.ndarray, steps: int) -> float:
    """Seconds of 10,000 + 10,000 steps written the reference's way, from ``steps`` of each."""
    torch.manual_seed(0)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    f = LipschitzPotential(x.shape[1], (64, 64, 64, 64), group_size=4)
    opt = torch.optim.Adam(f.parameters(), lr=1e-2, betas=(0.5, 0.5))
    start = time.perf_counter()
    for _ in range(steps):  # phase 1: two forward passes, a fresh orthonormalisation each
        i, j = torch.randint(len(xs), (256,)), torch.randint(len(ys), (256,))
        loss = -(f(xs[i]).mean() - f(ys[j]).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    phase1 = (time.perf_counter() - start) / steps
    f.requires_grad_(False)

    def mlp() -> torch.nn.Sequential:
        return torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 1),
        )

    eta, disc = mlp(), mlp()
    opt_e, opt_d = torch.optim.Adam(eta.parameters(), lr=1e-4), torch.optim.Adam(disc.parameters(), lr=1e-4)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    start = time.perf_counter()
    for _ in range(steps):  # phase 2: the direction by autograd each step, then a GAN step
        i, j = torch.randint(len(xs), (256,)), torch.randint(len(ys), (256,))
        xb = xs[i].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xb).sum(), xb)
        u = g / g.norm(dim=1, keepdim=True)
        moved = xs[i] - torch.nn.functional.softplus(eta(xs[i])) * u
        d_loss = bce(disc(ys[j]), torch.ones(256, 1)) + bce(disc(moved.detach()), torch.zeros(256, 1))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(disc(moved), torch.ones(256, 1))
        opt_e.zero_grad()
        g_loss.backward()
        opt_e.step()
    phase2 = (time.perf_counter() - start) / steps
    return 10_000 * (phase1 + phase2)


def run_d50(seeds: list[int], names: list[str], plain_steps: int) -> dict[str, Any]:
    """Fit each learner on each seed's d = 50 data: held-out energy, shift ratio and seconds, with the floor."""
    out: dict[str, Any] = {"rows": {}, "floor": [], "plain_seconds": None}
    configs = learners()
    for seed in seeds:
        x, y, x_test, y_test, floor = d50_data(seed)
        out["floor"].append(floor)
        true_shift = np.linalg.norm(y_test.mean(0) - x_test.mean(0))
        for name in names:
            start = time.perf_counter()
            tmap = cellw1.fit_map(x, y, configs[name], seed=seed)
            seconds = time.perf_counter() - start
            moved = tmap.transport(x_test)
            row = out["rows"].setdefault(name, {"energy": [], "shift_ratio": [], "seconds": []})
            row["energy"].append(energy_distance(moved, y_test))
            row["shift_ratio"].append(float(np.linalg.norm(moved.mean(0) - x_test.mean(0)) / true_shift))
            row["seconds"].append(seconds)
            print(
                f"d50 seed {seed} {name}: energy {row['energy'][-1]:.4f} (floor {floor:.4f}) "
                f"shift ratio {row['shift_ratio'][-1]:.3f} {seconds:.1f} s",
                flush=True,
            )
        if seed == seeds[0] and plain_steps:
            out["plain_seconds"] = plain_seconds(x, y, plain_steps)
            print(f"reference-style 10k + 10k plain steps: {out['plain_seconds']:.0f} s (from {plain_steps} of each)")
    return out


def oracle_potential(source: np.ndarray, target: np.ndarray) -> Any:
    """The exact discrete W1 potential of ``source``/``target``, extended by its c-transform."""
    cost = ot.dist(source.astype(float), target.astype(float), metric="euclidean")
    _, log = ot.emd(
        np.full(len(source), 1 / len(source)), np.full(len(target), 1 / len(target)), cost, log=True, numItermax=10**7
    )
    v, anchors = log["v"], target.astype(float)
    return lambda x: (ot.dist(np.asarray(x, float), anchors, metric="euclidean") - v[None, :]).min(1)


def run_toys(seeds: list[int], names: list[str], toys: list[str]) -> dict[str, Any]:
    """Per learner, toy and seed: the dual over the exact W1 (``ot.emd2``), the energy and the monotonicity.

    The exact discrete potential (the oracle) is scored alongside, on the dual alone.
    """
    configs = learners()
    out: dict[str, Any] = {}
    for toy_name in toys:
        for seed in seeds:
            toy, fresh = load_toy(toy_name, n=2000, seed=seed), load_toy(toy_name, n=1000, seed=seed + 100)
            big = load_toy(toy_name, n=4000, seed=seed + 200)
            exact = {
                k: float(
                    ot.emd2(
                        np.empty(0),
                        np.empty(0),
                        ot.dist(t.source.astype(float), t.target.astype(float), metric="euclidean"),
                        numItermax=10**7,
                    )
                )
                for k, t in (("1000", fresh), ("4000", big))
            }
            oracle = oracle_potential(toy.source, toy.target)
            row = {
                f"dual_over_emd2_{k}": float(oracle(t.source).mean() - oracle(t.target).mean()) / exact[k]
                for k, t in (("1000", fresh), ("4000", big))
            }
            out.setdefault("oracle (exact discrete potential)", {}).setdefault(toy_name, []).append(row)
            print(f"{toy_name} seed {seed} oracle: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
            for name in names:
                tmap = cellw1.fit_map(toy.source, toy.target, configs[name], seed=seed)
                moved = tmap.transport(toy.source)
                row = {
                    "dual_over_emd2_1000": tmap.w1(fresh.source, fresh.target) / exact["1000"],
                    "dual_over_emd2_4000": tmap.w1(big.source, big.target) / exact["4000"],
                    "energy": energy_distance(moved, toy.target),
                }
                if toy_name == "bookshelf":
                    row["spearman"] = bookshelf_spearman(toy.source, moved)
                if toy_name == "circles":
                    row["inner_to_inner"] = circles_inner_to_inner(toy, moved)
                out.setdefault(name, {}).setdefault(toy_name, []).append(row)
                print(
                    f"{toy_name} seed {seed} {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True
                )
    return out


def run_speed(dims: list[int]) -> list[dict[str, Any]]:
    """The default against the old default on the speed benchmark's data (``benchmarks/speed.py``)."""
    configs = learners()
    rows = []
    for d in dims:
        data = make_data(d, 4000)
        for name in ("minibatch_ot (old default)", "default (ot_energy)"):
            rows.append(w1_case(d, 4000, configs[name], name.split(" ")[0], data=data))
    return rows


def tables(results: dict[str, Any]) -> str:
    """The results of each part run as markdown tables (medians and worst seeds)."""
    lines = []
    if "d50" in results:
        d50 = results["d50"]
        lines += [
            f"\n### d = 50 (median over seeds; energy floor {np.median(d50['floor']):.4f}; "
            f"reference-style 10k + 10k: {d50['plain_seconds'] or float('nan'):.0f} s)\n",
            "| learner | held-out energy | worst seed | shift ratio | seconds | x faster than 10k + 10k |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in d50["rows"].items():
            sec = float(np.median(row["seconds"]))
            speed = (d50["plain_seconds"] or float("nan")) / sec
            lines.append(
                f"| {name} | {np.median(row['energy']):.4f} | {max(row['energy']):.4f} | "
                f"{np.median(row['shift_ratio']):.3f} | {sec:.1f} | {speed:.0f} |"
            )
    if "toys" in results:
        lines += [
            "\n### 2-D toys (worst seed): dual / emd2 on 1,000 (4,000) fresh points; monotonicity\n",
            "| learner | toy | dual/emd2 1,000 | dual/emd2 4,000 | energy | Spearman / inner->inner |",
            "|---|---|---|---|---|---|",
        ]
        for name, toys in results["toys"].items():
            for toy_name, rows in toys.items():
                mono = [r.get("spearman", r.get("inner_to_inner")) for r in rows]
                lines.append(
                    f"| {name} | {toy_name} | {min(r['dual_over_emd2_1000'] for r in rows):.3f} | "
                    f"{min(r['dual_over_emd2_4000'] for r in rows):.3f} | "
                    + (f"{max(r['energy'] for r in rows):.4f}" if "energy" in rows[0] else "-")
                    + " | "
                    + (f"{min(mono):.4f}" if mono[0] is not None else "-")
                    + " |"
                )
    if "speed" in results:
        lines += [
            "\n### Whole default fit, old vs new, same run (4,000 cells a side)\n",
            "| d | learner | seconds | held-out MMD | held-out energy |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['d']} | {r['method']} | {r['fit_seconds']:.1f} | {r['mmd']:.5f} | {r['energy']:.4f} |"
            for r in results["speed"]
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen parts, write the results and print their tables."""
    p = parser(
        __doc__,
        name="response_quality",
        seeds="0,1,2",
        out=RESULTS / "response_quality.json",
        quick={"parts": "toys", "seeds": [0], "toys": "moons", "toy_learners": "minibatch_ot (old default)"},
    )
    p.add_argument("--parts", default="d50,toys,speed")
    p.add_argument("--learners", default=None, help="comma-separated names (default: all but the paper's for toys)")
    p.add_argument("--toy-learners", default="default (ot_energy),minibatch_ot (old default),gan")
    p.add_argument("--toys", default=",".join(TOYS))
    p.add_argument("--plain-steps", type=int, default=300)
    p.add_argument("--dims", default="50,1000,7000", help="dimensions of the speed part")
    args = parse(p, argv)
    one_thread()
    names = args.learners.split(",") if args.learners else list(learners())
    results: dict[str, Any] = {"machine": "see docs/speed.md", "seeds": args.seeds}
    if "d50" in args.parts:
        results["d50"] = run_d50(args.seeds, names, args.plain_steps)
    if "speed" in args.parts:
        results["speed"] = run_speed([int(d) for d in args.dims.split(",")])
    if "toys" in args.parts:
        results["toys"] = run_toys(args.seeds, args.toy_learners.split(","), args.toys.split(","))
    write_json(args.out, results, args)
    print(tables(results))
