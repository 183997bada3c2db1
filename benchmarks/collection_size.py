"""Bytes on disk, load time and memory of a shared-space collection: its embedding stored once, or copied per model.

A :func:`cellw1.datasets.synthetic_screen` (SYNTHETIC; ``--perturbations`` perturbations,
1,000 controls, ``--genes`` genes) is fitted once with ``cellw1.fit_all(..., shared_space=True,
out=...)`` (PCA 50, ``--method``, one torch thread), which stores the shared PCA once in
``embedding.safetensors``. The same models are then written in the layout of collections
saved before that file existed: each sub-folder by :meth:`PerturbationModel.save`, with its own
copy of the PCA, and the same ``collection.json``. For each layout: bytes on disk (model
files, ``model.json``, the shared file), seconds to load the collection (median of
``--loads``), the Python-allocated memory of the loaded collection (tracemalloc: numpy
arrays, not torch tensors) and how many embedding objects it holds.

    python -m benchmarks collection_size
    python -m benchmarks collection_size --perturbations 200 --method w1
    python -m benchmarks collection_size --quick
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cellw1
from cellw1.datasets import synthetic_screen
from cellw1.tl.model import COLLECTION_FILE

from ._common import RESULTS, markdown_table, one_thread, parse, parser, write_json, write_text

OUT = RESULTS / "collection_size.json"
KEY, CONTROL = "perturbation", "non-targeting"
#: W1 at its default network sizes (what is saved) with few steps (the time): sizes, not quality, are measured
SHORT_W1 = cellw1.W1Config(potential_iters=20, step_iters=20, regression_iters=20, energy_iters=20, eval_every=10)


def measure(directory: Path, loads: int) -> dict[str, Any]:
    """Bytes of each kind of file under ``directory``, and the collection's load seconds and memory."""
    files = [p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")]
    sizes = {
        "model_files": sum(p.stat().st_size for p in files if p.name == "model.safetensors"),
        "model_json": sum(p.stat().st_size for p in files if p.name == "model.json"),
        "shared_embedding": sum(p.stat().st_size for p in files if p.name == "embedding.safetensors"),
        "total": sum(p.stat().st_size for p in files),
    }
    seconds = []
    for _ in range(loads):
        start = time.perf_counter()
        cellw1.load(directory)
        seconds.append(time.perf_counter() - start)
    tracemalloc.start()
    loaded = cellw1.load(directory)
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert isinstance(loaded, cellw1.ModelCollection)
    embeddings = len({id(model.embedding) for model in loaded.values()})
    return {
        "bytes": sizes,
        "load_seconds": statistics.median(seconds),
        "traced_bytes": memory,
        "embeddings": embeddings,
    }


def copied_layout(collection: cellw1.ModelCollection, shared: Path, directory: Path) -> Path:
    """The collection as written before ``embedding.safetensors``: every sub-folder with its own copy."""
    for label, model in collection.items():
        model.save(directory / label)
    shutil.copy(shared / COLLECTION_FILE, directory / COLLECTION_FILE)
    return directory


def main(argv: Sequence[str] | None = None) -> None:
    """Fit the screen once, write both layouts, measure each; write the JSON and markdown results."""
    p = parser(__doc__, name="collection_size", seed=0, out=OUT, quick={"perturbations": 5, "genes": 200})
    p.add_argument("--perturbations", type=int, default=50, help="perturbations of the screen (%(default)s)")
    p.add_argument("--genes", type=int, default=2000, help="genes (%(default)s)")
    p.add_argument("--method", default="mean_shift", choices=["mean_shift", "w1"], help="(%(default)s)")
    p.add_argument("--loads", type=int, default=5, help="loads timed per layout (%(default)s)")
    args = parse(p, argv)
    one_thread()
    adata = synthetic_screen(args.perturbations, 1_000, args.genes, seed=args.seed)
    config = SHORT_W1 if args.method == "w1" else None
    load_before = os.getloadavg()[0]
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shared = Path(tmp) / "shared"
        collection = cellw1.fit_all(
            adata, KEY, CONTROL, method=args.method, config=config, space="pca", shared_space=True,
            out=shared, progress=False, seed=args.seed,
        )  # fmt: skip
        copies = copied_layout(collection, shared, Path(tmp) / "copies")
        rows["copy per model (before)"] = measure(copies, args.loads)
        rows["stored once"] = measure(shared, args.loads)
    table = markdown_table(
        ["layout", "total bytes", "model files", "model.json", "embedding.safetensors", "load s", "traced MB", "embeddings"],
        [
            [name, r["bytes"]["total"], r["bytes"]["model_files"], r["bytes"]["model_json"],
             r["bytes"]["shared_embedding"], r["load_seconds"], r["traced_bytes"] / 2**20, r["embeddings"]]
            for name, r in rows.items()
        ],
    )  # fmt: skip
    print(table, flush=True)
    payload = {"models": len(collection), "layouts": rows, "load_before": load_before, "load_after": os.getloadavg()[0]}
    write_json(args.out, payload, args)
    write_text(Path(args.out).with_suffix(".md"), table + "\n")
