"""Fitting from and predicting to disk: the sampler, streaming statistics, and agreement with memory."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST as FAST_CONFIG
from conftest import TINY

import cellw1
from cellw1 import ConfigError, EmbeddingConfig, InputError
from cellw1.datasets import synthetic_perturbation
from cellw1.eval.metrics import energy_distance
from cellw1.io.readers import open_disk_data
from cellw1.ot.sampling import MemoryCells, StreamedCells, minibatches
from cellw1.pp.preprocessing import fit_preprocessor, fit_preprocessor_streaming
from cellw1.tl.pipeline import row_blocks

FAST = FAST_CONFIG.replace(potential_iters=200, regression_iters=150)


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    data = synthetic_perturbation(n_control=400, n_perturbed=400, n_genes=40, n_perturbations=1, seed=3)
    # interleave the groups, as in a real file, so a group's rows are not contiguous
    order = np.random.default_rng(0).permutation(data.n_obs)
    return data[order].copy()


@pytest.fixture(scope="module")
def files(adata: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ondisk")
    adata.write_h5ad(folder / "cells.h5ad")
    adata.write_zarr(folder / "cells.zarr")
    return {"h5ad": folder / "cells.h5ad", "zarr": folder / "cells.zarr"}


def _fit(data: object, **kwargs: object) -> cellw1.PerturbationModel:
    return cellw1.fit(data, "condition", "control", "pertA", config=FAST, seed=1, progress=False, **kwargs)


@pytest.fixture(scope="module")
def memory_model(adata: ad.AnnData) -> cellw1.PerturbationModel:
    """The model fitted in memory, which the tests below compare with (and only read)."""
    return _fit(adata)


# -- the sampler -----------------------------------------------------------------------------------
class _Rows:
    """A stand-in matrix whose rows are their own row numbers (so buffers show which rows were read)."""

    def __init__(self, n: int) -> None:
        self.shape = (n, 1)
        self.reads: list[np.ndarray] = []

    def read(self, rows: np.ndarray) -> np.ndarray:
        assert (np.diff(rows) > 0).all(), "reads must ask for increasing rows"
        self.reads.append(rows)
        return rows[:, None].astype(np.float64)


def test_disk_sampler_visits_every_training_cell_once_per_epoch() -> None:
    matrix = _Rows(5_000)
    rows = np.arange(0, 5_000, 2)  # the group: every other row of the file
    cells = StreamedCells(matrix, rows, lambda raw: np.asarray(raw, np.float32), 1, buffer_cells=300, block_cells=50)
    train, val = cells.split(0.1, torch.Generator().manual_seed(0))
    held_out = set(val[:, 0].long().tolist())
    assert len(held_out) == 250
    assert held_out <= set(rows.tolist())
    seen: list[int] = []
    buffer = train.buffer()
    while len(seen) < 2_250:
        assert len(buffer) == 300  # 6 blocks of 50
        seen += buffer[:, 0].long().tolist()
        buffer = train.next_buffer()
    epoch = seen[:2_250]
    assert sorted(epoch) == sorted(set(rows.tolist()) - held_out)  # each training cell exactly once
    assert not held_out & set(seen)
    assert epoch != sorted(epoch)  # blocks come in a shuffled order


def test_disk_sampler_holding_every_cell_is_the_memory_sampler() -> None:
    x = torch.randn(400, 3)
    disk = StreamedCells(_ArrayMatrix(x.numpy()), np.arange(400), lambda raw: raw, 3, buffer_cells=10_000)
    memory = MemoryCells(x)
    (dtrain, dval), (mtrain, mval) = (c.split(0.1, torch.Generator().manual_seed(5)) for c in (disk, memory))
    torch.testing.assert_close(dval, mval, rtol=0, atol=0)
    assert dtrain.holds_all
    draws = [minibatches(c, 64, 30, torch.Generator().manual_seed(2)) for c in (dtrain, mtrain)]
    for (a,), (b,) in zip(*draws, strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _ArrayMatrix:
    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape = x, x.shape

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.x[rows]


def test_minibatches_refresh_buffers_after_reuse_passes() -> None:
    matrix = _Rows(2_000)
    cells = StreamedCells(
        matrix, np.arange(2_000), lambda raw: np.asarray(raw, np.float32), 1, buffer_cells=400, block_cells=100
    )
    batches = list(minibatches(cells, 50, 40, torch.Generator().manual_seed(0), reuse=2))
    assert len(batches) == 40
    assert cells.buffers_read == 3  # 16 steps per buffer (2 passes of 400 cells / 50): 16 + 16 + 8


# -- streaming statistics -------------------------------------------------------------------------------
def test_streamed_normalisation_matches_memory(adata: ad.AnnData, files: dict[str, Path]) -> None:
    with open_disk_data(files["h5ad"]) as disk:
        matrix = disk.matrix()
        rows = np.arange(disk.n_obs)
        streamed = fit_preprocessor_streaming(lambda: row_blocks(matrix, rows, size=97), matrix.read(rows[:300]))
    memory = fit_preprocessor(adata.X)
    assert streamed.input_kind == memory.input_kind == "counts"
    assert streamed.target_sum == memory.target_sum


# -- fitting from disk ----------------------------------------------------------------------------------
def test_dense_disk_fit_equals_memory_fit_when_a_buffer_holds_each_group(
    adata: ad.AnnData, memory_model: cellw1.PerturbationModel, tmp_path: Path
) -> None:
    """A dense X on disk (CSR and the other source kinds: tests/test_sources.py): the same model."""
    dense = adata.copy()
    dense.X = dense.X.toarray()
    dense.write_h5ad(tmp_path / "dense.h5ad")
    disk_model = _fit(tmp_path / "dense.h5ad")
    assert disk_model.preprocessor == memory_model.preprocessor
    controls = adata[adata.obs["condition"] == "control"]
    np.testing.assert_allclose(disk_model.predict(controls).X, memory_model.predict(controls).X, rtol=1e-5, atol=1e-5)


def test_autoencoder_trains_on_streamed_buffers(adata: ad.AnnData, files: dict[str, Path]) -> None:
    """The autoencoder is fed by the sampler: holding every cell, it is the in-memory network."""
    small = EmbeddingConfig(ae_max_iters=60, ae_eval_every=20, ae_latent=8, ae_hidden=(32,))
    streamed = _fit(files["zarr"], space="autoencoder", embedding_config=small)
    memory = _fit(adata, space="autoencoder", embedding_config=small)
    for a, b in zip(
        streamed.embedding.state_tensors().values(), memory.embedding.state_tensors().values(), strict=False
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert streamed.embedding.info["n_cells"] == 800


def test_disk_fit_with_small_buffers_is_as_good_as_memory(adata: ad.AnnData, files: dict[str, Path]) -> None:
    """Buffers of 128 of ~360 training cells per group: another sample path, same quality.

    Scored by the energy distance to the real perturbed cells in the PCA space: the streamed
    fit must recover at least 80% of the in-memory fit's improvement over no change.
    """
    streamed = _fit(files["h5ad"], space="pca", buffer_cells=128)
    memory = _fit(adata, space="pca")
    controls = adata[adata.obs["condition"] == "control"]
    target = memory.embedding.encode(memory.preprocess(adata[adata.obs["condition"] == "pertA"]))

    def score(model: cellw1.PerturbationModel) -> float:
        return energy_distance(model.embedding.encode(model.predict(controls).X), target)

    baseline = energy_distance(memory.embedding.encode(memory.preprocess(controls)), target)
    assert score(memory) < 0.5 * baseline
    assert baseline - score(streamed) >= 0.8 * (baseline - score(memory))
    assert streamed.info["streamed_from"].endswith("cells.h5ad")


def test_disk_fit_rejects_bad_settings(adata: ad.AnnData, files: dict[str, Path]) -> None:
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="buffer_cells"):
            cellw1.fit(files["h5ad"], "condition", "control", "pertA", buffer_cells=bad, progress=False)
    with pytest.raises(InputError, match="obsm key 'X_none' not found"):
        cellw1.fit(files["h5ad"], "condition", "control", "pertA", obsm_key="X_none", progress=False)
    with pytest.raises(InputError, match="'nope'"):
        cellw1.fit(files["zarr"], "condition", "control", "nope", progress=False)


# -- predicting to disk ---------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_streamed_prediction_equals_in_memory_prediction(
    adata: ad.AnnData, memory_model: cellw1.PerturbationModel, files: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    model = memory_model
    expected = model.predict(adata)
    path = model.predict(files["h5ad"], out=tmp_path / f"pred{suffix}", chunk_cells=97)
    written = ad.read_h5ad(path) if suffix == ".h5ad" else ad.read_zarr(path)
    np.testing.assert_allclose(written.X, expected.X, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(written.obs["response"], expected.obs["response"], rtol=1e-6)
    assert list(written.obs_names) == list(adata.obs_names)
    assert list(written.var_names) == model.features
    assert written.uns["cellw1"]["perturbation"] == "pertA"
    chunked = model.predict(adata, chunk_cells=50)  # in memory, several chunks: same cells
    np.testing.assert_allclose(chunked.X, expected.X, rtol=1e-6, atol=1e-6)
    is_control = (adata.obs["condition"] == "control").to_numpy()
    controls = model.predict(files["h5ad"], cells=is_control, chunk_cells=64)  # chosen rows, in memory
    np.testing.assert_allclose(controls.X, expected.X[is_control], rtol=1e-6, atol=1e-6)
    assert list(controls.obs["source_cell"]) == list(adata.obs_names[is_control])
    with pytest.raises(InputError, match="increasing row numbers"):
        model.predict(files["h5ad"], cells=np.array([5, 3]))


# -- many perturbations and the command line --------------------------------------------------------
def test_fit_all_streams_from_a_path(files: dict[str, Path], tmp_path: Path) -> None:
    collection = cellw1.fit_all(  # what streams and is saved, not the map's quality: the smallest schedule
        files["h5ad"], "condition", "control", config=TINY, out=tmp_path / "models", progress=False, buffer_cells=200
    )
    assert list(collection) == ["pertA"]
    assert not collection.failures
    assert collection["pertA"].info["buffer_cells"] == 200
    assert list(cellw1.load(tmp_path / "models")) == ["pertA"]


def test_collection_predicts_stacked_models_streaming_to_one_writer(tmp_path: Path, capsys) -> None:
    """As ``anndata.concat`` of each model's prediction (what it was), and the same from disk to a file."""
    from conftest import count_adata

    from cellw1.cli.main import main

    cells = count_adata(("ctrl", "up", "down"), 40, 12, seed=1, effects={1: 2.0, 2: 0.5})
    cells.write_h5ad(tmp_path / "cells.h5ad")
    collection = cellw1.fit_all(
        cells, "condition", "ctrl", method="mean_shift", out=tmp_path / "models", progress=False
    )
    labels = list(collection)
    expected = ad.concat(
        [collection[p].predict(cells) for p in labels],
        index_unique="-",
        keys=labels,
        label="_prediction",
        merge="first",
    )
    got = collection.predict(cells)
    np.testing.assert_array_equal(got.X, expected.X)
    pd.testing.assert_frame_equal(got.obs, expected.obs)
    assert list(got.var_names) == list(expected.var_names)
    written = ad.read_zarr(collection.predict(tmp_path / "cells.h5ad", out=tmp_path / "p.zarr", chunk_cells=7))
    np.testing.assert_array_equal(written.X, expected.X)
    assert list(written.obs_names) == list(expected.obs_names)
    assert list(written.obs["_prediction"]) == list(expected.obs["_prediction"])
    np.testing.assert_array_equal(written.obs["response"], expected.obs["response"])
    out = tmp_path / "controls.h5ad"  # the command line: --on-disk and --controls-only for a collection
    assert (
        main(
            [
                "predict",
                str(tmp_path / "models"),
                str(tmp_path / "cells.h5ad"),
                "--on-disk",
                "--controls-only",
                "--chunk-cells",
                "9",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    ), capsys.readouterr().err
    is_control = (expected.obs["condition"] == "ctrl").to_numpy()
    controls = ad.read_h5ad(out)
    np.testing.assert_array_equal(controls.X, expected.X[is_control])
    assert list(controls.obs_names) == list(expected.obs_names[is_control])


def test_cli_fits_and_predicts_on_disk(adata: ad.AnnData, files: dict[str, Path], tmp_path: Path) -> None:
    from cellw1.cli.main import main

    fit_args = [
        "fit",
        str(files["zarr"]),
        "--condition-key",
        "condition",
        "--control",
        "control",
        "--perturbation",
        "pertA",
        "--potential-iters",
        "100",
        "--regression-iters",
        "60",
        "--energy-iters",
        "60",
        "--quiet",
        "--out",
        str(tmp_path / "model"),
    ]
    assert main([*fit_args, "--on-disk", "--buffer-cells", "150"]) == 0
    assert main([*fit_args, "--buffer-cells", "150"]) == 2  # only with --on-disk
    out = tmp_path / "pred.zarr"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "model"),
                str(files["h5ad"]),
                "--on-disk",
                "--chunk-cells",
                "300",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    predicted = ad.read_zarr(out)
    assert predicted.shape == (adata.n_obs, adata.n_vars)
    assert np.isfinite(predicted.X).all()
    controls = tmp_path / "controls.h5ad"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "model"),
                str(files["h5ad"]),
                "--on-disk",
                "--controls-only",
                "--out",
                str(controls),
                "--quiet",
            ]
        )
        == 0
    )
    paired = ad.read_h5ad(controls)  # the predicted control cells, then the same cells as measured (for cell-eval)
    names = list(adata.obs_names[adata.obs["condition"] == "control"])
    assert list(paired.obs_names) == names + [f"{c}-control" for c in names]
    assert list(paired.obs["condition"]) == ["pertA"] * len(names) + ["control"] * len(names)
    assert main(["predict", str(tmp_path / "model"), str(files["h5ad"]), "--out", str(tmp_path / "p.csv")]) == 2


