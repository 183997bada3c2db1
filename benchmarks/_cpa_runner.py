"""Fit CPA on one split and predict its held-out control cells; a helper of ``baselines.py --cpa-python``.

Runs in CPA's own environment (it imports ``cpa``, never ``cellw1``: cpa-tools pins
torch < 2 and scvi-tools < 1, which cellw1 cannot share)::

    python _cpa_runner.py WORKDIR EPOCHS

``WORKDIR/train.h5ad``: training cells, log1p expression on cellw1's scale, ``obs["condition"]``
``control`` / ``perturbed``; ``WORKDIR/test_control.h5ad``: held-out control cells. CPA is set
up as its tutorials do for log-normalised data (``is_count_data=False``, Gaussian
reconstruction), trained for at most EPOCHS epochs (CPA's defaults otherwise: 90/10 random
train/validation split, early stopping checked every 10 epochs), and predicts each held-out
control cell's counterfactual by relabelling it ``perturbed`` (``model.predict``, the mean of
the decoder). Writes ``WORKDIR/pred.npy`` and ``WORKDIR/info.json`` (seconds, versions).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    workdir, epochs = Path(sys.argv[1]), int(sys.argv[2])
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    import anndata as ad
    import cpa
    import numpy as np
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    train = ad.read_h5ad(workdir / "train.h5ad")
    test = ad.read_h5ad(workdir / "test_control.h5ad")
    start = time.perf_counter()
    cpa.CPA.setup_anndata(train, perturbation_key="condition", control_group="control", is_count_data=False,
                          max_comb_len=1)
    model = cpa.CPA(train, recon_loss="gauss")
    model.train(max_epochs=epochs, use_gpu=False, batch_size=128, enable_progress_bar=False)
    fit_seconds = time.perf_counter() - start
    test.obs["condition"] = pd.Categorical(["perturbed"] * test.n_obs, categories=["control", "perturbed"])
    model.predict(test, batch_size=256, n_samples=1)
    pred = np.asarray(test.obsm["CPA_pred"], dtype=np.float32)
    np.save(workdir / "pred.npy", pred)
    versions = {p: importlib.metadata.version(p) for p in ("cpa-tools", "scvi-tools", "torch", "anndata")}
    epochs_run = len(model.epoch_history["epoch"]) if hasattr(model, "epoch_history") else None
    (workdir / "info.json").write_text(json.dumps({"fit_seconds": fit_seconds, "versions": versions,
                                                   "max_epochs": epochs, "epochs_logged": epochs_run}))


if __name__ == "__main__":
    main()
