"""One fit pipeline over one source contract (issue #12).

An AnnData in memory, a backed AnnData, an ``.h5ad`` path and a ``.zarr`` path open as the same
:class:`~cellw1.io.source.Source`, so every method gives the same model from each: the same
tensors, the same predictions. Every method also streams: with buffers smaller than a group,
the mean shift and observed read exactly the cells they read in memory, and W2 draws its
minibatches from buffers.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, count_adata

import cellw1
from cellw1 import InputError, W2Config
from cellw1.io.source import MemoryMatrix, MemorySource, open_source
from cellw1.ot.sampling import StreamedCells
from cellw1.ot.w2 import fit_w2

W2_TINY = W2Config(hidden=(16, 16), n_iters=10, eval_every=5)
CONFIGS = {"w1": TINY, "w2": W2_TINY}
KINDS = ("memory", "backed", "h5ad", "zarr")
SMALL_EMBEDDING = cellw1.EmbeddingConfig(
    n_components=6, ae_max_iters=30, ae_eval_every=10, ae_latent=4, ae_hidden=(16,)
)


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    data = count_adata(("ctrl", "pert", "other"), (90, 70, 30), 16, seed=4, effects={1: 2.5}, affected=4)
    data = data[np.random.default_rng(1).permutation(data.n_obs)].copy()  # groups interleaved, as in a file
    data.layers["raw"] = data.X.copy()
    data.obsm["emb"] = np.random.default_rng(2).normal(size=(data.n_obs, 3)).astype(np.float32)
    data.obsm["emb"][data.obs["condition"].to_numpy() == "pert"] += 1.5
    return data


@pytest.fixture(scope="module")
def files(adata: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sources")
    adata.write_h5ad(folder / "cells.h5ad")
    adata.write_zarr(folder / "cells.zarr")
    return {"h5ad": folder / "cells.h5ad", "zarr": folder / "cells.zarr"}


def _data(kind: str, adata: ad.AnnData, files: dict[str, Path]) -> object:
    if kind == "memory":
        return adata
    if kind == "backed":
        return ad.read_h5ad(files["h5ad"], backed="r")
    return files[kind] if kind == "zarr" else str(files[kind])


def _fit(data: object, method: str, **kwargs: object) -> cellw1.PerturbationModel:
    return cellw1.fit(
        data,
        "condition",
        "ctrl",
        "pert",
        method=method,
        config=CONFIGS.get(method),
        seed=3,
        embedding_config=SMALL_EMBEDDING,
        progress=False,
        **kwargs,
    )


def _assert_same_model(model: cellw1.PerturbationModel, reference: cellw1.PerturbationModel) -> None:
    assert model.preprocessor == reference.preprocessor
    assert model.features == reference.features
    for mine, theirs in (
        (model.embedding.state_tensors(), reference.embedding.state_tensors()),
        (model.method.state_tensors(), reference.method.state_tensors()),
    ):
        assert mine.keys() == theirs.keys()
        for key in mine:
            torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=0, msg=key)
    if reference.calibration is None:
        assert model.calibration is None
    else:
        np.testing.assert_array_equal(model.calibration, reference.calibration)


CASES = [(method, "genes") for method in ("identity", "observed", "mean_shift", "w2", "w1")]
CASES += [("mean_shift", "pca"), ("mean_shift", "autoencoder")]


@pytest.mark.parametrize(("method", "space"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_the_four_source_kinds_give_identical_models(
    adata: ad.AnnData, files: dict[str, Path], method: str, space: str
) -> None:
    models = {}
    for kind in KINDS:
        data = _data(kind, adata, files)
        models[kind] = _fit(data, method, space=space)
        if kind == "backed":
            # the user's object still works
            assert data.isbacked
            assert data.X[:2].shape == (2, adata.n_vars)
            data.file.close()
    reference = models["memory"]
    controls = adata[adata.obs["condition"] == "ctrl"]
    expected = reference.predict(controls).X
    assert expected.shape == (90, adata.n_vars)
    assert np.isfinite(expected).all()
    for kind in KINDS[1:]:
        _assert_same_model(models[kind], reference)
        np.testing.assert_array_equal(models[kind].predict(controls).X, expected)
    assert models["h5ad"].info["streamed_from"].endswith("cells.h5ad")
    assert "streamed_from" not in reference.info


def test_layers_and_obsm_embeddings_read_the_same_from_every_kind(adata: ad.AnnData, files: dict[str, Path]) -> None:
    controls = np.flatnonzero(adata.obs["condition"] == "ctrl")
    for options in ({"layer": "raw"}, {"obsm_key": "emb"}):
        reference = _fit(adata, "mean_shift", **options)
        expected = reference.predict(adata[controls]).X
        for kind in KINDS[1:]:
            data = _data(kind, adata, files)
            model = _fit(data, "mean_shift", **options)
            _assert_same_model(model, reference)
            np.testing.assert_array_equal(model.predict(data, cells=controls).X, expected)  # predict reads it too
            if kind == "backed":
                data.file.close()
    assert reference.preprocessor is None
    assert list(reference.features) == ["emb_0", "emb_1", "emb_2"]
    shift = reference.method.shift
    assert shift[0] == pytest.approx(1.5, abs=0.4)  # the embedding's shift of the perturbed cells


@pytest.mark.parametrize("method", ["observed", "mean_shift"])
def test_mean_shift_and_observed_stream_the_cells_they_read_in_memory(
    adata: ad.AnnData, files: dict[str, Path], method: str
) -> None:
    """Buffers of 16 cells, groups of 70 and 90: the same cells are read, so the same model."""
    reference = _fit(adata, method)
    for kind in KINDS:
        model = _fit(_data(kind, adata, files), method, buffer_cells=16)
        _assert_same_model(model, reference)
        assert model.info["buffer_cells"] == 16


def test_w2_draws_minibatches_from_streamed_buffers() -> None:
    """W2 on buffers of 64 of 300 cells per side, read in blocks of 16 rows, learns the shift."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(300, 2)).astype(np.float32)
    target = (rng.normal(size=(300, 2)) + [2.5, -1.0]).astype(np.float32)

    class Rows:
        def __init__(self, x: np.ndarray) -> None:
            self.x, self.shape, self.reads = x, x.shape, []

        def read(self, rows: np.ndarray) -> np.ndarray:
            self.reads.append(rows)
            return self.x[rows]

    matrices = [Rows(source), Rows(target)]
    cells = [
        StreamedCells(m, np.arange(300), lambda raw: raw, 2, buffer_cells=64, block_cells=16, seed=k)
        for k, m in enumerate(matrices)
    ]
    config = W2Config(hidden=(16, 16), n_iters=40, eval_every=20, batch_size=64, lr=1e-2)
    moved = fit_w2(*cells, config, seed=0).transport(source)
    gap = target.mean(0) - source.mean(0)
    assert np.linalg.norm(moved.mean(0) - target.mean(0)) < 0.25 * np.linalg.norm(gap)
    reads = matrices[0].reads
    assert len(reads) > 3 * 300 / 16  # several epochs of blocks, a buffer of 64 cells at a time
    assert max(len(r) for r in reads[1:]) <= 16
    assert len(np.unique(np.concatenate(reads))) == 300
    # holding every cell, the streamed sampler is the in-memory one: the same networks
    whole = [
        StreamedCells(Rows(x), np.arange(300), lambda raw: raw, 2, buffer_cells=300, seed=k)
        for k, x in enumerate((source, target))
    ]
    short = W2Config(hidden=(16, 16), n_iters=10, eval_every=5)
    memory = fit_w2(source, target, short, seed=1).state_tensors()
    for key, value in fit_w2(*whole, short, seed=1).state_tensors().items():
        torch.testing.assert_close(value, memory[key], rtol=0, atol=0)


