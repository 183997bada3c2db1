"""TransportMap files (atomic, checksummed, no pickle) and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY as TINY_CONFIG

import cellw1
from cellw1 import ConfigError, InputError, ModelFileError, W1Config

TINY = TINY_CONFIG.replace(potential_iters=40)


@pytest.fixture(scope="module")
def fitted() -> tuple[np.ndarray, cellw1.TransportMap]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    return x, cellw1.fit_map(x, x + 1, TINY, seed=0)


def test_save_load_roundtrip_identical(fitted, tmp_path: Path) -> None:
    x, tmap = fitted
    path = tmap.save(tmp_path / "map.safetensors")
    loaded = cellw1.TransportMap.load(path)
    assert np.array_equal(loaded.transport(x), tmap.transport(x))
    assert loaded.config == tmap.config
    assert loaded.info == tmap.info
    # safetensors JSON header
    assert b"pickle" not in path.read_bytes()[:8]
    assert path.read_bytes()[8:9] == b"{"


def test_truncated_and_corrupted_files_are_clear_errors(fitted, tmp_path: Path) -> None:
    _, tmap = fitted
    data = tmap.save(tmp_path / "map.safetensors").read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        cellw1.TransportMap.load(tmp_path / "short.safetensors")
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # one byte of a weight
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ModelFileError, match="checksum"):
        cellw1.TransportMap.load(tmp_path / "flipped.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError):
        cellw1.TransportMap.load(tmp_path / "empty.safetensors")
    with pytest.raises(ModelFileError, match="does not exist"):
        cellw1.TransportMap.load(tmp_path / "missing.safetensors")


def test_crash_mid_save_keeps_previous_file(fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, tmap = fitted
    path = tmap.save(tmp_path / "map.safetensors")
    before = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        tmap.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.safetensors"]  # no temp file left


def test_wrong_dimension_at_transport(fitted) -> None:
    _, tmap = fitted
    with pytest.raises(InputError, match="fitted on 3"):
        tmap.transport(np.zeros((5, 4)))


@pytest.mark.parametrize(
    ("source", "target", "match"),
    [
        (np.zeros((20, 3)), np.zeros((20, 4)), "same features"),
        (np.zeros((5, 3)), np.zeros((20, 3)), "at least 10"),
        (np.zeros(20), np.zeros((20, 1)), "2-D"),
        (np.zeros((20, 3, 1)), np.zeros((20, 3)), "2-D"),
        (np.full((20, 3), np.nan), np.zeros((20, 3)), "NaN or inf"),
        (np.zeros((20, 3)), np.r_[np.zeros((19, 3)), [[np.inf, 0, 0]]], "NaN or inf"),
        (np.array([["a"] * 3] * 20), np.zeros((20, 3)), "numeric"),
    ],
)
def test_bad_input_is_a_clear_error(source: np.ndarray, target: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        cellw1.fit_map(source, target, TINY)


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="does not divide"):
        W1Config(hidden=(64, 30))
    with pytest.raises(ConfigError, match="unknown orthonormalization"):
        W1Config(orthonormalization="householder")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="step_size_learner"):
        W1Config(step_size_learner="magic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="group_size"):
        W1Config(group_size=1)
    with pytest.raises(ConfigError, match="ot_exponent"):
        W1Config(ot_exponent=1.0)


def test_inputs_never_modified() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2))
    y = rng.normal(size=(40, 2)) + 2
    x0, y0 = x.copy(), y.copy()
    tmap = cellw1.fit_map(x, y, TINY.replace(hidden=(8,)))
    tmap.transport(x)
    assert np.array_equal(x, x0)
    assert np.array_equal(y, y0)


def test_paper_preset_is_faithful() -> None:
    cfg = W1Config.paper()
    assert cfg.step_size_learner == "gan"
    assert cfg.step_iters == 10_000
    assert cfg.step_lr == 1e-4
    assert cfg.potential_iters == 10_000
    assert cfg.potential_lr == 1e-2
    assert cfg.potential_lr_min == 1e-4
    assert cfg.potential_betas == (0.5, 0.5)
    assert cfg.batch_size == 256
    assert cfg.group_size == 4
    assert cfg.hidden == (64, 64, 64, 64)
    assert cfg.orthonormalization == "cayley"
    assert W1Config.from_dict(cfg.to_dict()) == cfg


def test_unavailable_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():  # pragma: no cover
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        cellw1.fit_map(np.zeros((20, 2)), np.ones((20, 2)), TINY.replace(device="cuda"))
