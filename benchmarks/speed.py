"""Time to quality of the W1 solver across dimension and cell count, with W2/ICNN beside it.

Data: cellw1's built-in synthetic perturbation (negative-binomial counts, cell types, a
nonlinear cell-type-specific response), log-normalised, ``n`` cells per side for training and
a separate held-out sample for scoring; ``d = 2, 50`` are PCA coordinates, ``d = 1000, 7000``
are genes. For each case it reports ms per potential step and per step-size step (a warm loop
of plain steps), whole-fit seconds of the default configuration (early stopping), the final
validation dual, and the held-out MMD and energy distance between transported and target
cells. At ``d = 50, n = 4000`` it also fits the paper's full schedule (10,000 + 10,000 steps)
and W2/ICNN (``--w2-iters`` outer iterations of 10 inner steps), and reports the time each
method needed to reach its best validation state.

Writes ``benchmarks/results/speed.json`` and two plots, ``speed_vs_dim.png`` and
``speed_vs_cells.png`` (whole-fit seconds, log scale), the analogue of the paper's Figure 4a.
Run on a quiet machine, one process::

    python -m benchmarks speed [--dims 2,50,1000,7000] [--cells 1000,4000,16000,64000] [--w2-iters 2000]
"""

# %%
from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import cellw1
from cellw1.datasets import synthetic_perturbation
from cellw1.eval.metrics import energy_distance, mmd
from cellw1.ot.potential import adam_kernel, build_potential, potential_step
from cellw1.ot.stepsize import StepSize, regression_step
from cellw1.pp.preprocessing import fit_preprocessor
from cellw1.pp.spaces import fit_embedding

from ._common import RESULTS, parse, parser, write_json


