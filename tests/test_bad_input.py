"""Hostile and faulty input through the API and the CLI (issue #11).

Every case checks three things: the exception type (API) or the exit code and the one-line
``cellw1: ...`` message (CLI); that no Python traceback reaches stderr; and that the input
files and any output that existed before are byte-identical afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import TINY as TINY_CONFIG
from conftest import count_adata, digest, temp_files
from safetensors.torch import save as st_save

import cellw1
from cellw1 import ConfigError, InputError, ModelFileError, W1Config
from cellw1.cli.main import main
from cellw1.files.model_files import content_checksum, load_tensors, tensor_checksum

TINY = TINY_CONFIG.replace(batch_size=32)
TINY_ARGS = ["--potential-iters", "20", "--regression-iters", "20", "--energy-iters", "20", "--quiet"]


def counts(n: int = 40, genes: int = 12, seed: int = 0, labels: tuple[Any, Any] = ("ctrl", "pert")) -> ad.AnnData:
    """Counts of ``n`` control and ``n`` perturbed cells; the perturbation doubles genes 0-2."""
    return count_adata(
        labels,
        n,
        genes,
        seed=seed,
        effects={1: 2.0},
        affected=3,
        gamma=(3.0, 5.0),
        key="cond",
        cell_name="c{}",
        gene_name="g{:03d}",
        sparse=False,
    )


def adata_digest(adata: ad.AnnData) -> str:
    h = hashlib.sha256(np.ascontiguousarray(np.asarray(adata.X)).tobytes())
    h.update(adata.obs.to_csv().encode() + adata.var.to_csv().encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An input file, a fitted model directory and a prediction written from them."""
    root = tmp_path_factory.mktemp("bad_input")
    cells = counts()
    cells.write_h5ad(root / "cells.h5ad")
    cells.write_zarr(root / "cells.zarr")
    model = cellw1.fit(cells, "cond", "ctrl", "pert", config=TINY, progress=False)
    model.save(root / "model")
    model.predict(cells[:40].copy(), out=root / "pred.h5ad")
    model.method.map.save(root / "map.safetensors")
    return {
        "root": root,
        "cells": root / "cells.h5ad",
        "zarr": root / "cells.zarr",
        "model": root / "model",
        "pred": root / "pred.h5ad",
        "map": root / "map.safetensors",
    }


@pytest.fixture
def guard(files: dict[str, Path]):
    """Check, after the test, that the shared input, model and prediction were not touched."""
    keys = ("cells", "zarr", "model", "pred", "map")
    before = {k: digest(files[k]) for k in keys}
    yield
    assert {k: digest(files[k]) for k in keys} == before
    assert temp_files(files["root"]) == []


# -- API -------------------------------------------------------------------------------------------


def zero_cells() -> ad.AnnData:
    a = counts()
    a.X = np.zeros_like(a.X)
    return a


def constant_cells() -> ad.AnnData:
    a = counts()
    a.X = np.full_like(a.X, 3.0)
    return a


def duplicate_genes() -> ad.AnnData:
    a = counts()
    a.var_names = ["g000", "g001", "g000", *a.var_names[3:-1], "g001"]
    return a


def zero_obsm() -> ad.AnnData:
    a = counts()
    a.obsm["emb"] = np.zeros((a.n_obs, 4), dtype=np.float32)
    return a


def fit_with(adata: Callable[[], ad.AnnData] | None = None, **kwargs: Any) -> Callable[[dict], Any]:
    """A case that fits ``adata()`` (default: good counts) with ``kwargs``."""
    args = {"condition_key": "cond", "control": "ctrl", "perturbation": "pert", "config": TINY, "progress": False}
    args.update(kwargs)
    return lambda f: cellw1.fit((adata or counts)(), **args)


def config(**fields: Any) -> Callable[[dict], Any]:
    return lambda f: W1Config(**fields)