def test_every_method_fits_from_disk_with_small_buffers(files: dict[str, Path]) -> None:
    for method in ("identity", "observed", "mean_shift", "w2", "w1"):
        model = _fit(files["zarr"], method, buffer_cells=32)
        predicted = model.predict(files["zarr"], cells=np.arange(10))
        assert predicted.shape == (10, 16)
        assert np.isfinite(predicted.X).all()


# -- the source contract -------------------------------------------------------------------------------
def test_open_source_gives_obs_var_names_and_row_reads(adata: ad.AnnData, files: dict[str, Path]) -> None:
    rows = np.array([0, 3, 4, 5, 40, 41, 150])
    expected = adata.X[rows].toarray()
    for kind in KINDS:
        with open_source(_data(kind, adata, files)) as source:
            assert source.in_memory == (kind == "memory")
            assert (source.path is None) == (kind == "memory")
            pd.testing.assert_frame_equal(source.obs, adata.obs)
            assert list(source.var_names) == list(adata.var_names)
            matrix = source.matrix()
            assert matrix.is_sparse
            assert matrix.shape == adata.shape
            assert matrix.dtype == np.float32
            np.testing.assert_array_equal(matrix.read(rows).toarray(), expected)
            np.testing.assert_array_equal(source.embedding("emb").read(rows), adata.obsm["emb"][rows])
    with pytest.raises(TypeError, match="expects an AnnData"):
        open_source(np.ones((3, 2)), "here")


def test_memory_matrix_reads_copies_with_the_dtypes_of_a_file() -> None:
    counts = np.arange(12, dtype=np.int64).reshape(4, 3)
    matrix = MemoryMatrix(counts, name="X")
    block = matrix.read(np.array([1, 2]))
    assert block.dtype == np.float32
    assert block.tolist() == [[3, 4, 5], [6, 7, 8]]
    block[:] = -1  # a copy: the user's data are untouched
    assert counts[1, 0] == 3
    np.testing.assert_array_equal(matrix.read(np.array([0, 3])), counts[[0, 3]])
    with pytest.raises(InputError, match="increasing row numbers"):
        matrix.read(np.array([2, 1]))
    with pytest.raises(InputError, match="dtype <U1"):
        MemoryMatrix(np.array([["a"]]), name="X")
    source = MemorySource(ad.AnnData(X=counts.astype(np.float32)))
    with pytest.raises(InputError, match="layer 'raw' not found"):
        source.matrix("raw")
    with pytest.raises(InputError, match="obsm key 'pca' not found"):
        source.embedding("pca")