def test_predict_help_says_what_controls_only_does_for_a_collection(capsys) -> None:
    """A collection's --controls-only output has no paired controls: the help must not promise them for it."""
    from cellw1.cli.main import main

    assert main(["predict", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "A collection" in text
    assert "obs['_prediction'] naming the perturbation" in text
    assert "(--obsm-key) puts it in obsm[NAME] instead" in text  # --key-added of an embedding's model


def test_stacked_predictions_record_every_models_scale(tmp_path: Path) -> None:
    """``uns["cellw1"]`` of a collection's prediction names each model's perturbation and target_sum, as one model's does."""
    from conftest import count_adata

    cells = count_adata(("ctrl", "up", "down"), (40, 40, 40), 12, seed=1, effects={1: 2.0, 2: 0.5})
    cells.X[40:80] *= 3  # 'up' cells are deeper: its model's target_sum differs from 'down''s
    collection = cellw1.fit_all(cells, "condition", "ctrl", method="mean_shift", input_kind="counts", progress=False)
    labels = list(collection)
    sums = [collection[p].output_uns()["target_sum"] for p in labels]
    assert len(set(sums)) == 2
    for got in (collection.predict(cells), ad.read_h5ad(collection.predict(cells, out=tmp_path / "p.h5ad"))):
        record = got.uns["cellw1"]
        assert list(record["perturbation"]) == labels == list(got.obs["_prediction"].cat.categories)
        assert list(record["target_sum"]) == sums
        assert record["method"] == "mean_shift"  # shared by every model: once