API_CASES: list[tuple[str, Callable[[dict], Any], type[BaseException], str]] = [
    # wrong argument types (item 7)
    ("fit-ndarray", lambda f: cellw1.fit(np.ones((80, 5)), "cond", "ctrl", "pert"), TypeError, "expects an AnnData"),
    ("fit-all-ndarray", lambda f: cellw1.fit_all(np.ones((80, 5)), "cond", "ctrl"), TypeError, "expects an AnnData"),
    (
        "fit-dataframe",
        lambda f: cellw1.fit(pd.DataFrame(np.ones((80, 5))), "cond", "ctrl", "pert"),
        TypeError,
        "AnnData",
    ),
    ("predict-ndarray", lambda f: cellw1.load(f["model"]).predict(np.ones((5, 12))), TypeError, "expects an AnnData"),
    ("predict-list", lambda f: cellw1.load(f["model"]).predict([[1.0] * 12]), TypeError, "AnnData"),
    ("evaluate-ndarray", lambda f: cellw1.evaluate(np.ones((80, 5)), "cond", "ctrl"), InputError, "AnnData"),
    # config fields (item 5)
    ("config-nan-exponent", config(ot_exponent=float("nan")), ConfigError, "ot_exponent=nan"),
    ("config-inf-lr", config(potential_lr=float("inf")), ConfigError, "potential_lr"),
    ("config-nan-val", config(val_fraction=float("nan")), ConfigError, "val_fraction"),
    ("config-nan-min-delta", config(min_delta=float("nan")), ConfigError, "min_delta"),
    ("config-float-iters", config(potential_iters=20.5), ConfigError, "potential_iters=20.5 must be an integer"),
    ("config-bool-iters", config(step_iters=True), ConfigError, "step_iters=True must be an integer"),
    ("config-str-batch", config(batch_size="256"), ConfigError, "batch_size"),
    ("config-float-hidden", config(hidden=(64.5, 64)), ConfigError, "hidden"),
    ("config-float-patience", config(patience=2.0), ConfigError, "patience"),
    ("config-float-threads", config(cpu_threads=0.5), ConfigError, "cpu_threads"),
    ("config-one-beta", config(step_betas=(0.9,)), ConfigError, "step_betas"),
    ("config-beta-above-one", config(potential_betas=(0.5, 1.5)), ConfigError, "betas"),
    ("config-negative-lr-min", config(potential_lr_min=-1e-4), ConfigError, "learning rates must be positive"),
    ("config-device-tpu", config(device="tpu"), ConfigError, "device 'tpu'"),
    ("config-device-int", config(device=3), ConfigError, "device=3"),
    ("config-refine-lr-nan", config(refine_lr=float("nan")), ConfigError, "refine_lr"),
    ("w2-config-nan-lr", lambda f: cellw1.W2Config(lr=float("nan")), ConfigError, "lr=nan"),
    ("w2-config-float-hidden", lambda f: cellw1.W2Config(hidden=(64.5,)), ConfigError, "hidden"),
    ("embedding-config-inf-lr", lambda f: cellw1.EmbeddingConfig(ae_lr=float("inf")), ConfigError, "ae_lr=inf"),
    ("embedding-config-bool", lambda f: cellw1.EmbeddingConfig(n_components=True), ConfigError, "n_components"),
    ("fit-device-missing", fit_with(config=TINY.replace(device="cuda:99")), ConfigError, "cuda:99"),
    # seeds (item 5)
    ("fit-seed-string", fit_with(seed="0"), ConfigError, "seed='0' must be a non-negative integer"),
    ("fit-seed-negative", fit_with(seed=-1), ConfigError, "seed=-1"),
    ("fit-seed-bool", fit_with(seed=True), ConfigError, "seed=True"),
    ("fit-all-seed-float", lambda f: cellw1.fit_all(counts(), "cond", "ctrl", seed=1.5), ConfigError, "seed=1.5"),
    (
        "fit-map-seed-negative",
        lambda f: cellw1.fit_map(np.ones((20, 2)), np.ones((20, 2)), TINY, seed=-3),
        ConfigError,
        "seed=-3",
    ),
    (
        "fit-map-bad-config",
        lambda f: cellw1.fit_map(np.ones((20, 2)), np.ones((20, 2)), {"potential_iters": 5}),
        ConfigError,
        "W1Config",
    ),
    # no signal (item 4)
    ("fit-all-zero", fit_with(zero_cells), InputError, "no signal"),
    ("fit-all-zero-log", fit_with(zero_cells, input_kind="log"), InputError, "no signal"),
    ("fit-all-zero-counts", fit_with(zero_cells, input_kind="counts"), InputError, "zero counts"),
    ("fit-constant-genes", fit_with(constant_cells), InputError, "no signal"),
    ("fit-zero-obsm", fit_with(zero_obsm, obsm_key="emb"), InputError, "no signal"),
    (
        "fit-all-all-zero",
        lambda f: cellw1.fit_all(zero_cells(), "cond", "ctrl", on_error="raise", config=TINY, progress=False),
        InputError,
        "no signal",
    ),
    # duplicate genes (item 10)
    ("fit-duplicate-genes", fit_with(duplicate_genes), InputError, "2 repeated: g000, g001"),
    # labels
    ("fit-missing-control", fit_with(control="nope"), InputError, "control 'nope' is not a value"),
    ("fit-same-labels", fit_with(perturbation="ctrl"), InputError, "both 'ctrl'"),
    ("fit-nan-control", fit_with(control=float("nan")), InputError, "is not a value"),
    ("fit-missing-key", fit_with(condition_key="nope"), InputError, "condition key 'nope'"),
    # outputs that would overwrite the input or are of the wrong kind (item 1)
    (
        "predict-out-is-input",
        lambda f: cellw1.load(f["model"]).predict(str(f["cells"]), out=f["cells"]),
        InputError,
        "would overwrite the input",
    ),
    (
        "predict-out-is-input-zarr",
        lambda f: cellw1.load(f["model"]).predict(str(f["zarr"]), out=f["zarr"]),
        InputError,
        "would overwrite the input",
    ),
    (
        "predict-out-inside-input-zarr",
        lambda f: cellw1.load(f["model"]).predict(str(f["zarr"]), out=f["zarr"] / "X" / "p.h5ad"),
        InputError,
        "would overwrite the input",
    ),
    (
        "predict-out-is-directory",
        lambda f: cellw1.load(f["model"]).predict(str(f["cells"]), out=f["dir_h5ad"]),
        InputError,
        "is a directory",
    ),
    (
        "predict-out-zarr-is-folder",
        lambda f: cellw1.load(f["model"]).predict(str(f["cells"]), out=f["folder_zarr"]),
        InputError,
        "not a .zarr store",
    ),
    (
        "predict-out-zarr-is-file",
        lambda f: cellw1.load(f["model"]).predict(str(f["cells"]), out=f["file_zarr"]),
        InputError,
        "is a file",
    ),
    (
        "predict-chunk-zero",
        lambda f: cellw1.load(f["model"]).predict(str(f["cells"]), chunk_cells=0),
        InputError,
        "chunk_cells",
    ),
    (
        "predict-chunk-float",
        lambda f: cellw1.load(f["model"]).predict(str(f["cells"]), chunk_cells=2.5),
        InputError,
        "chunk_cells",
    ),
    (
        "fit-all-out-is-input",
        lambda f: cellw1.fit_all(str(f["cells"]), "cond", "ctrl", out=f["cells"]),
        InputError,
        "would overwrite the input",
    ),
    ("fit-all-out-is-file", lambda f: cellw1.fit_all(counts(), "cond", "ctrl", out=f["pred"]), InputError, "is a file"),
    ("save-into-collection", lambda f: cellw1.load(f["model"]).save(f["collection"]), InputError, "holds a collection"),
    # model files (items 2 and 9)
    ("load-transport-map-file", lambda f: cellw1.load(f["map"]), ModelFileError, "cellw1.TransportMap.load"),
    ("load-map-in-model-dir", lambda f: cellw1.load(f["map_dir"]), ModelFileError, "cellw1.TransportMap.load"),
    (
        "transport-map-load-model",
        lambda f: cellw1.TransportMap.load(f["model"] / "model.safetensors"),
        ModelFileError,
        "cellw1.load(directory)",
    ),
    ("load-header-bit-flip", lambda f: cellw1.load(f["flipped"]), ModelFileError, "checksum mismatch"),
    ("load-checksum-removed", lambda f: cellw1.load(f["unchecked"]), ModelFileError, "checksum mismatch"),
    ("load-missing", lambda f: cellw1.load(f["root"] / "nothing"), ModelFileError, "does not exist"),
    ("load-other-file", lambda f: cellw1.load(f["cells"]), ModelFileError, "is a file"),
    ("load-newer-format", lambda f: cellw1.load(f["newer"]), ModelFileError, "upgrade cellw1"),
]


