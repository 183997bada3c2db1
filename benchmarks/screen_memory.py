"""Peak memory and time of fit_conditional against the number of perturbations (issue 23, scale).

SYNTHETIC data (cellw1.datasets.synthetic_screen): 500 genes, 150 cells per perturbation, 4,000
controls, PCA space, one torch thread. Each size runs in a fresh process (peak RSS from
``resource``). Run with the PYTHONPATH of the code to measure, e.g. main's src for "before"::

    PYTHONPATH=src python benchmarks/screen_memory.py write 20 80 300    # the data, once
    PYTHONPATH=src python benchmarks/screen_memory.py fit 20             # one size; prints a JSON line
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

DATA = Path("/tmp/cellw1-screen-memory")
#: shortened schedules (the same for before and after): memory is set by the data and the conditions
SCHEDULE = {"potential_iters": 300, "regression_iters": 100, "energy_iters": 100}


def main() -> None:
    verb, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
    if verb == "write":
        from cellw1.datasets import synthetic_screen

        DATA.mkdir(exist_ok=True)
        for n in sizes:
            synthetic_screen(n, 4_000, 500, mean_cells=150, cells_range=(150, 150), path=DATA / f"screen{n}.h5ad")
        return
    import anndata as ad
    import torch

    import cellw1

    torch.set_num_threads(1)
    (n,) = sizes
    adata = ad.read_h5ad(DATA / f"screen{n}.h5ad")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    cellw1.fit_conditional(
        adata, "perturbation", "non-targeting", config=cellw1.ConditionalConfig(**SCHEDULE), progress=False
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        json.dumps(
            {
                "perturbations": n,
                "seconds": round(time.perf_counter() - start, 1),
                "peak_gib": round(peak, 2),
                "data_loaded_gib": round(before, 2),
                "code": cellw1.__file__,
            }
        )
    )


if __name__ == "__main__":
    main()
