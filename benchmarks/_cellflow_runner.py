"""Train CellFlow and predict; a helper of ``conditional_papalexi.py``.

Runs in CellFlow's own environment (the python of ``$CELLW1_CELLFLOW_PYTHON``: JAX,
``cellflow-tools``; it never imports ``cellw1``) and exchanges ``.npz`` files with the benchmark::

    python _cellflow_runner.py IN.npz OUT.npz

``IN.npz``: ``control`` (training control cells), ``perturbed`` and ``labels`` (training
perturbed cells and their condition), ``test_control`` (cells to predict from), ``names``
(conditions to predict) and ``params`` (a JSON string: iterations, batch size, widths, seed).
CellFlow's documented API: ``CellFlow(adata).prepare_data(sample_rep="X_pca", control_key=...,
perturbation_covariates={"condition": ("condition",)}, perturbation_covariate_reps=
{"condition": "onehot"})``, ``prepare_model(...)``, ``train(...)``, ``predict(...)``; the
condition representation is a one-hot vector per label in ``uns["onehot"]``.
``OUT.npz``: one array per predicted condition (``pred_<i>``), ``train_seconds``,
``predict_seconds``, ``versions``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time


def one_thread() -> None:
    """One thread for BLAS and XLA, on the CPU (set before numpy and JAX are imported)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(inp: str, out: str) -> None:
    one_thread()
    import anndata as ad
    import jax
    import numpy as np
    import optax
    import pandas as pd
    from cellflow.model import CellFlow

    data = np.load(inp, allow_pickle=False)
    params = json.loads(str(data["params"]))
    control, perturbed, labels = data["control"], data["perturbed"], data["labels"].astype(str)
    names = [str(n) for n in data["names"]]
    conditions = sorted(set(labels))
    cells = np.concatenate([control, perturbed]).astype(np.float32)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(["control"] * len(control) + list(labels)),
            "is_control": np.r_[np.ones(len(control), bool), np.zeros(len(perturbed), bool)],
        },
        index=[f"c{i}" for i in range(len(cells))],
    )
    adata = ad.AnnData(X=np.zeros((len(cells), 1), np.float32), obs=obs)
    adata.obsm["X_pca"] = cells
    eye = np.eye(len(conditions), dtype=np.float32)
    adata.uns["onehot"] = {c: eye[i] for i, c in enumerate(conditions)} | {
        "control": np.zeros(len(conditions), np.float32)
    }

    start = time.perf_counter()
    cf = CellFlow(adata, solver="otfm")
    cf.prepare_data(
        sample_rep="X_pca",
        control_key="is_control",
        perturbation_covariates={"condition": ("condition",)},
        perturbation_covariate_reps={"condition": "onehot"},
    )
    width = int(params["width"])
    cf.prepare_model(
        condition_embedding_dim=int(params["condition_dim"]),
        time_encoder_dims=(width, width),
        hidden_dims=(width, width, width),
        decoder_dims=(width, width, width),
        optimizer=optax.MultiSteps(optax.adam(float(params["lr"])), int(params["accumulate"])),
        seed=int(params["seed"]),
    )
    cf.train(
        num_iterations=int(params["iterations"]),
        batch_size=int(params["batch_size"]),
        valid_freq=10 * int(params["iterations"]),
    )
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    test = ad.AnnData(
        X=np.zeros((len(data["test_control"]), 1), np.float32),
        obs=pd.DataFrame(
            {"is_control": True, "condition": "control"}, index=[f"t{i}" for i in range(len(data["test_control"]))]
        ),
    )
    test.obsm["X_pca"] = data["test_control"].astype(np.float32)
    test.uns["onehot"] = adata.uns["onehot"]
    covariates = pd.DataFrame({"condition": pd.Categorical(names, categories=adata.obs["condition"].cat.categories)})
    covariates["is_control"] = False
    predicted = cf.predict(
        test, covariate_data=covariates, sample_rep="X_pca", rng=jax.random.PRNGKey(int(params["seed"]))
    )
    predicted = {key if isinstance(key, str) else key[0]: value for key, value in predicted.items()}
    print(sorted(predicted), file=sys.stderr)
    predict_seconds = time.perf_counter() - start
    arrays = {f"pred_{i}": np.asarray(predicted[name]) for i, name in enumerate(names)}
    versions = {p: importlib.metadata.version(p) for p in ("cellflow-tools", "jax", "flax", "optax")}
    np.savez(out, train_seconds=train_seconds, predict_seconds=predict_seconds, versions=json.dumps(versions), **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:3])
