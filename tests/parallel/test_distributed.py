"""fit_all on a Dask cluster: same models as in-process, resume, failures, unreachable scheduler.

Real clusters of two worker processes on loopback. A module-wide cluster is reached through
its address (the path of ``dask scheduler`` / ``dask worker``); one test starts its own with
``scheduler="local"``, two start a cluster whose workers are made to die. Workers are forked
from a forkserver that imported cellw1 once (fixture ``forkserver``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest
import torch
from conftest import TINY as TINY_CONFIG
from conftest import count_adata, shallow_and_deep_counts

import cellw1
import cellw1.parallel.cluster
from cellw1 import CellW1Error, ConfigError, InputError
from cellw1.cli.main import main
from cellw1.parallel.cluster import LOCAL_CLUSTER_QUIET
from cellw1.tl.model import COLLECTION_FILE, MODEL_FILE, PerturbationModel

distributed = pytest.importorskip("distributed")

TINY = TINY_CONFIG.replace(potential_iters=60, regression_iters=30, eval_every=100)
UNREACHABLE = "tcp://127.0.0.1:9"


def make_adata(n: int = 60, genes: int = 20, seed: int = 0, rare: int = 0) -> ad.AnnData:
    """Counts of a control and three perturbations ('up' and 'down' scale genes 0-3 by 4 and 1/4);
    ``rare`` adds a perturbation with that many cells (too few to fit).
    """
    groups, sizes = ["ctrl", "up", "down", "none"], [n] * 4
    if rare:
        groups, sizes = [*groups, "rare"], [*sizes, rare]
    return count_adata(
        groups,
        sizes,
        genes,
        seed=seed,
        effects={1: 4.0, 2: 0.25, 4: 2.0},
        affected=4,
        gamma=(2.0, 4.0),
        covariate=("batch", ["a", "b"]),
        gene_name="g{}",
    )


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    return make_adata()


@pytest.fixture(scope="module", autouse=True)
def forkserver() -> Iterator[None]:
    """Worker processes start from a forkserver that has imported cellw1, torch and POT once.

    Dask's default ("spawn") starts each worker as a fresh interpreter that imports all that on
    its first task (~5 s of CPU a worker, again after each restart) and finalizes torch on exit:
    ~30 s of this module's time. Dask preloads its own modules in a forkserver for the same reason.
    The workers are still separate processes, sent their data and tasks over TCP; the forkserver
    is a fresh interpreter, so a cellw1 that cannot be imported there still fails the tests.
    """
    import dask
    import distributed.utils

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        ctx = distributed.utils.get_mp_context()
        ctx.set_forkserver_preload(["distributed", "cellw1.parallel.cluster", "ot", "torch._dynamo"])
        yield


@pytest.fixture(scope="module")
def address(forkserver: None) -> Iterator[str]:
    """A two-process cluster on loopback, used through its address."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", **LOCAL_CLUSTER_QUIET
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """In-process fits use one torch thread, as the workers do (threads_per_worker=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def predictions(collection: cellw1.ModelCollection, adata: ad.AnnData) -> dict[str, np.ndarray]:
    control = adata[adata.obs["condition"] == "ctrl"]
    return {label: model.predict(control).X for label, model in collection.items()}


def test_cluster_models_equal_in_process_models(adata: ad.AnnData, address: str) -> None:
    before = adata.copy()
    here = cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", progress=False)
    there = cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", scheduler=address, progress=False)
    assert list(there) == list(here) == ["down", "none", "up"]
    assert not there.failures
    for label, expected in predictions(here, adata).items():
        np.testing.assert_array_equal(predictions(there, adata)[label], expected)
    # the shift is the right answer: 'up' raises genes 0-3, 'down' lowers them
    shift = {label: there[label].method.shift for label in there}
    assert (shift["up"][:4] > 0.5).all()
    assert (shift["down"][:4] < -0.5).all()
    assert np.abs(shift["none"]).max() < 0.5
    assert there["up"].info["n_control"] == 60
    assert there["up"].info["n_perturbed"] == 60
    assert np.array_equal(adata.X.toarray(), before.X.toarray())
    assert adata.obs.equals(before.obs)


def test_cluster_shares_the_space_as_in_process(adata: ad.AnnData, address: str) -> None:
    settings = dict(config=TINY, space="pca", shared_space=True, progress=False)
    here = cellw1.fit_all(adata, "condition", "ctrl", ["up", "down"], **settings)
    there = cellw1.fit_all(adata, "condition", "ctrl", ["up", "down"], scheduler=address, **settings)
    expected, got = predictions(here, adata), predictions(there, adata)
    for label in here:
        np.testing.assert_array_equal(got[label], expected[label])
        assert there[label].preprocessor == here["up"].preprocessor
        for a, b in zip(
            there[label].embedding.state_tensors().values(), here["up"].embedding.state_tensors().values(), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # each worker's model came back with its own copy: the collection holds one object, not one per model
    assert there["up"].embedding is there["down"].embedding


def test_cluster_fits_are_given_the_one_input_kind(address: str) -> None:
    """The kind decided once for the collection travels in the fit keywords (test_input_kind.py in process)."""
    data = shallow_and_deep_counts()  # up alone is detected as counts, down alone as log-normalised
    here = cellw1.fit_all(data, "condition", "ctrl", method="mean_shift", progress=False)
    there = cellw1.fit_all(data, "condition", "ctrl", method="mean_shift", scheduler=address, progress=False)
    assert {label: model.preprocessor.input_kind for label, model in there.items()} == {
        "up": "counts",
        "down": "counts",
    }
    expected, got = predictions(here, data), predictions(there, data)
    for label in here:
        assert there[label].preprocessor == here[label].preprocessor
        np.testing.assert_array_equal(got[label], expected[label])


def test_local_cluster_w1_equals_in_process(adata: ad.AnnData) -> None:
    labels = ["up", "down"]
    here = cellw1.fit_all(adata, "condition", "ctrl", labels, config=TINY, seed=3, progress=False)
    there = cellw1.fit_all(
        adata, "condition", "ctrl", labels, config=TINY, seed=3, scheduler="local", n_workers=2, progress=False
    )
    assert list(there) == labels
    assert not there.failures
    expected, got = predictions(here, adata), predictions(there, adata)
    for label in labels:
        np.testing.assert_array_equal(got[label], expected[label])
        assert there[label].method.name == "w1"
        assert there[label].method.info["potential_val_dual"] == here[label].method.info["potential_val_dual"]
    assert not np.array_equal(got["up"], got["down"])  # two different maps, not one copied


def test_workers_stream_from_a_shared_path(adata: ad.AnnData, address: str, tmp_path: Path) -> None:
    """Data on disk are not shipped: each worker opens the path and streams, with the in-process result."""
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    labels = ["up", "down"]
    here = cellw1.fit_all(adata, "condition", "ctrl", labels, config=TINY, seed=2, progress=False)
    there = cellw1.fit_all(
        str(path),
        "condition",
        "ctrl",
        labels,
        config=TINY,
        seed=2,
        scheduler=address,
        buffer_cells=1_000,
        progress=False,
    )
    assert list(there) == labels
    assert not there.failures
    expected, got = predictions(here, adata), predictions(there, adata)
    for label in labels:  # each group fits one buffer, so the streamed fit is the in-memory one
        np.testing.assert_allclose(got[label], expected[label], rtol=1e-5, atol=1e-5)
        assert there[label].info["streamed_from"] == str(path)


def test_layer_and_obsm_inputs_are_shipped_as_fitted_in_process(adata: ad.AnnData, address: str) -> None:
    a = adata.copy()
    a.layers["logcounts"] = np.log1p(a.X.toarray())
    a.obsm["X_emb"] = np.random.default_rng(1).normal(size=(a.n_obs, 3)).astype(np.float32)
    control = a[a.obs["condition"] == "ctrl"]
    for where in ({"layer": "logcounts"}, {"obsm_key": "X_emb"}):
        here = cellw1.fit_all(a, "condition", "ctrl", ["up", "none"], method="mean_shift", progress=False, **where)
        there = cellw1.fit_all(
            a, "condition", "ctrl", ["up", "none"], method="mean_shift", scheduler=address, progress=False, **where
        )
        for label in ("up", "none"):
            np.testing.assert_array_equal(there[label].predict(control).X, here[label].predict(control).X)
    assert there["up"].features == ["X_emb_0", "X_emb_1", "X_emb_2"]
    assert there["up"].info["n_perturbed"] == 60


def test_resume_fits_only_what_is_missing(
    adata: ad.AnnData, address: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "models"
    first = cellw1.fit_all(
        adata, "condition", "ctrl", ["up", "down"], method="mean_shift", scheduler=address, out=out, progress=False
    )
    assert first.resumed == ()
    assert json.loads((out / COLLECTION_FILE).read_text())["models"] == {"up": "up", "down": "down"}
    stamp = (out / "up" / MODEL_FILE).stat().st_mtime_ns
    shutil.rmtree(out / "down")  # lost; 'none' was never fitted
    time.sleep(0.01)
    with caplog.at_level(logging.INFO, logger="cellw1"):
        second = cellw1.fit_all(
            adata, "condition", "ctrl", method="mean_shift", scheduler=address, out=out, progress=False
        )
    assert second.resumed == ("up",)
    assert list(second) == ["down", "none", "up"]
    assert (out / "up" / MODEL_FILE).stat().st_mtime_ns == stamp  # not fitted, not rewritten
    assert (out / "down" / MODEL_FILE).is_file()
    assert (out / "none" / MODEL_FILE).is_file()
    assert any("not fitted again: up" in r.getMessage() for r in caplog.records)
    assert any("down" in r.getMessage() and "fitting it again" in r.getMessage() for r in caplog.records)
    loaded = cellw1.load(out)
    assert isinstance(loaded, cellw1.ModelCollection)
    assert sorted(loaded) == ["down", "none", "up"]
    reference = cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", progress=False)
    for label, expected in predictions(reference, adata).items():
        np.testing.assert_array_equal(predictions(loaded, adata)[label], expected)
    # a third run has nothing to fit: no cluster is needed at all
    third = cellw1.fit_all(
        adata, "condition", "ctrl", method="mean_shift", scheduler=UNREACHABLE, out=out, progress=False
    )
    assert third.resumed == ("down", "none", "up")
    with pytest.raises(InputError, match=r"other settings \(seed: 0 there, 1 now\).*another output directory"):
        cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", seed=1, out=out, progress=False)


def test_interrupted_run_keeps_a_loadable_directory(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "models"
    save = PerturbationModel.save

    def crash_while_saving_none(self: PerturbationModel, directory: Path, **kwargs: Any) -> Path:
        if self.perturbation == "none":  # half a file, then the process is stopped
            Path(directory).mkdir(parents=True)
            (Path(directory) / MODEL_FILE).write_bytes(b"\x00" * 10)
            raise KeyboardInterrupt
        return save(self, directory, **kwargs)

    monkeypatch.setattr(PerturbationModel, "save", crash_while_saving_none)
    with pytest.raises(KeyboardInterrupt):
        cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", out=out, progress=False)
    monkeypatch.undo()
    partial = cellw1.load(out)  # the index lists only the complete model
    assert list(partial) == ["down"]
    again = cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", out=out, progress=False)
    assert again.resumed == ("down",)
    assert list(again) == ["down", "none", "up"]
    assert sorted(cellw1.load(out)) == ["down", "none", "up"]


def test_resume_refuses_other_settings(adata: ad.AnnData, tmp_path: Path) -> None:
    out = tmp_path / "models"
    pca = cellw1.fit(
        adata,
        "condition",
        "ctrl",
        "up",
        method="identity",
        space="pca",
        embedding_config=cellw1.EmbeddingConfig(n_components=4),
        progress=False,
    ).embedding
    cellw1.fit_all(adata, "condition", "ctrl", ["up"], method="mean_shift", embedding=pca, out=out, progress=False)
    again = cellw1.fit_all(
        adata, "condition", "ctrl", ["up"], method="mean_shift", embedding=pca, out=out, progress=False
    )
    assert again.resumed == ("up",)
    assert again["up"].embedding.kind == "pca"
    other = cellw1.fit(
        adata,
        "condition",
        "ctrl",
        "down",
        method="identity",
        space="pca",
        embedding_config=cellw1.EmbeddingConfig(n_components=4),
        progress=False,
    ).embedding
    with pytest.raises(InputError, match=r"other settings \(embedding.sha256: "):
        cellw1.fit_all(
            adata, "condition", "ctrl", ["up"], method="mean_shift", embedding=other, out=out, progress=False
        )
    differences = (
        r"\(config: None there, \{...\} now; embedding: \{...\} there, None now; "
        r"method: 'mean_shift' there, 'w1' now\)"
    )
    with pytest.raises(InputError, match=differences):
        cellw1.fit_all(adata, "condition", "ctrl", ["up"], out=out, progress=False)
    assert list(cellw1.load(out)) == ["up"]


def test_a_failing_perturbation_is_reported_and_the_rest_finish(address: str, tmp_path: Path) -> None:
    small = make_adata(rare=5)
    collection = cellw1.fit_all(
        small, "condition", "ctrl", method="mean_shift", scheduler=address, out=tmp_path / "m", progress=False
    )
    assert list(collection.failures) == ["rare"]
    assert "has 5 cells; at least 20" in collection.failures["rare"]
    assert list(collection) == ["down", "none", "up"]
    index = json.loads((tmp_path / "m" / COLLECTION_FILE).read_text())
    assert "rare" in index["failures"]
    assert "rare" not in index["models"]
    assert not (tmp_path / "m" / "rare").exists()
    with pytest.raises(InputError, match="group 'rare' has 5 cells"):
        cellw1.fit_all(
            small,
            "condition",
            "ctrl",
            ["up", "rare"],
            method="mean_shift",
            scheduler=address,
            on_error="raise",
            progress=False,
        )


def test_a_dying_worker_fails_its_perturbation_only(adata: ad.AnnData, tmp_path: Path) -> None:
    import dask

    out = tmp_path / "models"

    def exit_when_fitting_none(index: str) -> None:  # runs on the workers; restarted workers are clean
        import json
        import os
        import time

        import cellw1.tl.api as api

        original = api.fit

        def fit(data, condition_key, control, perturbation, **kwargs):  # type: ignore[no-untyped-def]
            if perturbation == "none":  # submitted last: dies once the client has saved the other two
                deadline = time.monotonic() + 60.0
                while time.monotonic() < deadline:
                    try:
                        with open(index) as handle:
                            saved = set(json.load(handle)["models"])
                    except (OSError, ValueError):  # no index yet
                        saved = set()
                    if {"down", "up"} <= saved:
                        break
                    time.sleep(0.02)
                os._exit(1)
            return original(data, condition_key, control, perturbation, **kwargs)

        api.fit = fit

    # no retry on another worker (Dask retries a task whose worker died 3 times by default)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", **LOCAL_CLUSTER_QUIET
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        client.run(exit_when_fitting_none, str(out / COLLECTION_FILE))
        collection = cellw1.fit_all(
            adata,
            "condition",
            "ctrl",
            ["down", "up", "none"],
            method="mean_shift",
            scheduler=client,
            out=out,
            progress=False,
        )
    assert list(collection.failures) == ["none"]
    assert "the worker fitting 'none' died" in collection.failures["none"]
    assert list(collection) == ["down", "up"]
    assert sorted(cellw1.load(out)) == ["down", "up"]


def test_data_lost_with_their_worker_are_sent_again(adata: ad.AnnData, caplog: pytest.LogCaptureFixture) -> None:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", **LOCAL_CLUSTER_QUIET
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        scatter, sent = client.scatter, []

        def scatter_then_kill_the_holder(data, **kwargs):  # type: ignore[no-untyped-def]
            future = scatter(data, **kwargs)
            sent.append(future)
            if len(sent) == 1:  # the only copy dies before any task could copy it
                (holder,) = client.who_has(future)[future.key]
                with contextlib.suppress(Exception):  # the connection closes under the call
                    client.run(os._exit, 1, workers=[holder])
                while future.status == "finished":
                    time.sleep(0.05)
            return future

        client.scatter = scatter_then_kill_the_holder
        with caplog.at_level(logging.WARNING, logger="cellw1"):
            collection = cellw1.fit_all(
                adata, "condition", "ctrl", method="mean_shift", scheduler=client, progress=False
            )
    assert len(sent) == 2
    assert any("sending them again" in r.getMessage() for r in caplog.records)
    assert list(collection) == ["down", "none", "up"]
    assert not collection.failures
    reference = cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", progress=False)
    for label, expected in predictions(reference, adata).items():
        np.testing.assert_array_equal(predictions(collection, adata)[label], expected)


def test_unreachable_scheduler_is_a_clear_error_quickly(adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cellw1.parallel.cluster.CONNECT_TIMEOUT <= 10
    monkeypatch.setattr(cellw1.parallel.cluster, "CONNECT_TIMEOUT", 0.5)
    start = time.perf_counter()
    message = r"could not reach a Dask scheduler at 'tcp://127.0.0.1:9' within 0.5 s.*dask scheduler"
    with pytest.raises(InputError, match=message):
        cellw1.fit_all(adata, "condition", "ctrl", method="mean_shift", scheduler=UNREACHABLE, progress=False)
    assert time.perf_counter() - start < 10


def test_bad_scheduler_settings(adata: ad.AnnData) -> None:
    with pytest.raises(ConfigError, match="neither 'local' nor a Dask scheduler address"):
        cellw1.fit_all(adata, "condition", "ctrl", scheduler="lcoal", progress=False)
    with pytest.raises(ConfigError, match=r"'tcp://127.0.0.1:abc' is malformed .*'tcp://host:port'"):
        cellw1.fit_all(adata, "condition", "ctrl", scheduler="tcp://127.0.0.1:abc", progress=False)
    with pytest.raises(ConfigError, match="n_workers needs scheduler='local'"):
        cellw1.fit_all(adata, "condition", "ctrl", n_workers=2, progress=False)
    with pytest.raises(ConfigError, match="applies to scheduler='local' only"):
        cellw1.fit_all(adata, "condition", "ctrl", scheduler=UNREACHABLE, n_workers=2, progress=False)
    with pytest.raises(ConfigError, match="threads_per_worker=0"):
        cellw1.fit_all(adata, "condition", "ctrl", scheduler="local", threads_per_worker=0, progress=False)
    with pytest.raises(ConfigError, match="needs a W1Config"):
        cellw1.fit_all(adata, "condition", "ctrl", config=cellw1.W2Config(), scheduler=UNREACHABLE, progress=False)
    with pytest.raises(TypeError):
        cellw1.fit_all(adata, "condition", "ctrl", methd="mean_shift", scheduler=UNREACHABLE, progress=False)
    assert issubclass(InputError, CellW1Error)


def test_cli_fits_a_collection_on_the_cluster_and_resumes(
    adata: ad.AnnData, address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "cells.h5ad"
    adata.write_h5ad(data)
    command = [
        "fit",
        str(data),
        "--condition-key",
        "condition",
        "--control",
        "ctrl",
        "--perturbation",
        "all",
        "--method",
        "mean_shift",
        "--out",
        str(tmp_path / "models"),
        "--scheduler",
        address,
        "--quiet",
    ]
    assert main(command) == 0
    assert "saved 3 models" in capsys.readouterr().out
    assert sorted(cellw1.load(tmp_path / "models")) == ["down", "none", "up"]
    assert main(command) == 0
    assert "(0 fitted now, 3 already there)" in capsys.readouterr().out
    assert main([*command[:-3], "--scheduler", "local", "--n-workers", "0", "--quiet"]) == 2
    assert "n_workers=0 must be an integer >= 1" in capsys.readouterr().err
