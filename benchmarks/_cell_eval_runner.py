"""Run cell-eval's full profile on prediction files; a helper of ``cell_eval_papalexi.py``.

Runs in the *cell-eval* environment (it imports ``cell_eval``, never ``cellw1``), so
cell-eval and its dependencies stay out of cellw1's own environment::

    python _cell_eval_runner.py REAL.h5ad OUT.json NAME=PRED.h5ad [NAME=PRED.h5ad ...]

For each prediction file, ``MetricsEvaluator(pred, real, control_pert="non-targeting",
pert_col="target", num_threads=1).compute(profile="full")`` with cell-eval's own defaults
(DE by pdex: Mann-Whitney U against the control group, Benjamini-Hochberg FDR 0.05,
``is_log1p=True``). A file cell-eval refuses (e.g. negative values) is reported with
cell-eval's message, never altered. Metrics that fail inside cell-eval (it logs them and
goes on) are listed under ``metric_errors``. Writes one JSON to OUT.json.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before cell_eval (and numpy) are imported, in main


class _Errors(logging.Handler):
    """Collects the errors cell-eval logs (a failing metric is logged, not raised)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main() -> None:
    real, out, *preds = sys.argv[1:]
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    from cell_eval import MetricsEvaluator

    errors = _Errors()
    logging.getLogger("cell_eval").addHandler(errors)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cell_eval_") as workdir:
        for item in preds:
            name, path = item.split("=", 1)
            errors.messages.clear()
            start = time.perf_counter()
            entry: dict = {"refused": None, "per_target": {}, "metric_errors": []}
            try:
                evaluator = MetricsEvaluator(
                    adata_pred=path,
                    adata_real=real,
                    control_pert="non-targeting",
                    pert_col="target",
                    num_threads=1,
                    outdir=os.path.join(workdir, name),
                )
                table, _ = evaluator.compute(profile="full", write_csv=False)
            except Exception as exc:  # cell-eval's refusal of the file, reported as the result
                entry["refused"] = f"{type(exc).__name__}: {exc}"
            else:
                for row in table.to_dicts():
                    pert = str(row.pop("perturbation"))
                    entry["per_target"][pert] = {k: _clean(v) for k, v in row.items()}
            entry["metric_errors"] = list(errors.messages)
            entry["seconds"] = time.perf_counter() - start
            results[name] = entry
    versions = {p: importlib.metadata.version(p) for p in ("cell-eval", "pdex", "anndata", "scanpy", "polars")}
    with open(out, "w") as fh:
        json.dump({"versions": versions, "results": results}, fh)


if __name__ == "__main__":
    main()