def make_data(d: int, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(train source, train target, test source, test target), ``n`` cells per side each."""
    genes = max(d, 1000)
    adata = synthetic_perturbation(n_control=2 * n, n_perturbed=2 * n, n_genes=genes, n_perturbations=1, seed=seed)
    pre = fit_preprocessor(adata.X)
    x = pre.transform(adata.X)
    if d < genes:
        x = fit_embedding("pca", x, config=cellw1.EmbeddingConfig(n_components=d), seed=seed).encode(x)
    is_control = (adata.obs["condition"] == "control").to_numpy()
    src, tgt = x[is_control], x[~is_control]
    return src[:n], tgt[:n], src[n:], tgt[n:]


def per_step_ms(step, n_steps: int = 200, warmup: int = 20) -> float:
    """Milliseconds per call of ``step``, averaged over ``n_steps`` calls after ``warmup``."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    return (time.perf_counter() - start) / n_steps * 1e3


def step_costs(source: np.ndarray, target: np.ndarray, config: cellw1.W1Config) -> tuple[float, float]:
    """Milliseconds per potential step and per step-size regression step of ``config`` on these data."""
    xs, xt = torch.from_numpy(source), torch.from_numpy(target)
    n, m, b = len(xs), len(xt), config.batch_size
    g = torch.Generator().manual_seed(0)
    potential = build_potential(xs.shape[1], config)
    opt = torch.optim.Adam(potential.parameters(), lr=1e-3, betas=config.potential_betas, **adam_kernel(xs.device))
    eta_net = StepSize(xs.shape[1], config.step_hidden)
    eta_opt = torch.optim.Adam(eta_net.parameters(), lr=1e-3, **adam_kernel(xs.device))
    eta = torch.rand(n)

    def p_step() -> None:
        potential_step(potential, opt, xs[torch.randint(n, (b,), generator=g)], xt[torch.randint(m, (b,), generator=g)])

    def s_step() -> None:
        i = torch.randint(n, (b,), generator=g)
        regression_step(eta_net, eta_opt, xs[i], eta[i])

    return per_step_ms(p_step), per_step_ms(s_step)


def score(moved: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MMD and energy distance (on at most 2,000 cells) of ``moved`` against ``target``."""
    return {"mmd": mmd(moved, target, max_points=2000), "energy": energy_distance(moved, target, max_points=2000)}


def w1_case(d: int, n: int, config: cellw1.W1Config, label: str, data=None) -> dict:
    """Time and score one W1 fit of ``config`` at dimension ``d`` and ``n`` cells per side (``data`` or new ones)."""
    src, tgt, test_src, test_tgt = data if data is not None else make_data(d, n)
    p_ms, s_ms = step_costs(src, tgt, config)
    start = time.perf_counter()
    tmap = cellw1.fit_map(src, tgt, config, seed=0)
    seconds = time.perf_counter() - start
    row = {
        "method": label,
        "d": d,
        "n_per_side": n,
        "potential_ms_per_step": p_ms,
        "step_size_ms_per_step": s_ms,
        "fit_seconds": seconds,
        "potential_steps": int(tmap.info.get("potential_steps", -1)),
        "val_dual": tmap.info["potential_val_dual"],
        **score(tmap.transport(test_src), test_tgt),
        "identity": score(test_src, test_tgt),
    }
    print(
        f"{label:10s} d={d:5d} n={n:6d}: potential {p_ms:5.2f} ms/step, step size {s_ms:5.2f} ms/step, "
        f"fit {seconds:6.1f} s, held-out mmd {row['mmd']:.5f} (identity {row['identity']['mmd']:.5f})",
        flush=True,
    )
    return row


def w2_case(d: int, n: int, iters: int, data) -> dict:
    """Time and score one W2/ICNN fit of ``iters`` outer iterations, with the time to its best step."""
    src, tgt, test_src, test_tgt = data
    config = cellw1.W2Config(n_iters=iters, eval_every=max(iters // 20, 1))
    start = time.perf_counter()
    w2 = cellw1.fit_w2(src, tgt, config, seed=0)
    seconds = time.perf_counter() - start
    best = int(w2.info.get("best_step", iters))
    row = {
        "method": "w2_icnn",
        "d": d,
        "n_per_side": n,
        "fit_seconds": seconds,
        "iters": iters,
        "best_step": best,
        "seconds_to_best": seconds * best / iters,
        **score(w2.transport(test_src), test_tgt),
    }
    print(
        f"w2_icnn    d={d:5d} n={n:6d}: {iters} outer iterations in {seconds:6.1f} s, best at {best} "
        f"(~{row['seconds_to_best']:.1f} s), held-out mmd {row['mmd']:.5f}",
        flush=True,
    )
    return row


def plot(rows: list[dict], folder: Path) -> list[Path]:
    """Whole-fit seconds against d (n = 4,000) and against n (d = 50), log-log, one PNG each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cellw1.pl import save_figure

    paths = []
    for key, fixed, name in (
        ("d", ("n_per_side", 4000), "speed_vs_dim.png"),
        ("n_per_side", ("d", 50), "speed_vs_cells.png"),
    ):
        fig = Figure(figsize=(5, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for method in ("w1", "w2_icnn"):
            pts = sorted((r[key], r["fit_seconds"]) for r in rows if r["method"] == method and r[fixed[0]] == fixed[1])
            if pts:
                ax.plot(*zip(*pts, strict=False), "o-", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dimension d" if key == "d" else "cells per side")
        ax.set_ylabel("whole fit (s)")
        ax.set_title(f"{fixed[0]} = {fixed[1]}")
        ax.legend()
        fig.tight_layout()
        paths.append(save_figure(fig, folder / name))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """Run the cases, write them with the machine and the config, and plot the seconds."""
    p = parser(__doc__, name="speed", out=RESULTS, quick={"dims": "2", "cells": "", "per_side": 500, "w2_iters": 20})
    p.add_argument("--dims", default="2,50,1000,7000")
    p.add_argument("--cells", default="1000,4000,16000,64000")
    p.add_argument("--per-side", type=int, default=4000, help="cells per side of the cases over d (%(default)s)")
    p.add_argument("--w2-iters", type=int, default=2000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parse(p, argv)
    torch.set_num_threads(args.threads)
    config = cellw1.W1Config()
    rows = run_cases(args, config)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    write_json(args.out / "speed.json", {"machine": machine, "config": config.to_dict(), "results": rows}, args)
    pngs = plot(rows, args.out)
    print(f"and {', '.join(p.name for p in pngs)}")


def run_cases(args, config: cellw1.W1Config) -> list[dict]:
    """The W1 cases over d and n, the paper's schedule and W2 at d = 50; prints the W2 / W1 ratio."""
    n = args.per_side
    rows: list[dict] = []
    for d in (int(x) for x in args.dims.split(",") if x):
        data = make_data(d, n)
        rows.append(w1_case(d, n, config, "w1", data))
        if d == 50:
            paper = cellw1.W1Config(potential_iters=10_000, step_iters=10_000, patience=None)
            rows.append(w1_case(d, n, paper, "w1_paper_schedule", data))
            rows.append(w2_case(d, n, args.w2_iters, data))
    for cells in (int(x) for x in args.cells.split(",") if x):
        if cells != n:
            rows.append(w1_case(50, cells, config, "w1"))
    w1 = next((r for r in rows if r["method"] == "w1" and r["d"] == 50 and r["n_per_side"] == n), None)
    w2 = next((r for r in rows if r["method"] == "w2_icnn"), None)
    if w1 and w2:
        print(
            f"d=50, n={n}: W2 needs {w2['seconds_to_best']:.1f} s to reach its best state, "
            f"W1 {w1['fit_seconds']:.1f} s "
            f"for the whole fit: {w2['seconds_to_best'] / w1['fit_seconds']:.1f}x; held-out mmd W1 {w1['mmd']:.5f}, "
            f"W2 {w2['mmd']:.5f}",
            flush=True,
        )
    return rows
