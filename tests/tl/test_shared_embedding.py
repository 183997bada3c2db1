"""A collection whose models share one embedding stores it once, and loads it once.

``fit_all(..., shared_space=True, out=...)`` and :meth:`ModelCollection.save` write the shared
PCA to ``embedding.safetensors`` beside ``collection.json``; each model file refers to it. A
loaded collection's models hold one embedding object and predict as before saving; a model
folder loads alone inside its collection and fails clearly elsewhere; a stopped run resumes;
collections of the old layout and models that share nothing keep loading and saving as before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest
from conftest import count_adata, three_perturbation_counts

import cellw1
from cellw1 import InputError, ModelFileError
from cellw1.files.model_files import load_tensors
from cellw1.tl.collection import ModelCollection
from cellw1.tl.model import COLLECTION_FILE, MODEL_FILE, PerturbationModel
from cellw1.tl.shared_embedding import SHARED_EMBEDDING_FILE, SharedEmbedding

PERTURBATIONS = ["p1", "p2", "p3", "p4", "p5"]
SETTINGS: dict[str, Any] = dict(
    method="mean_shift", space="pca", embedding_config=cellw1.EmbeddingConfig(n_components=5), progress=False
)
OLD = Path(__file__).parents[1] / "data" / "models_by_format" / "shared_space_collection"


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    """Counts of a control (70 cells) and five perturbations of uneven sizes; p1 and p3 move genes 0-3."""
    return count_adata(
        ["ctrl", *PERTURBATIONS], [70, 45, 52, 38, 41, 33], 30, seed=2, effects={1: 4.0, 3: 0.25}, affected=4
    )


@pytest.fixture(scope="module")
def screen(adata: ad.AnnData, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCollection, Path]:
    """The shared-space collection of the five perturbations, as fitted, and the directory it was saved to."""
    out = tmp_path_factory.mktemp("screen") / "models"
    return cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, out=out, **SETTINGS), out


def controls(adata: ad.AnnData) -> ad.AnnData:
    return adata[adata.obs["condition"] == "ctrl"]


def tensor_names(path: Path) -> set[str]:
    return set(load_tensors(path, kind="test")[0])


def assert_same_predictions(got: ModelCollection, expected: ModelCollection, adata: ad.AnnData) -> None:
    assert list(got) == list(expected)
    for label, model in got.items():
        np.testing.assert_array_equal(
            np.asarray(model.predict(controls(adata)).X), np.asarray(expected[label].predict(controls(adata)).X)
        )


def test_a_shared_space_collection_holds_its_embedding_once(screen: tuple[ModelCollection, Path]) -> None:
    collection, out = screen
    embedding = collection["p1"].embedding
    assert all(model.embedding is embedding for model in collection.values())  # one object, as fitted
    shared = load_tensors(out / SHARED_EMBEDDING_FILE, kind="test")[0]
    assert set(shared) == set(embedding.state_tensors())  # mean, components, explained_variance
    for name, tensor in embedding.state_tensors().items():
        np.testing.assert_array_equal(shared[name].numpy(), tensor.numpy())
    settings = json.loads((out / COLLECTION_FILE).read_text())["settings"]
    for label in PERTURBATIONS:
        tensors, header = load_tensors(out / label / MODEL_FILE, kind="test")
        assert not [name for name in tensors if name.startswith("embedding.")]  # no copy in any model
        assert header["format_version"] == 2
        assert header["embedding_file"] == {"file": SHARED_EMBEDDING_FILE, "sha256": settings["embedding"]["sha256"]}
        assert header["embedding"]["kind"] == "pca"  # the model still describes its space
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.safetensors")}
    assert on_disk == {SHARED_EMBEDDING_FILE, *(f"{label}/{MODEL_FILE}" for label in PERTURBATIONS)}


def test_a_loaded_collection_shares_one_embedding_and_predicts_as_before(
    adata: ad.AnnData, screen: tuple[ModelCollection, Path], tmp_path: Path
) -> None:
    collection, out = screen
    for loaded in (cellw1.load(out), ModelCollection.load(out)):
        assert isinstance(loaded, ModelCollection)
        assert len({id(model.embedding) for model in loaded.values()}) == 1
        assert_same_predictions(loaded, collection, adata)
    # ModelCollection.save writes the same layout, from the loaded models' one object or from equal copies
    copies = ModelCollection({label: PerturbationModel.load(out / label) for label in PERTURBATIONS})
    assert len({id(model.embedding) for model in copies.values()}) == len(PERTURBATIONS)
    copies.save(tmp_path / "saved")
    assert tensor_names(tmp_path / "saved" / SHARED_EMBEDDING_FILE) == set(collection["p1"].embedding.state_tensors())
    assert not [n for n in tensor_names(tmp_path / "saved" / "p2" / MODEL_FILE) if n.startswith("embedding.")]
    assert_same_predictions(ModelCollection.load(tmp_path / "saved"), collection, adata)


def test_a_model_folder_loads_alone_in_its_collection_and_fails_clearly_elsewhere(
    adata: ad.AnnData, screen: tuple[ModelCollection, Path], tmp_path: Path
) -> None:
    collection, out = screen
    expected = np.asarray(collection["p3"].predict(controls(adata)).X)
    np.testing.assert_array_equal(np.asarray(cellw1.load(out / "p3").predict(controls(adata)).X), expected)
    np.testing.assert_array_equal(np.asarray(cellw1.load(out / "p3" / MODEL_FILE).predict(controls(adata)).X), expected)
    alone = tmp_path / "elsewhere" / "p3"
    shutil.copytree(out / "p3", alone)
    with pytest.raises(ModelFileError, match=r"embedding\.safetensors.*does not exist.*copy the collection's"):
        cellw1.load(alone)
    shutil.copy(out / SHARED_EMBEDDING_FILE, alone.parent)  # the fix the error names
    np.testing.assert_array_equal(np.asarray(cellw1.load(alone).predict(controls(adata)).X), expected)
    # another collection's (valid) shared file in its place: refused by the checksum the model keeps
    other = cellw1.fit_all(adata, "condition", "ctrl", ["p1", "p2"], shared_space=True, seed=1, **SETTINGS)
    SharedEmbedding(alone.parent).write(other["p1"].embedding)
    with pytest.raises(ModelFileError, match="is not the embedding .* was saved with"):
        cellw1.load(alone)
    # a damaged file: its own checksum
    data = bytearray((out / SHARED_EMBEDDING_FILE).read_bytes())
    data[-5] ^= 0xFF
    (alone.parent / SHARED_EMBEDDING_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"shared embedding file .* corrupted \(checksum mismatch\)"):
        cellw1.load(alone)
    with pytest.raises(ModelFileError, match="holds the embedding a collection's models share"):
        cellw1.load(out / SHARED_EMBEDDING_FILE)


def test_a_stopped_run_leaves_a_loadable_directory_and_resumes(
    adata: ad.AnnData, screen: tuple[ModelCollection, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "models"
    save = PerturbationModel.save
    stop_at = {"p1"}

    def stop(self: PerturbationModel, directory: Path, **kwargs: Any) -> Path:
        if self.perturbation in stop_at:
            raise KeyboardInterrupt
        return save(self, directory, **kwargs)

    monkeypatch.setattr(PerturbationModel, "save", stop)
    with pytest.raises(KeyboardInterrupt):  # stopped after the shared file, before any model
        cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, out=out, **SETTINGS)
    assert (out / SHARED_EMBEDDING_FILE).is_file()
    assert not (out / COLLECTION_FILE).exists()
    stop_at = {"p4"}
    with pytest.raises(KeyboardInterrupt):  # stopped after three models
        cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, out=out, **SETTINGS)
    partial = cellw1.load(out)
    assert list(partial) == ["p1", "p2", "p3"]
    assert len({id(model.embedding) for model in partial.values()}) == 1
    monkeypatch.undo()
    again = cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, out=out, **SETTINGS)
    assert again.resumed == ("p1", "p2", "p3")
    assert len({id(model.embedding) for model in again.values()}) == 1  # resumed and new: one object
    assert_same_predictions(cellw1.load(out), screen[0], adata)
    with pytest.raises(InputError, match="other settings"):  # a settings mismatch is still refused
        cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, out=out, **{**SETTINGS, "seed": 1})


def test_a_directory_of_another_shared_embedding_is_refused(
    adata: ad.AnnData, screen: tuple[ModelCollection, Path], tmp_path: Path
) -> None:
    saved = tmp_path / "saved"
    screen[0].save(saved)  # ModelCollection.save records no fit settings
    with pytest.raises(InputError, match="another shared embedding"):
        cellw1.fit_all(adata, "condition", "ctrl", ["p1"], shared_space=True, out=saved, **{**SETTINGS, "seed": 1})
    assert_same_predictions(cellw1.load(saved), screen[0], adata)  # untouched


def test_a_collection_of_the_old_layout_loads_and_resumes(tmp_path: Path) -> None:
    adata = three_perturbation_counts()  # the data the old collection was fitted on
    then = np.load(OLD / "predicted_main.npz")
    old = cellw1.load(OLD)
    assert isinstance(old, ModelCollection)
    assert not (OLD / SHARED_EMBEDDING_FILE).exists()
    for label, model in old.items():
        np.testing.assert_allclose(np.asarray(model.predict(controls(adata)).X), then[label], rtol=1e-6, atol=1e-6)
    # a run on it (one model missing from its index) fits only that one, which refers to the new shared file
    out = tmp_path / "old"
    shutil.copytree(OLD, out)
    body = json.loads((out / COLLECTION_FILE).read_text())
    del body["models"]["none"]
    (out / COLLECTION_FILE).write_text(json.dumps(body))
    again = cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, out=out, **SETTINGS)
    assert again.resumed == ("down", "up")
    assert "embedding_file" in load_tensors(out / "none" / MODEL_FILE, kind="test")[1]
    assert "embedding.components" in tensor_names(out / "up" / MODEL_FILE)  # the old models are kept as they were
    for label, model in cellw1.load(out).items():
        np.testing.assert_allclose(np.asarray(model.predict(controls(adata)).X), then[label], rtol=1e-6, atol=1e-6)


def test_models_that_share_nothing_keep_the_layout(adata: ad.AnnData, tmp_path: Path) -> None:
    out = tmp_path / "own"
    separate = cellw1.fit_all(adata, "condition", "ctrl", ["p1", "p2"], out=out, **SETTINGS)
    separate.save(tmp_path / "saved")
    for directory in (out, tmp_path / "saved"):
        assert not (directory / SHARED_EMBEDDING_FILE).exists()
        for label in ("p1", "p2"):
            tensors, header = load_tensors(directory / label / MODEL_FILE, kind="test")
            assert {"embedding.mean", "embedding.components", "embedding.explained_variance"} <= set(tensors)
            assert header["format_version"] == 1
            assert "embedding_file" not in header
    single = separate["p1"].save(tmp_path / "single")
    assert "embedding.components" in tensor_names(single / MODEL_FILE)
    assert load_tensors(single / MODEL_FILE, kind="test")[1]["format_version"] == 1
    # a genes space has no weights to share: nothing is written beside the models
    genes = cellw1.fit_all(
        adata,
        "condition",
        "ctrl",
        ["p1", "p2"],
        shared_space=True,
        method="mean_shift",
        progress=False,
        out=tmp_path / "g",
    )
    assert not (tmp_path / "g" / SHARED_EMBEDDING_FILE).exists()
    assert len(cellw1.load(tmp_path / "g")) == len(genes)
