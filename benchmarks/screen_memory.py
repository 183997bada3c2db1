"""Peak memory and time of fit_conditional against the number of perturbations (issue 23, scale).

SYNTHETIC data (cellw1.datasets.synthetic_screen) written to disk, a fixed number of cells per
perturbation, PCA space, one torch thread. Each size runs in a fresh process (peak RSS from
``resource``); the fit reads the file from disk (``--in-memory`` loads it first). Run with the
PYTHONPATH of the code to measure, e.g. main's src for "before"::

    PYTHONPATH=src python -m benchmarks screen_memory write 300 1000 3000   # the data, once
    PYTHONPATH=src python -m benchmarks screen_memory fit 300               # one size; prints a JSON line
    PYTHONPATH=src python -m benchmarks screen_memory fit 300 --record after # ... and adds it to the results
    python -m benchmarks screen_memory table before after                    # the recorded lines, as a table

The data go to ``cellw1-screen-memory`` in the temporary folder (``--data`` to change it);
``--record NAME`` appends the line to ``benchmarks/results/screen/memory_NAME.json``.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import RESULTS, load, markdown_table, one_thread, parse, parser, read_json, write_json

DATA = Path(tempfile.gettempdir()) / "cellw1-screen-memory"
#: shortened schedules (the same for before and after): memory is set by the data and the conditions
SCHEDULE = {"potential_iters": 300, "regression_iters": 100, "energy_iters": 100}


def data_file(folder: Path, n: int, cells: int, controls: int, genes: int) -> Path:
    """The file of one data set."""
    return folder / f"screen{n}_c{cells}_k{controls}_g{genes}.h5ad"


def write(folder: Path, sizes: list[int], cells: int, controls: int, genes: int) -> None:
    """One data set per number of perturbations, written block by block."""
    folder.mkdir(exist_ok=True)
    for n in sizes:
        path = data_file(folder, n, cells, controls, genes)
        if not path.exists():
            load("synthetic_screen", n, controls, genes, mean_cells=cells, cells_range=(cells, cells), path=path)


def fit(path: Path, in_memory: bool, whole_screen: bool, schedule: dict) -> dict:
    """Fit one data set; its seconds (in all and per phase) and the process's peak memory.

    ``whole_screen``: run :func:`cellw1.screen` (the model, the response tests, the table and the
    clusters) instead of :func:`cellw1.fit_conditional` alone. ``schedule``: the
    :class:`cellw1.ConditionalConfig` steps to change (empty: the defaults).
    """
    import anndata as ad

    import cellw1

    one_thread()
    data = ad.read_h5ad(path) if in_memory else path
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before, cpu_before = usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    config = cellw1.ConditionalConfig(**schedule)
    if whole_screen:
        model = cellw1.screen(data, "perturbation", "non-targeting", config=config, progress=False).model
    else:
        model = cellw1.fit_conditional(data, "perturbation", "non-targeting", config=config, progress=False)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss / 2**20
    info = {**model.map.info, **model.info}
    return {
        "perturbations": len(model.conditions),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime - cpu_before, 1),
        "potential_seconds": round(info.get("potential_seconds", float("nan")), 1),
        "step_size_seconds": round(info.get("step_size_seconds", float("nan")), 1),
        "calibration_seconds": round(info.get("calibration_seconds", float("nan")), 1),
        "peak_gib": round(peak, 2),
        "before_fit_gib": round(before, 2),
        "in_memory": in_memory,
        "function": "screen" if whole_screen else "fit_conditional",
        "schedule": "shortened" if schedule else "default",
        "load_average": round(os.getloadavg()[0], 2),
        "code": cellw1.__file__,
        "code_commit": _commit(Path(cellw1.__file__).parent),
    }


def _commit(folder: Path) -> str | None:
    """The commit of the measured code's checkout (``None`` outside git), ``+`` when its files changed."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    return (commit + ("+" if git("status", "--porcelain", ".") else "")) if commit else None


def record(name: str, line: dict, args: object) -> None:
    """Append one measured line to ``memory_NAME.json`` (one entry per size, the latest kept)."""
    path = RESULTS / "screen" / f"memory_{name}.json"
    rows = read_json(path).get("rows", []) if path.exists() else []
    same = (line["perturbations"], line["function"])
    rows = [r for r in rows if (r["perturbations"], r.get("function", "fit_conditional")) != same] + [line]
    rows.sort(key=lambda r: (r.get("function", "fit_conditional"), r["perturbations"]))
    write_json(path, {"rows": rows}, args)  # type: ignore[arg-type]


def table(names: Sequence[str]) -> str:
    """The recorded lines of ``memory_NAME.json`` for each name, as one markdown table."""
    lines = []
    for name in names:
        path = RESULTS / "screen" / f"memory_{name}.json"
        for r in read_json(path)["rows"] if path.exists() else []:
            phases = (r.get("potential_seconds"), r.get("step_size_seconds"), r.get("calibration_seconds"))
            function = r.get("function", "fit_conditional")
            lines.append((name, function, r["perturbations"], r["seconds"], *phases, r["peak_gib"], r["load_average"]))
    header = ("code", "function", "perturbations", "seconds", "phase 1 s", "phase 2 s", "calibration s", "peak GiB")
    return markdown_table((*header, "load"), lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``write`` the data sets of the given sizes, or ``fit`` one and print its peak memory and time as JSON."""
    p = parser(__doc__, name="screen_memory")
    p.add_argument("verb", choices=("write", "fit", "table"))
    p.add_argument("sizes", nargs="*", help="numbers of perturbations (fit: one); table: the record names")
    p.add_argument("--data", type=Path, default=DATA, help="folder of the data sets (%(default)s)")
    p.add_argument("--cells", type=int, default=100, help="cells per perturbation (%(default)s)")
    p.add_argument("--controls", type=int, default=10_000, help="control cells (%(default)s)")
    p.add_argument("--genes", type=int, default=500, help="genes (%(default)s)")
    p.add_argument("--in-memory", action="store_true", help="load the file before the fit (default: from disk)")
    p.add_argument("--screen", action="store_true", help="run cellw1.screen (model and tests), not fit_conditional")
    p.add_argument(
        "--default-schedule", action="store_true", help="ConditionalConfig's default steps, not the shortened ones"
    )
    p.add_argument("--record", help="append the result to benchmarks/results/screen/memory_RECORD.json")
    args = parse(p, argv)
    if args.verb == "table":
        print(table(args.sizes or ["before", "after"]))
        return
    sizes = [int(n) for n in args.sizes]
    if not sizes:
        p.error(f"{args.verb} takes numbers of perturbations")
    if args.verb == "write":
        write(args.data, sizes, args.cells, args.controls, args.genes)
        return
    if len(sizes) != 1:
        p.error("fit takes one size: each size runs in a fresh process")
    path = data_file(args.data, sizes[0], args.cells, args.controls, args.genes)
    line = {
        **fit(path, args.in_memory, args.screen, {} if args.default_schedule else SCHEDULE),
        "cells": args.cells,
        "controls": args.controls,
        "genes": args.genes,
    }
    print(json.dumps(line))
    if args.record:
        record(args.record, line, args)
