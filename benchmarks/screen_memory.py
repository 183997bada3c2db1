"""Peak memory and time of fit_conditional against the number of perturbations (issue 23, scale).

SYNTHETIC data (cellw1.datasets.synthetic_screen): 500 genes, 150 cells per perturbation, 4,000
controls, PCA space, one torch thread. Each size runs in a fresh process (peak RSS from
``resource``). Run with the PYTHONPATH of the code to measure, e.g. main's src for "before"::

    PYTHONPATH=src python -m benchmarks screen_memory write 20 80 300    # the data, once
    PYTHONPATH=src python -m benchmarks screen_memory fit 20             # one size; prints a JSON line

The data go to ``cellw1-screen-memory`` in the temporary folder (``--data`` to change it).
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ._common import load, one_thread, parse, parser

DATA = Path(tempfile.gettempdir()) / "cellw1-screen-memory"
#: shortened schedules (the same for before and after): memory is set by the data and the conditions
SCHEDULE = {"potential_iters": 300, "regression_iters": 100, "energy_iters": 100}


def write(folder: Path, sizes: list[int]) -> None:
    """One data set per number of perturbations."""
    folder.mkdir(exist_ok=True)
    for n in sizes:
        load("synthetic_screen", n, 4_000, 500, mean_cells=150, cells_range=(150, 150), path=folder / f"screen{n}.h5ad")


def fit(folder: Path, n: int) -> dict:
    """Fit the data set of ``n`` perturbations; its seconds and the process's peak memory."""
    import anndata as ad

    import cellw1

    one_thread()
    adata = ad.read_h5ad(folder / f"screen{n}.h5ad")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    cellw1.fit_conditional(
        adata, "perturbation", "non-targeting", config=cellw1.ConditionalConfig(**SCHEDULE), progress=False
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {
        "perturbations": n,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_gib": round(peak, 2),
        "data_loaded_gib": round(before, 2),
        "code": cellw1.__file__,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``write`` the data sets of the given sizes, or ``fit`` one and print its peak memory and time as JSON."""
    p = parser(__doc__, name="screen_memory")
    p.add_argument("verb", choices=("write", "fit"))
    p.add_argument("sizes", type=int, nargs="+", help="numbers of perturbations (fit: one)")
    p.add_argument("--data", type=Path, default=DATA, help="folder of the data sets (%(default)s)")
    args = parse(p, argv)
    if args.verb == "write":
        write(args.data, args.sizes)
        return
    if len(args.sizes) != 1:
        p.error("fit takes one size: each size runs in a fresh process")
    print(json.dumps(fit(args.data, args.sizes[0])))
