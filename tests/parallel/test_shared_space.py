"""fit_all(shared_space=True): one normalisation and embedding for a screen, reused by every fit.

In this process (the cluster's copy is in test_distributed.py): the shared space is the one fitted
on the controls and every perturbation, each model holds it, the saved collection loads and predicts
the same, an interrupted run resumes with the same space, and the progress lines reach the log.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pytest
from conftest import three_perturbation_counts

import cellw1
import cellw1.parallel.perturbations
import cellw1.tl.api
from cellw1 import ConfigError
from cellw1.cli.main import main
from cellw1.io.source import open_source
from cellw1.tl.model import COLLECTION_FILE, PerturbationModel
from cellw1.tl.pipeline import EncodedGroup, fit_shared_space
from cellw1.tl.spec import FitSpec


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    """Counts of a control (uneven: 70 cells) and three perturbations; 'up' and 'down' move genes 0-3."""
    return three_perturbation_counts()


SETTINGS = dict(method="mean_shift", space="pca", embedding_config=cellw1.EmbeddingConfig(n_components=5))


def control_predictions(collection: cellw1.ModelCollection, adata: ad.AnnData) -> dict[str, np.ndarray]:
    control = adata[adata.obs["condition"] == "ctrl"]
    return {label: np.asarray(model.predict(control).X) for label, model in collection.items()}


def test_every_model_holds_the_space_fitted_on_the_whole_screen(adata: ad.AnnData) -> None:
    shared = cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, progress=False, **SETTINGS)
    with open_source(adata, "test") as source:
        expected_pre, expected_embedding = fit_shared_space(
            source,
            np.arange(adata.n_obs),
            FitSpec(
                condition_key="condition", control="ctrl", space="pca", embedding_config=SETTINGS["embedding_config"]
            ),
        )
    for model in shared.values():
        assert model.preprocessor == expected_pre
        for got, want in zip(
            model.embedding.state_tensors().values(), expected_embedding.state_tensors().values(), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # the default fits one space per perturbation, on its own cells only: the PCAs differ
    alone = cellw1.fit_all(adata, "condition", "ctrl", progress=False, **SETTINGS)
    components = [next(iter(m.embedding.state_tensors().values())) for m in alone.values()]
    assert not np.array_equal(np.asarray(components[0]), np.asarray(components[1]))
    # a shared-space model is the single fit given that space
    single = cellw1.fit(
        adata,
        "condition",
        "ctrl",
        "up",
        progress=False,
        preprocessor=expected_pre,
        embedding=expected_embedding,
        **SETTINGS,
    )
    np.testing.assert_array_equal(
        control_predictions(shared, adata)["up"], np.asarray(single.predict(adata[adata.obs["condition"] == "ctrl"]).X)
    )


def test_saved_collection_loads_and_resumes_after_an_interruption(
    adata: ad.AnnData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "screen"
    save = PerturbationModel.save

    def stop_at_none(self: PerturbationModel, directory: Path, **kwargs: Any) -> Path:
        if self.perturbation == "none":
            raise KeyboardInterrupt
        return save(self, directory, **kwargs)

    monkeypatch.setattr(PerturbationModel, "save", stop_at_none)
    with pytest.raises(KeyboardInterrupt):
        cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, out=out, progress=False, **SETTINGS)
    monkeypatch.undo()
    settings = json.loads((out / COLLECTION_FILE).read_text())["settings"]
    assert settings["preprocessor"]["input_kind"] == "counts"
    assert settings["embedding"]["kind"] == "pca"
    assert "sha256" in settings["embedding"]
    again = cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, out=out, progress=False, **SETTINGS)
    assert again.resumed == ("down",)
    assert list(again) == ["down", "none", "up"]
    whole = cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, progress=False, **SETTINGS)
    loaded = cellw1.load(out)
    assert isinstance(loaded, cellw1.ModelCollection)
    expected = control_predictions(whole, adata)
    for label, got in control_predictions(loaded, adata).items():
        np.testing.assert_array_equal(got, expected[label])
    # the per-perturbation default did not fit these models: it may not resume from them
    with pytest.raises(cellw1.InputError, match="other settings.*embedding"):
        cellw1.fit_all(adata, "condition", "ctrl", out=out, progress=False, **SETTINGS)


def test_progress_lines_give_the_time_left(adata: ad.AnnData, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cellw1"):
        cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, progress=False, **SETTINGS)
    lines = [r.getMessage() for r in caplog.records if "perturbations in" in r.getMessage()]
    assert [line.split()[0] for line in lines] == ["1/3", "2/3", "3/3"]
    assert lines[-1].endswith("about 0:00:00 left")


def test_shared_space_must_be_a_bool(adata: ad.AnnData) -> None:
    with pytest.raises(ConfigError, match="shared_space"):
        cellw1.fit_all(adata, "condition", "ctrl", shared_space="yes", progress=False)  # type: ignore[arg-type]


def test_cli_fits_a_screen_in_one_space(adata: ad.AnnData, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "cells.h5ad"
    adata.write_h5ad(data)
    keys = ["--condition-key", "condition", "--control", "ctrl", "--method", "mean_shift", "--space", "pca"]
    out = tmp_path / "models"
    assert main(["fit", str(data), *keys, "--perturbation", "all", "--shared-space", "--out", str(out), "--quiet"]) == 0
    loaded = cellw1.load(out)
    assert isinstance(loaded, cellw1.ModelCollection)
    first = [np.asarray(t) for t in loaded["up"].embedding.state_tensors().values()]
    for model in loaded.values():
        for got, want in zip(model.embedding.state_tensors().values(), first, strict=True):
            np.testing.assert_array_equal(np.asarray(got), want)
    assert "saved 3 models" in capsys.readouterr().out
    one = ["fit", str(data), *keys, "--perturbation", "up", "--shared-space", "--out", str(tmp_path / "one")]
    assert main(one) != 0
    assert "--shared-space applies to a collection" in capsys.readouterr().err


def encodings_given(monkeypatch: pytest.MonkeyPatch) -> list[EncodedGroup | None]:
    """From now on, the encoded controls (or ``None``) each fit of ``fit_all`` is given, in order."""
    given: list[EncodedGroup | None] = []
    fit_source = cellw1.tl.api.fit_source

    def spy(source, spec, encoded=None):  # noqa: ANN001, ANN202
        given.append(encoded)
        return fit_source(source, spec, encoded)

    monkeypatch.setattr(cellw1.tl.api, "fit_source", spy)
    return given


def test_the_controls_are_encoded_once_for_every_fit(adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch) -> None:
    given = encodings_given(monkeypatch)
    shared = cellw1.fit_all(adata, "condition", "ctrl", shared_space=True, progress=False, **SETTINGS)
    assert len(given) == 3
    assert all(g is given[0] for g in given)  # one encoding of the controls, for every fit
    controls = given[0]
    assert controls is not None
    model = shared["up"]
    np.testing.assert_array_equal(controls.rows, np.flatnonzero(adata.obs["condition"] == "ctrl"))
    expected = model.embedding.encode(model.preprocessor.transform(adata[adata.obs["condition"] == "ctrl"].X))
    np.testing.assert_allclose(controls.cells, expected, rtol=1e-6, atol=1e-6)
    given.clear()
    cellw1.fit_all(adata, "condition", "ctrl", ["up"], progress=False, **SETTINGS)
    assert given == [None]  # the default reads the controls in each fit, through its own space


def test_too_many_controls_to_hold_are_read_by_each_fit(adata: ad.AnnData, monkeypatch: pytest.MonkeyPatch) -> None:
    held = cellw1.fit_all(adata, "condition", "ctrl", ["up"], shared_space=True, progress=False, **SETTINGS)
    monkeypatch.setattr(cellw1.parallel.perturbations, "ENCODED_BYTES", 0)
    given = encodings_given(monkeypatch)
    read = cellw1.fit_all(adata, "condition", "ctrl", ["up"], shared_space=True, progress=False, **SETTINGS)
    assert given == [None]
    np.testing.assert_array_equal(control_predictions(read, adata)["up"], control_predictions(held, adata)["up"])
