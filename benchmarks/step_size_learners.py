"""Step-size learners compared: minibatch OT regression (default) against the paper's GAN.

Part 1, toys. For each toy and seed, ONE potential is fitted and both learners are trained on
it (same directions, same splits), so the comparison isolates the step size. Reported:
bookshelf Spearman (order kept: +1), circles inner -> inner fraction, energy distance of the
transported source to the target on every toy, and the seconds of phase 2. The worst seed is
reported, not the best.

Part 2, the shared real datasets (``../shared/data``), with :func:`cellw1.evaluate` (iid
split, top-50 DE genes): MMD and r2 of w1 with each learner, and fit seconds.

Writes ``benchmarks/results/step_size_learners.json``. Run on a quiet machine::

    python -m benchmarks step_size_learners [--seeds 0,1,2] [--skip-real]
"""

# %%
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

import cellw1
from cellw1.checks import as_points, split_validation
from cellw1.datasets import load_toy
from cellw1.eval.metrics import energy_distance
from cellw1.eval.monotonicity import bookshelf_spearman, circles_inner_to_inner
from cellw1.ot.potential import fit_potential
from cellw1.ot.stepsize import fit_step_size

from ._common import RESULTS, data_dir, load, parse, parser, write_json

TOYS = ("bookshelf", "circles", "swiss_roll", "moons", "8gaussians", "checkerboard")


def learner_configs(base: cellw1.W1Config) -> dict[str, cellw1.W1Config]:
    """The default learner, and the paper's GAN (10,000 steps at lr 1e-4, no early stop) on the same potential."""
    paper = cellw1.W1Config.paper()
    gan = base.replace(
        step_size_learner="gan",
        step_iters=paper.step_iters,
        step_lr=paper.step_lr,
        step_betas=paper.step_betas,
        patience=None,
    )
    # the GAN runs the paper's full 10,000 steps (its best validation state is still kept)
    return {"minibatch_ot": base.replace(step_size_learner="minibatch_ot"), "gan": gan}


def toy_run(name: str, seed: int, base: cellw1.W1Config, learners: list[str]) -> dict[str, dict[str, float]]:
    """One potential on toy ``name`` and ``seed``, then each of ``learners`` fitted on it.

    Per learner: the energy distance to the target and the seconds, with the monotonicity checks of the
    bookshelf and circles toys.
    """
    toy = load_toy(name, n=1000, seed=seed)
    src, tgt = as_points(toy.source, "source"), as_points(toy.target, "target")
    gen = torch.Generator().manual_seed(seed)
    train_s, val_s = split_validation(len(src), base.val_fraction, gen)
    train_t, val_t = split_validation(len(tgt), base.val_fraction, gen)
    data = dict(source=src[train_s], target=tgt[train_t], val_source=src[val_s], val_target=tgt[val_t])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        potential = fit_potential(config=base, generator=gen, **data).potential
    out = {}
    for learner, config in learner_configs(base).items():
        if learner not in learners:
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            start = time.perf_counter()
            fit = fit_step_size(
                potential,
                config=config,
                generator=torch.Generator().manual_seed(seed),
                rng=np.random.default_rng(seed),
                **data,
            )
            seconds = time.perf_counter() - start
        tmap = cellw1.TransportMap(potential, fit.step_size, config)
        moved = tmap.transport(toy.source)
        row = {"energy": energy_distance(moved, toy.target, max_points=2000), "seconds": seconds}
        if name == "bookshelf":
            row["spearman"] = bookshelf_spearman(toy.source, moved)
            row["shelf_range"] = [float(np.percentile(moved[:, 0], 1)), float(np.percentile(moved[:, 0], 99))]
        if name == "circles":
            row["inner_to_inner"] = circles_inner_to_inner(toy, moved)
        out[learner] = row
    return out


REAL = {
    "zhao_panobinostat": ("zhao", "condition", "ctrl", ["panobinostat"], {}),
    "papalexi_strong5": (
        "papalexi",
        "target",
        "non-targeting",
        ["STAT1", "JAK2", "IFNGR1", "IFNGR2", "SMAD4"],
        {},
    ),
    "kang_ifnb_pca": ("kang", "condition", "control", ["stimulated"], {"space": "pca"}),
}


def real_run(base: cellw1.W1Config, learners: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Held-out medians of W1 with each step-size learner on the real data sets of :data:`REAL`."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, (dataset, condition, control, perts, extra) in REAL.items():
        adata = load(dataset)  # Papalexi: grna_frac >= 0.8
        out[key] = {}
        for learner, config in learner_configs(base).items():
            if learner not in learners:
                continue
            result = cellw1.evaluate(
                adata,
                condition,
                control,
                perts,
                methods=["w1"],
                config=config,
                metrics=["mmd", "r2", "l2"],
                n_splits=1,
                progress=False,
                **extra,
            )
            med = result.summary().set_index("metric")["median"].to_dict()
            out[key][learner] = med
            print(
                f"  {key:20s} {learner:13s} mmd {med['mmd']:.5f} r2 {med['r2']:.4f} l2 {med['l2']:.4f} "
                f"fit {med['seconds']:.1f} s",
                flush=True,
            )
    return out


def run_toys(seeds: list[int], base: cellw1.W1Config, learners: list[str]) -> dict:
    """Every toy and seed with each learner; prints the worst seed of each."""
    toys: dict[str, dict[str, list[dict[str, float]]]] = {}
    for name in TOYS:
        toys[name] = {learner: [] for learner in learners}
        for seed in seeds:
            for learner, row in toy_run(name, seed, base, learners).items():
                toys[name][learner].append(row)
        for learner, rows in toys[name].items():
            worst = max(r["energy"] for r in rows)
            extra = ""
            if name == "bookshelf":
                extra = f" worst spearman {min(r['spearman'] for r in rows):+.4f}"
            if name == "circles":
                extra = f" worst inner->inner {min(r['inner_to_inner'] for r in rows):.3f}"
            print(
                f"{name:13s} {learner:13s} worst energy {worst:.4f}{extra} "
                f"seconds {np.mean([r['seconds'] for r in rows]):.1f}",
                flush=True,
            )
    return toys


def main(argv: Sequence[str] | None = None) -> None:
    """Compare the learners on the toys (and the real data when present) and write the results."""
    p = parser(
        __doc__,
        name="step_size_learners",
        seeds="0,1,2",
        out=RESULTS / "step_size_learners.json",
        quick={"seeds": [0], "skip_real": True, "learners": "minibatch_ot"},
    )
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--learners", default="minibatch_ot,gan", help="which learners to run")
    p.add_argument("--tag", default="", help="suffix of the output file name (step_size_learners_TAG.json)")
    args = parse(p, argv)
    base = cellw1.W1Config()
    learners = args.learners.split(",")
    toys = run_toys(args.seeds, base, learners)
    real = {} if args.skip_real or not data_dir().exists() else real_run(base, learners)
    out = args.out.with_name(f"{args.out.stem}{args.tag}{args.out.suffix}")
    write_json(out, {"config": base.to_dict(), "seeds": args.seeds, "toys": toys, "real": real}, args)
