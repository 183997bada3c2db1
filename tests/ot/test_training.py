"""The one training loop (best state, early stopping, history, threads) and histories saved with models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, count_adata
from torch import nn

import cellw1
from cellw1 import ModelFileError, W2Config
from cellw1.ot.training import Training, combine, cpu_threads, read_history
from cellw1.ot.transport import TransportMap
from cellw1.ot.w2 import W2Map, fit_w2
from cellw1.pp.autoencoder import Autoencoder
from cellw1.pp.embedding import EmbeddingConfig


def _set(module: nn.Linear, value: float) -> None:
    with torch.no_grad():
        module.weight.fill_(value)


def test_best_state_is_restored_and_history_recorded() -> None:
    net = nn.Linear(2, 1)
    training = Training(net, score="val_loss", mode="min", name="test")
    for step, (weight, loss) in enumerate([(1.0, 0.5), (2.0, 0.2), (3.0, 0.4), (4.0, 0.3)], start=1):
        _set(net, weight)  # the state the score belongs to
        training.evaluate(step * 10, loss, train_loss=loss + 1)
    assert training.best_step == 20
    assert training.best_score == 0.2
    history = training.finish(40)
    assert float(net.weight.detach()[0, 0]) == 2.0  # the state of the best evaluation is back
    assert history == {
        "step": [10, 20, 30, 40],
        "val_loss": [0.5, 0.2, 0.4, 0.3],
        "train_loss": [1.5, 1.2, 1.4, 1.3],
        "best_step": [20],
        "stopped_at": [40],
    }


def test_without_a_better_evaluation_the_initial_state_is_kept() -> None:
    net = nn.Linear(2, 1)
    _set(net, 7.0)
    training = Training(net, score="val_dual", mode="max")
    _set(net, 8.0)
    training.evaluate(5, float("nan"))
    # a non-finite score is divergence
    assert training.stop
    assert training.diverged
    training.finish(5)
    assert float(net.weight.detach()[0, 0]) == 7.0
    assert training.best_step == 0


def test_early_stopping_stops_after_patience_evaluations_without_relative_improvement() -> None:
    # max mode, min_delta 10%: 1.0 -> 1.05 is the best but not significant; 1.2 is significant
    training = Training(nn.Linear(1, 1), score="val_dual", mode="max", patience=2, min_delta=0.1)
    stops = []
    for step, value in enumerate([1.0, 1.05, 1.2, 1.25, 1.3, 1.0], start=1):
        training.evaluate(step, value)
        stops.append(training.stop)
    # 1.05: waited 1; 1.2: reset; 1.25: waited 1; 1.3 (best, < 1.2 * 1.1): waited 2 -> stop
    assert stops == [False, False, False, False, True, True]
    assert training.best_step == 5  # the best state is still the highest score, significant or not


def test_resume_restores_the_best_state_and_restarts_patience() -> None:
    net = nn.Linear(1, 1)
    training = Training(net, score="val_energy", mode="min", patience=1)
    _set(net, 1.0)
    training.evaluate(1, 0.1)
    _set(net, 2.0)
    training.evaluate(2, 0.3)
    assert training.stop
    training.resume()
    assert not training.stop
    assert float(net.weight.detach()[0, 0]) == 1.0


def test_initial_state_is_a_candidate_outside_the_history() -> None:
    net = nn.Linear(1, 1)
    training = Training(net, score="val_energy", mode="min")
    _set(net, 1.0)
    assert training.consider(0, 0.1)
    _set(net, 2.0)
    assert not training.evaluate(10, 0.5)
    history = training.finish(10)
    assert history["step"] == [10]
    assert history["best_step"] == [0]
    assert float(net.weight.detach()[0, 0]) == 1.0


def test_cpu_threads_is_restored_after_an_error() -> None:
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    seen = []

    def fail_inside() -> None:
        with cpu_threads(target):
            seen.append(torch.get_num_threads())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert seen == [target]
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def _threads_seen(fit) -> set[int]:  # type: ignore[no-untyped-def]
    """Torch threads at every Adam step of ``fit()``, run with 2 threads set outside."""
    seen: list[int] = []
    before = torch.get_num_threads()
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    torch.set_num_threads(2)
    torch.optim.Adam.step = spy  # type: ignore[method-assign]
    try:
        fit()
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.optim.Adam.step = original  # type: ignore[method-assign]
        torch.set_num_threads(before)
    return set(seen)


def test_w2_and_the_autoencoder_apply_the_thread_policy() -> None:
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    config = W2Config(hidden=(8,), n_iters=3, n_inner=1, eval_every=3)
    assert _threads_seen(lambda: fit_w2(x, x + 1, config)) == {1}
    assert _threads_seen(lambda: fit_w2(x, x + 1, config.replace(cpu_threads=None))) == {2}
    ae = EmbeddingConfig(ae_hidden=(8,), ae_latent=2, ae_max_iters=3, ae_eval_every=3)
    assert _threads_seen(lambda: Autoencoder.fit(x, config=ae)) == {2}  # default: torch's setting
    assert _threads_seen(lambda: Autoencoder.fit(x, config=ae.replace(cpu_threads=1))) == {1}


def _documented_stop(values: list[float], patience: int, min_delta: float) -> int:
    """Index of the evaluation where W1Config.patience says to stop (max mode), written out."""
    reference, waited = values[0], 0
    for i, value in enumerate(values[1:], start=1):
        if value > reference + min_delta * abs(reference):
            reference, waited = value, 0
        else:
            waited += 1
        if waited >= patience:
            return i
    return len(values) - 1


def test_fit_map_keeps_both_phases_histories() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 2)).astype(np.float32)
    config = TINY.replace(potential_iters=400, regression_iters=60, eval_every=10, patience=2, min_delta=1e-2)
    tmap = cellw1.fit_map(x, x + np.float32(3.0), config, seed=0)
    h = tmap.history
    steps, duals = h["potential_step"], h["potential_val_dual"]
    assert len(steps) == len(duals) == len(h["potential_train_dual"])
    assert steps == [10 * (i + 1) for i in range(len(steps))]
    # stopped early exactly where the documented rule says, and kept the best evaluation
    assert h["potential_stopped_at"] == [steps[_documented_stop(duals, 2, 1e-2)]] < [400]
    assert h["potential_best_step"] == [steps[int(np.argmax(duals))]] == [tmap.info["potential_best_step"]]
    assert max(duals) == tmap.info["potential_val_dual"]
    assert h["step_size_best_step"] == [tmap.info["step_size_best_step"]]
    assert min(h["step_size_val_energy"]) == tmap.info["step_size_val_energy"]
    assert len(h["step_size_loss"]) == len(h["step_size_step"])


def test_transport_map_history_round_trips_and_old_files_have_none(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    tmap = cellw1.fit_map(x, x + 1, TINY, seed=0)
    assert tmap.history["potential_step"] == [10, 20]
    loaded = TransportMap.load(tmap.save(tmp_path / "map.safetensors"))
    assert loaded.history == tmap.history
    header = tmap.header()
    del header["history"]  # as written before histories were kept
    assert TransportMap.from_state(tmap.state_tensors(), header).history == {}
    with pytest.raises(ModelFileError, match="does not match its own description"):
        TransportMap.from_state(tmap.state_tensors(), {**header, "history": {"step": "ten"}})


def test_w2_history_round_trips_and_old_files_keep_theirs(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    w2 = fit_w2(x, x + 1, W2Config(hidden=(8,), n_iters=6, n_inner=1, eval_every=3), seed=0)
    assert w2.history["step"] == [3, 6]
    assert set(w2.history) == {
        "step",
        "val_energy",
        "g_loss",
        "f_loss",
        "best_step",
        "stopped_at",
    }
    assert "history" not in w2.info
    assert W2Map.load(w2.save(tmp_path / "w2.safetensors")).history == w2.history
    old = w2.header()
    old["info"] = {**old.pop("info"), "history": old.pop("history")}  # where files before kept it
    loaded = W2Map.from_state(w2.state_tensors(), old)
    assert loaded.history == w2.history
    assert "history" not in loaded.info


def test_perturbation_model_history_is_saved(tmp_path: Path) -> None:
    adata = count_adata(["ctrl", "drug"], 40, 30, effects={1: 3.0})
    ae = EmbeddingConfig(ae_hidden=(8,), ae_latent=3, ae_max_iters=20, ae_eval_every=10)
    model = cellw1.fit(
        adata, "condition", "ctrl", "drug", space="autoencoder", config=TINY, embedding_config=ae, progress=False
    )
    history = model.history
    assert history["potential_step"] == model.method.map.history["potential_step"]
    assert history["autoencoder_step"] == [10, 20]
    assert len(history["autoencoder_val_loss"]) == 2
    model.save(tmp_path / "m")
    assert cellw1.load(tmp_path / "m").history == history
    written = json.loads((tmp_path / "m" / "model.json").read_text())
    assert written["method"]["map"]["history"] == model.method.map.history
    identity = cellw1.fit(adata, "condition", "ctrl", "drug", method="identity", progress=False)
    assert identity.history == {}


def test_history_helpers() -> None:
    assert combine(a={"step": [1]}, b={"loss": [0.5]}) == {"a_step": [1], "b_loss": [0.5]}
    assert read_history({"info": {"seed": 0}}) == ({"seed": 0}, {})
    assert read_history({"info": {"history": {"step": [1]}}}) == ({}, {"step": [1]})
    assert math.isnan(read_history({"history": {"x": [float("nan")]}})[1]["x"][0])
    for bad in ([1, 2], {"x": 1}, {"x": ["a"]}):
        with pytest.raises(ValueError, match="not a dict of lists of numbers"):
            read_history({"history": bad})