def _write_variant(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """Copy a model directory, rewriting the metadata of its safetensors file with ``edit``."""
    shutil.copytree(source, target)
    path = target / "model.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    head = json.loads(data[8 : 8 + n])
    edit(head["__metadata__"])
    raw = json.dumps(head).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    return target


@pytest.fixture(scope="module")
def broken(files: dict[str, Path]) -> dict[str, Path]:
    """Model directories damaged in one way each, and outputs of the wrong kind."""
    root = files["root"] / "broken"
    root.mkdir()

    def flip_gene(meta: dict) -> None:  # g001 -> g003 inside the header, as in the issue
        meta["cellw1"] = meta["cellw1"].replace('"g001"', '"g003"', 1)

    def drop_checksum(meta: dict) -> None:
        meta.pop("sha256_content", None)

    def newer(meta: dict) -> None:
        header = json.loads(meta["cellw1"])
        header["format_version"] = 99
        meta["cellw1"] = json.dumps(header, sort_keys=True)
        tensors = load_tensors(files["model"] / "model.safetensors", kind="x")[0]
        meta["sha256_content"] = content_checksum(meta["cellw1"], tensors)

    out = dict(files)
    out["flipped"] = _write_variant(files["model"], root / "flipped", flip_gene)
    out["unchecked"] = _write_variant(files["model"], root / "unchecked", drop_checksum)
    out["newer"] = _write_variant(files["model"], root / "newer", newer)
    (root / "map_dir").mkdir()
    shutil.copy(files["map"], root / "map_dir" / "model.safetensors")
    out["map_dir"] = root / "map_dir"
    (root / "folder.zarr").mkdir()
    (root / "folder.zarr" / "notes.txt").write_text("not a zarr store")
    out["folder_zarr"] = root / "folder.zarr"
    (root / "file.zarr").write_text("a file")
    out["file_zarr"] = root / "file.zarr"
    (root / "dir.h5ad").mkdir()
    out["dir_h5ad"] = root / "dir.h5ad"
    (root / "collection").mkdir()
    (root / "collection" / "collection.json").write_text("{}")
    out["collection"] = root / "collection"
    return out


@pytest.mark.parametrize(("name", "case", "error", "message"), API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(name, case, error, message, broken, guard, capfd) -> None:
    others = {k: digest(v) for k, v in broken.items() if k != "root"}
    with pytest.raises(error, match=_literal(message)):
        case(broken)
    assert {k: digest(v) for k, v in broken.items() if k != "root"} == others
    assert "Traceback" not in capfd.readouterr().err


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_in_memory_input_is_never_modified() -> None:
    for make in (zero_cells, constant_cells, duplicate_genes, counts):
        adata = make()
        before = adata_digest(adata)
        with contextlib.suppress(InputError):
            cellw1.fit(adata, "cond", "ctrl", "pert", config=TINY, progress=False)
        assert adata_digest(adata) == before


def test_integer_labels_are_compared_as_labels(tmp_path: Path) -> None:
    adata = counts(labels=(0, 1))
    model = cellw1.fit(adata, "cond", 0, 1, config=TINY, progress=False)
    assert (model.control, model.perturbation) == ("0", "1")
    assert cellw1.fit(adata, "cond", "0", np.int64(1), config=TINY, progress=False).control == "0"
    floats = adata.copy()
    floats.obs["cond"] = floats.obs["cond"].astype(float)
    floats.obs.loc[floats.obs_names[0], "cond"] = np.nan  # ints with a gap become floats in pandas
    assert cellw1.fit(floats, "cond", 0, 1, config=TINY, progress=False).info["n_control"] == 39
    collection = cellw1.fit_all(adata, "cond", 0, config=TINY, progress=False)
    assert list(collection) == ["1"]
    out = model.predict(adata)
    assert out.n_obs == adata.n_obs
    from cellw1.cli.predict import control_cells

    assert control_cells(model, adata).sum() == 40


def test_nan_labels_are_dropped_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    adata = counts(labels=("ctrl", "pert"))
    extra = counts(n=10, seed=1)
    extra.obs["cond"] = [np.nan, None] * 10
    extra.obs_names = [f"x{i}" for i in range(20)]
    both = ad.concat([adata, extra])
    with caplog.at_level(logging.WARNING, logger="cellw1"):
        collection = cellw1.fit_all(both, "cond", "ctrl", out=tmp_path / "models", config=TINY, progress=False)
    assert list(collection) == ["pert"]
    assert not any("nan" in p.name.lower() for p in (tmp_path / "models").iterdir())
    warnings = [r.getMessage() for r in caplog.records if "no label" in r.getMessage()]
    assert warnings == ["20 of 100 cells have no label in obs['cond'] (NaN or None); they are left out."]


def test_header_bit_flip_used_to_load_silently(broken: dict[str, Path]) -> None:
    """Item 2: the issue's exact corruption (g001 -> g003 in the header) is refused."""
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        cellw1.PerturbationModel.load(broken["flipped"])


def test_model_files_of_cellw1_0_1_still_load(files: dict[str, Path], tmp_path: Path, caplog) -> None:
    """A file written before header checksums loads (weights verified) with one warning."""
    tensors, header = load_tensors(files["model"] / "model.safetensors", kind="PerturbationModel")
    old = tmp_path / "old"
    old.mkdir()
    meta = {"cellw1": json.dumps(header, sort_keys=True), "sha256": tensor_checksum(tensors)}
    (old / "model.safetensors").write_bytes(st_save(tensors, metadata=meta))
    with caplog.at_level(logging.WARNING, logger="cellw1"):
        model = cellw1.load(old)
    assert model.features == cellw1.load(files["model"]).features
    assert any("predates header checksums" in r.getMessage() for r in caplog.records)
    name = sorted(tensors)[0]
    changed = {k: v.clone() for k, v in tensors.items()}
    changed[name] = changed[name] + 1.0  # weights changed, checksum of the old ones: refused
    (old / "model.safetensors").write_bytes(st_save(changed, metadata=meta))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        cellw1.load(old)


def test_model_file_path_loads_its_directory(files: dict[str, Path]) -> None:
    model = cellw1.load(files["model"] / "model.safetensors")
    assert model.perturbation == "pert"


def test_predict_out_through_symlink_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    link = tmp_path / "link.h5ad"
    link.symlink_to(files["cells"])
    before = digest(files["cells"])
    with pytest.raises(InputError, match="would overwrite the input"):
        cellw1.load(files["model"]).predict(str(files["cells"]), out=link)
    assert digest(files["cells"]) == before


def test_zarr_with_deleted_chunks_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "hollow.zarr"
    shutil.copytree(files["zarr"], store)
    chunks = [p for p in (store / "X").rglob("*") if p.is_file() and p.name not in ("zarr.json", ".zarray", ".zattrs")]
    assert chunks
    for chunk in chunks:
        chunk.unlink()
    for data in (str(store), ad.read_zarr(store)):
        with pytest.raises(InputError, match="no signal"):
            cellw1.fit(data, "cond", "ctrl", "pert", config=TINY, progress=False)


def test_duplicate_genes_on_disk_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.h5ad"
    duplicate_genes().write_h5ad(path)
    with pytest.raises(InputError, match="g000, g001"):
        cellw1.fit(str(path), "cond", "ctrl", "pert", config=TINY, progress=False)


# -- CLI (in this process) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(broken: dict[str, Path]) -> dict[str, Path]:
    root = broken["root"] / "cli"
    root.mkdir()
    out = dict(broken)
    for name, make in (("zero", zero_cells), ("dup", duplicate_genes), ("ints", lambda: counts(labels=(0, 1)))):
        make().write_h5ad(root / f"{name}.h5ad")
        out[name] = root / f"{name}.h5ad"
    nan = counts()
    nan.obs["cond"] = nan.obs["cond"].astype(object)
    nan.obs.iloc[:5, 0] = np.nan
    nan.obs["cond"] = nan.obs["cond"].astype("category")
    nan.write_h5ad(root / "nan.h5ad")
    out["nan"] = root / "nan.h5ad"
    zero_cells().write_zarr(root / "zero.zarr")
    out["zero_zarr"] = root / "zero.zarr"
    (root / "garbage.h5ad").write_bytes(b"not hdf5 at all")
    out["garbage"] = root / "garbage.h5ad"
    (root / "link.h5ad").symlink_to(broken["cells"])
    out["link"] = root / "link.h5ad"
    out["cli"] = root
    return out


KEYS = ["--condition-key", "cond", "--control", "ctrl"]
FIT = ["fit", "{cells}", *KEYS, "--perturbation", "pert", *TINY_ARGS]
FIT_ALL = ["fit", "{cells}", *KEYS, "--perturbation", "all", *TINY_ARGS]

CLI_CASES: list[tuple[str, list[str], int, str]] = [
    ("predict-out-is-input", ["predict", "{model}", "{cells}", "--out", "{cells}"], 2, "would overwrite the input"),
    (
        "predict-out-symlink-to-input",
        ["predict", "{model}", "{cells}", "--out", "{link}"],
        2,
        "would overwrite the input",
    ),
    (
        "predict-out-is-input-on-disk",
        ["predict", "{model}", "{cells}", "--out", "{cells}", "--on-disk"],
        2,
        "would overwrite the input",
    ),
    ("predict-out-is-input-zarr", ["predict", "{model}", "{zarr}", "--out", "{zarr}"], 2, "would overwrite the input"),
    ("predict-out-is-directory", ["predict", "{model}", "{cells}", "--out", "{dir_h5ad}"], 2, "is a directory"),
    ("predict-out-zarr-is-folder", ["predict", "{model}", "{cells}", "--out", "{folder_zarr}"], 2, "not a .zarr store"),
    ("predict-out-bad-suffix", ["predict", "{model}", "{cells}", "--out", "{cli}/p.csv"], 2, "must end in .h5ad"),
    ("predict-model-missing", ["predict", "{cli}/none", "{cells}", "--out", "{cli}/p.h5ad"], 3, "does not exist"),
    ("predict-model-is-map", ["predict", "{map}", "{cells}", "--out", "{cli}/p.h5ad"], 3, "cellw1.TransportMap.load"),
    (
        "predict-model-dir-holds-map",
        ["predict", "{map_dir}", "{cells}", "--out", "{cli}/p.h5ad"],
        3,
        "cellw1.TransportMap.load",
    ),
    (
        "predict-model-header-flipped",
        ["predict", "{flipped}", "{cells}", "--out", "{cli}/p.h5ad"],
        3,
        "checksum mismatch",
    ),
    ("predict-data-missing", ["predict", "{model}", "{cli}/none.h5ad", "--out", "{cli}/p.h5ad"], 2, "does not exist"),
    ("predict-data-garbage", ["predict", "{model}", "{garbage}", "--out", "{cli}/p.h5ad"], 2, "could not be read"),
    (
        "predict-chunk-zero",
        ["predict", "{model}", "{cells}", "--out", "{cli}/p.h5ad", "--on-disk", "--chunk-cells", "0"],
        2,
        "--chunk-cells 0 must be",  # the option the user typed, not the Python argument
    ),
    (
        "predict-controls-only-none",
        ["predict", "{model}", "{ints}", "--out", "{cli}/p.h5ad", "--controls-only"],
        2,
        "no cell has obs['cond'] == 'ctrl'",
    ),
    ("fit-out-existing-file", [*FIT, "--out", "{pred}"], 2, "is a file"),
    ("fit-out-is-input", [*FIT, "--out", "{cells}"], 2, "would overwrite the input"),
    ("fit-all-out-is-input", [*FIT_ALL, "--out", "{cells}"], 2, "would overwrite the input"),
    ("fit-out-is-collection", [*FIT, "--out", "{collection}"], 2, "holds a collection"),
    ("fit-all-out-is-model", [*FIT_ALL, "--out", "{model}"], 2, "holds a single model"),
    ("fit-device-tpu", [*FIT, "--device", "tpu", "--out", "{cli}/m"], 2, "unknown device 'tpu'"),
    ("fit-device-cuda-99", [*FIT, "--device", "cuda:99", "--out", "{cli}/m"], 2, "cuda:99"),
    ("fit-iters-zero", [*FIT, "--potential-iters", "0", "--out", "{cli}/m"], 2, "potential_iters=0"),
    ("fit-seed-negative", [*FIT, "--seed", "-1", "--out", "{cli}/m"], 2, "seed=-1"),
    ("fit-seed-not-int", [*FIT, "--seed", "zero", "--out", "{cli}/m"], 2, ""),
    (
        "fit-all-zero",
        [
            "fit",
            "{zero}",
            "--condition-key",
            "cond",
            "--control",
            "ctrl",
            "--perturbation",
            "pert",
            *TINY_ARGS,
            "--out",
            "{cli}/m",
        ],
        2,
        "no signal",
    ),
    (
        "fit-all-zero-on-disk",
        [
            "fit",
            "{zero}",
            "--condition-key",
            "cond",
            "--control",
            "ctrl",
            "--perturbation",
            "pert",
            *TINY_ARGS,
            "--on-disk",
            "--out",
            "{cli}/m",
        ],
        2,
        "no signal",
    ),
    (
        "fit-all-zero-zarr",
        [
            "fit",
            "{zero_zarr}",
            "--condition-key",
            "cond",
            "--control",
            "ctrl",
            "--perturbation",
            "pert",
            *TINY_ARGS,
            "--out",
            "{cli}/m",
        ],
        2,
        "no signal",
    ),
    (
        "fit-duplicate-genes",
        [
            "fit",
            "{dup}",
            "--condition-key",
            "cond",
            "--control",
            "ctrl",
            "--perturbation",
            "pert",
            *TINY_ARGS,
            "--out",
            "{cli}/m",
        ],
        2,
        "g000, g001",
    ),
    (
        "fit-control-missing",
        ["fit", "{cells}", "--condition-key", "cond", "--control", "nope", *FIT[6:], "--out", "{cli}/m"],
        2,
        "control 'nope'",
    ),
    ("fit-data-missing", ["fit", "{cli}/none.h5ad", *FIT[2:], "--out", "{cli}/m"], 2, "does not exist"),
    ("fit-data-garbage", ["fit", "{garbage}", *FIT[2:], "--out", "{cli}/m"], 2, "could not be read"),
    ("fit-buffer-without-disk", [*FIT, "--buffer-cells", "10", "--out", "{cli}/m"], 2, "--on-disk only"),
    ("fit-effect-alpha-out-of-range", [*FIT, "--effect-alpha", "1.5", "--out", "{cli}/m"], 2, "--effect-alpha 1.5"),
    ("fit-effect-alpha-not-a-number", [*FIT, "--effect-alpha", "often", "--out", "{cli}/m"], 2, ""),
    (
        "evaluate-out-existing-file",
        ["evaluate", "{cells}", "--condition-key", "cond", "--control", "ctrl", "--out", "{pred}"],
        2,
        "is a file",
    ),
    (
        "evaluate-out-is-input-zarr",
        ["evaluate", "{zarr}", "--condition-key", "cond", "--control", "ctrl", "--out", "{zarr}"],
        2,
        "would overwrite the input",
    ),
    ("unknown-verb", ["transmogrify"], 2, ""),
]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


@pytest.mark.parametrize(("name", "argv", "code", "message"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(name, argv, code, message, cli_files, guard, capsys) -> None:
    argv = [a.format(**cli_files) for a in argv]
    others = {k: digest(v) for k, v in cli_files.items() if k not in ("root", "cli")}
    got, _, err = run_cli(argv, capsys)
    assert got == code, err
    lines = err.strip().splitlines()
    if name in (
        "unknown-verb",
        "fit-seed-not-int",
        "fit-effect-alpha-not-a-number",
    ):  # argparse's usage message, then one error line
        assert lines[-1].startswith("cellw1")
        assert "error:" in lines[-1]
    else:
        assert len(lines) == 1, err
        assert lines[0].startswith("cellw1: error: "), err
        assert message in lines[0], err
    assert {k: digest(v) for k, v in cli_files.items() if k not in ("root", "cli")} == others
    assert not (cli_files["cli"] / "m").exists()
    assert not (cli_files["cli"] / "p.h5ad").exists()


def test_cli_fit_out_existing_file_is_refused_before_fitting(cli_files, capsys) -> None:
    """Item 6: the refusal comes before the fit (the data are never read)."""
    argv = [a.format(**cli_files) for a in ["fit", "{garbage}", *FIT[2:], "--out", "{pred}"]]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert "is a file" in err
    assert "could not be read" not in err


def test_cli_nan_labels_and_integer_labels(cli_files, tmp_path, capsys) -> None:
    argv = [
        "fit",
        str(cli_files["nan"]),
        "--condition-key",
        "cond",
        "--control",
        "ctrl",
        "--perturbation",
        "all",
        *TINY_ARGS,
        "--out",
        str(tmp_path / "models"),
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "5 of 80 cells have no label" in err
    assert err.count("no label") == 1
    assert sorted(json.loads((tmp_path / "models" / "collection.json").read_text())["models"]) == ["pert"]
    argv = [
        "fit",
        str(cli_files["ints"]),
        "--condition-key",
        "cond",
        "--control",
        "0",
        "--perturbation",
        "1",
        *TINY_ARGS,
        "--out",
        str(tmp_path / "ints"),
    ]
    assert run_cli(argv, capsys)[0] == 0
    argv = [
        "predict",
        str(tmp_path / "ints"),
        str(cli_files["ints"]),
        "--out",
        str(tmp_path / "p.h5ad"),
        "--controls-only",
    ]
    assert run_cli(argv, capsys)[0] == 0
    paired = ad.read_h5ad(tmp_path / "p.h5ad")  # 40 predicted controls, then the 40 controls as measured
    assert paired.n_obs == 80
    assert list(paired.obs["cond"].astype(str)) == ["1"] * 40 + ["0"] * 40


def test_exit_codes_are_documented(capsys) -> None:
    from cellw1.cli.main import EXIT_CODES

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in EXIT_CODES:
        assert f"  {code} " in out
    text = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    for code in EXIT_CODES:
        assert f"| {code} |" in text


def test_api_cases_count() -> None:
    assert len(API_CASES) + len(CLI_CASES) >= 60
