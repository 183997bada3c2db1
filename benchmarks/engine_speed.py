"""Speed of the W1 engine: ms per step of each phase and seconds per whole fit.

For d in {2, 50, 1000} with 4,000 cells per side (a Gaussian against a shifted, rescaled
Gaussian), fits the default :class:`cellw1.W1Config` and prints ms per potential step,
ms per step-size step, the whole fit in seconds and the final validation dual. Per-step
times are measured on a separate warm loop of plain steps (no validation), so they are
the cost of one optimisation step. Results go to ``benchmarks/results/engine_speed.json``.

Run on a quiet machine (one torch process at a time)::

    python benchmarks/engine_speed.py [--dims 2,50,1000] [--n 4000] [--threads 2]
"""

# %%
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import cellw1
from cellw1.potential import adam_kernel, build_potential, potential_step
from cellw1.stepsize import StepSize, regression_step


def per_step_ms(step, n_steps: int = 300, warmup: int = 30) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    return (time.perf_counter() - start) / n_steps * 1e3


def bench_dim(d: int, n: int, config: cellw1.W1Config, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(n, d)).astype(np.float32)
    target = (1.5 * rng.normal(size=(n, d)) + 1.0).astype(np.float32)
    xs, xt = torch.from_numpy(source), torch.from_numpy(target)
    b = config.batch_size
    g = torch.Generator().manual_seed(0)

    potential = build_potential(d, config)
    opt = torch.optim.Adam(potential.parameters(), lr=1e-3, betas=config.potential_betas, **adam_kernel(xs.device))

    def p_step() -> None:
        i, j = torch.randint(n, (b,), generator=g), torch.randint(n, (b,), generator=g)
        potential_step(potential, opt, xs[i], xt[j])

    eta_net = StepSize(d, config.step_hidden)
    eta_opt = torch.optim.Adam(eta_net.parameters(), lr=1e-3, **adam_kernel(xs.device))
    eta = torch.rand(n)

    def s_step() -> None:
        i = torch.randint(n, (b,), generator=g)
        regression_step(eta_net, eta_opt, xs[i], eta[i])

    potential_ms, step_ms = per_step_ms(p_step), per_step_ms(s_step)
    start = time.perf_counter()
    tmap = cellw1.fit_map(source, target, config, seed=seed)
    seconds = time.perf_counter() - start
    return {
        "d": d,
        "n_per_side": n,
        "potential_ms_per_step": potential_ms,
        "step_size_ms_per_step": step_ms,
        "fit_seconds": seconds,
        "potential_seconds": tmap.info["potential_seconds"],
        "step_size_seconds": tmap.info["step_size_seconds"],
        "potential_iters": config.potential_iters,
        "step_iters": config.step_iters,
        "val_dual": tmap.info["potential_val_dual"],
        "val_energy": tmap.info["step_size_val_energy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="2,50,1000")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "engine_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = cellw1.W1Config()
    rows = []
    for d in map(int, args.dims.split(",")):
        row = bench_dim(d, args.n, config)
        rows.append(row)
        print(
            f"d={d:5d}  potential {row['potential_ms_per_step']:6.2f} ms/step  step size {row['step_size_ms_per_step']:6.2f} ms/step  "
            f"fit {row['fit_seconds']:6.1f} s ({row['potential_iters']} + {row['step_iters']} steps)  "
            f"val dual {row['val_dual']:.4f}  val energy {row['val_energy']:.4f}",
            flush=True,
        )
    machine = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpus": __import__("os").cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "config": config.to_dict(), "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
