"""The prediction methods behind one signature (``cellw1.tl.methods``): known answers for each."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY

from cellw1 import ConfigError, ModelFileError, W1Config, W2Config
from cellw1.ot.sampling import MemoryCells, StreamedCells
from cellw1.tl.methods import METHODS, MeanShift, check_config, check_method, fit_method, load_method


def _groups(n_source: int = 60, n_target: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(n_source, 3)).astype(np.float32)
    target = (rng.normal(size=(n_target, 3)) * 0.5 + [2.0, -1.0, 0.5]).astype(np.float32)
    return source, target


def _roundtrip(fitted):  # type: ignore[no-untyped-def]
    return load_method({k: v.clone() for k, v in fitted.state_tensors().items()}, fitted.header())


def test_identity_returns_the_input_unchanged() -> None:
    source, target = _groups()
    fitted = fit_method("identity", source, target)
    predicted = fitted.predict(source)
    np.testing.assert_array_equal(predicted, source)
    predicted[:] = 0  # a copy: the input is untouched
    assert source.any()
    np.testing.assert_array_equal(fitted.response(source), np.zeros(len(source)))
    np.testing.assert_array_equal(_roundtrip(fitted).predict(source), source)


def test_observed_returns_real_target_cells() -> None:
    source, target = _groups(n_target=40)
    fitted = fit_method("observed", source[:25], target, seed=3)
    predicted = fitted.predict(source[:25])
    rows = {tuple(row) for row in target}
    assert predicted.shape == (25, 3)
    assert all(tuple(row) in rows for row in predicted)
    assert len({tuple(row) for row in predicted}) == 25  # fewer asked than kept: no cell twice
    np.testing.assert_array_equal(fitted.predict(source[:25] + 100.0), predicted)  # it ignores its input
    np.testing.assert_array_equal(_roundtrip(fitted).predict(source[:25]), predicted)
    many = fitted.predict(np.zeros((100, 3), dtype=np.float32))  # more than kept: drawn with replacement
    assert many.shape == (100, 3)
    assert all(tuple(row) in rows for row in many)


def test_mean_shift_moves_the_mean_by_the_training_mean_difference() -> None:
    source, target = _groups()  # equal groups: the balanced subsample is every cell
    fitted = fit_method("mean_shift", source, target, seed=5)
    moved = fitted.predict(source)
    np.testing.assert_allclose(moved.mean(0) - source.mean(0), target.mean(0) - source.mean(0), atol=1e-5)
    np.testing.assert_allclose(moved - source, np.broadcast_to(fitted.shift, source.shape), atol=1e-6)
    np.testing.assert_allclose(fitted.response(source), np.full(60, np.linalg.norm(fitted.shift)), rtol=1e-5)
    assert fitted.info["n_balanced"] == 60
    np.testing.assert_array_equal(_roundtrip(fitted).predict(source), moved)


def test_mean_shift_balances_unequal_groups() -> None:
    """Constant groups of 50 and 20 cells: the shift is exactly b - a whatever the subsample."""
    a, b = np.array([1.0, 2.0], np.float32), np.array([4.0, 0.0], np.float32)
    fitted = fit_method("mean_shift", np.tile(a, (50, 1)), np.tile(b, (20, 1)))
    assert fitted.info["n_balanced"] == 20
    np.testing.assert_array_equal(fitted.shift, b - a)
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(50, 2)), rng.normal(size=(20, 2)) + 3.0
    shift = fit_method("mean_shift", source, target, seed=2).shift  # the means of 20 of the 50 source cells
    assert not np.allclose(shift, target.mean(0) - source.mean(0), atol=1e-4)
    assert np.allclose(shift, target.mean(0) - source.mean(0), atol=0.6)


def test_mean_shift_and_observed_read_the_same_cells_from_a_stream() -> None:
    source, target = _groups(n_source=70, n_target=45)

    class Rows:
        def __init__(self, x: np.ndarray) -> None:
            self.x, self.shape = x, x.shape

        def read(self, rows: np.ndarray) -> np.ndarray:
            assert (np.diff(rows) > 0).all()
            return self.x[rows]

    def streamed(x: np.ndarray) -> StreamedCells:
        return StreamedCells(Rows(x), np.arange(len(x)), lambda raw: raw, 3, buffer_cells=8, block_cells=4)

    for name in ("mean_shift", "observed"):
        memory = fit_method(name, source, target, seed=1)
        stream = fit_method(name, streamed(source), streamed(target), seed=1)
        np.testing.assert_allclose(stream.predict(source), memory.predict(source), rtol=0, atol=1e-6)
    cells = MemoryCells(torch.from_numpy(target))
    assert MeanShift.fit(cells, cells).shift.tolist() == [0.0, 0.0, 0.0]


def test_neural_methods_wrap_their_maps() -> None:
    source, target = _groups(n_source=80, n_target=80)
    w1 = fit_method("w1", source, target, config=TINY)
    np.testing.assert_allclose(w1.predict(source), w1.map.transport(source), rtol=0, atol=0)
    np.testing.assert_allclose(w1.response(source), w1.map.step_size(source), rtol=0, atol=0)
    np.testing.assert_allclose(_roundtrip(w1).predict(source), w1.predict(source), rtol=1e-6, atol=1e-6)
    w2 = fit_method("w2", source, target, config=W2Config(hidden=(8, 8), n_iters=4, eval_every=2))
    np.testing.assert_allclose(w2.predict(source), w2.map.transport(source), rtol=0, atol=0)
    np.testing.assert_allclose(w2.response(source), np.linalg.norm(w2.predict(source) - source, axis=1), rtol=1e-6)
    np.testing.assert_allclose(_roundtrip(w2).predict(source), w2.predict(source), rtol=1e-6, atol=1e-6)
    assert w1.info["fit_seconds"] > 0
    assert w2.info["n_source"] == 80


def test_method_names_and_configs_are_checked() -> None:
    assert METHODS == ("identity", "observed", "mean_shift", "scgen_vae", "w2", "w1")
    assert all(check_method(name) == name for name in METHODS)
    with pytest.raises(ConfigError, match="unknown method 'cellot'; choose one of identity"):
        check_method("cellot")
    assert check_config("w1", None) is W1Config
    assert check_config("mean_shift", W1Config()) is None
    with pytest.raises(ConfigError, match="method 'w2' needs a W2Config, got W1Config"):
        fit_method("w2", *_groups(), config=W1Config())
    with pytest.raises(ModelFileError, match="unknown method 'magic'"):
        load_method({}, {"name": "magic"})
