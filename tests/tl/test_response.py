"""The response of each cell and gene: step length, constant genes, non-negative calibrated output."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import cellw1
from cellw1 import W1Config
from cellw1.eval.metrics import energy_distance
from cellw1.pp.calibration import calibrate, fit_calibration

FAST = W1Config(potential_iters=300, regression_iters=200, energy_iters=300, eval_every=50)


def log_groups(
    n: int = 300,
    genes: int = 30,
    constant: int = 6,
    seed: int = 0,
    groups: tuple[str, ...] = ("ctrl", "pert"),
    responding: tuple[str, ...] = ("pert",),
) -> ad.AnnData:
    """Log-normalised cells, ``n`` per group; genes 0-7 respond in the ``responding`` groups (the
    others are drawn like the controls); the last ``constant`` genes are one value in all groups.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(groups, n)
    x = np.log1p(rng.gamma(2.0, 1.0, size=(len(labels), genes)))
    x[np.isin(labels, responding), :8] += 0.8
    x[:, genes - constant :] = np.linspace(0.0, 2.0, constant)  # constant in both groups (one is 0)
    obs = pd.DataFrame({"condition": labels}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(X=x.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(genes)]))


def test_constant_genes_do_not_move() -> None:
    adata = log_groups()
    x = adata.X[:300]
    tmap = cellw1.fit_map(x, adata.X[300:], FAST, seed=0)
    moved = np.abs(tmap.transport(x) - x).mean(0)
    responding, constant = moved[:8].mean(), moved[-6:].mean()
    assert constant <= 0.01 * responding, (constant, responding)
    model = cellw1.fit(adata, "condition", "ctrl", "pert", config=FAST, input_kind="log", progress=False)
    pred = model.predict(adata[:300]).X
    assert np.abs(pred - x)[:, -6:].max() <= 0.01 * np.abs(pred - x)[:, :8].mean()


def test_a_translation_is_not_shortened() -> None:
    rng = np.random.default_rng(1)
    shift = np.full(20, 0.5, dtype=np.float32)
    x = rng.normal(size=(2000, 20)).astype(np.float32)
    y = (rng.normal(size=(2000, 20)) + shift).astype(np.float32)
    test = rng.normal(size=(1000, 20)).astype(np.float32)
    tmap = cellw1.fit_map(x, y, seed=0)
    ratio = float(np.linalg.norm((tmap.transport(test) - test).mean(0)) / np.linalg.norm(shift))
    assert 0.95 <= ratio <= 1.05


def test_energy_refinement_matches_a_nonlinear_response_better_than_regression() -> None:
    """The regression on minibatch pairings shrinks the steps; matching the distribution does not."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(20, 20)) / np.sqrt(20)

    def response(n: int) -> np.ndarray:
        z = rng.normal(size=(n, 20))
        return (z + 1 + 0.8 * np.tanh(z @ a)).astype(np.float32)

    x, y = rng.normal(size=(2000, 20)).astype(np.float32), response(2000)
    test, truth = rng.normal(size=(1000, 20)).astype(np.float32), response(1000)
    score = {}
    for learner in ("ot_energy", "minibatch_ot"):
        moved = cellw1.fit_map(x, y, W1Config(step_size_learner=learner), seed=0).transport(test)
        score[learner] = energy_distance(moved, truth)
    assert score["ot_energy"] < 0.8 * score["minibatch_ot"], score


def test_calibration_known_answer() -> None:
    predicted = np.array([[-0.2, 1.0], [0.1, 2.0], [0.5, 3.0], [1.0, 4.0]], dtype=np.float32)
    perturbed = np.array([[0.0, 1.0], [0.0, 2.0], [0.6, 3.0], [1.4, 4.5]], dtype=np.float32)
    cal = fit_calibration(predicted, perturbed)
    # gene 0: half the perturbed cells are 0, so the two lowest predictions become 0
    # just above 0.1, by ROUNDING
    assert cal[0, 0] == pytest.approx(0.1 + 1e-5)
    assert cal[0, 1] == -np.inf
    out = calibrate(predicted, cal)
    assert (out[:2, 0] == 0).all()
    assert (out >= 0).all()
    # gene 1's gap in the mean (0.125) is well inside its standard error (~0.8): no offset
    assert cal[1, 1] == 0.0
    np.testing.assert_array_equal(calibrate(predicted, None), np.maximum(predicted, 0))


def test_calibration_treats_a_training_prediction_made_again_alike() -> None:
    # a chunk of another size sums a matrix product in another order: the same cell comes out a
    # few float32 units apart; the threshold, the offsets and the training range must not flip it
    rng = np.random.default_rng(1)
    predicted = rng.normal(0.5, 0.3, size=(500, 20)).astype(np.float32)
    perturbed = np.where(rng.random((500, 20)) < 0.3, 0.0, rng.normal(0.9, 0.3, size=(500, 20)))
    cal = fit_calibration(predicted, perturbed)
    ulps = rng.integers(-4, 5, size=predicted.shape)
    again = predicted + ulps * np.spacing(predicted)
    assert (again != predicted).any()
    np.testing.assert_allclose(calibrate(again, cal), calibrate(predicted, cal), atol=1e-5)
    np.testing.assert_array_equal(calibrate(again, cal) == 0, calibrate(predicted, cal) == 0)


def test_calibration_closes_resolved_gaps_in_the_mean() -> None:
    rng = np.random.default_rng(0)
    predicted = rng.normal(2.0, 0.1, size=(2000, 3))
    perturbed = rng.normal([2.5, 2.0, 2.003], 0.1, size=(2000, 3))
    out = calibrate(predicted, fit_calibration(predicted, perturbed))
    assert out[:, 0].mean() == pytest.approx(perturbed[:, 0].mean(), abs=1e-4)  # a gap of 0.5, se 0.003
    np.testing.assert_allclose(out[:, 1:], predicted[:, 1:], atol=3e-3)  # gaps within noise stay


def test_calibration_moves_a_new_cell_type_by_at_most_the_training_gap() -> None:
    """Issue 21's case: a gene is 0 in 90% of the training cells and its training gap is 0.057; a held-out
    type that expresses it in every cell must not receive the offset ``gap * n / kept`` (+0.57).
    """
    rng = np.random.default_rng(0)
    predicted = rng.normal(0.0, 0.05, size=(2000, 1)).astype(np.float32)
    predicted[:200, 0] = rng.normal(0.5, 0.05, 200)  # the 10% that express it, predicted too low
    perturbed = np.zeros((2000, 1))
    perturbed[:200, 0] = rng.normal(1.07, 0.05, 200)
    cal = fit_calibration(predicted, perturbed)
    zeros_only = calibrate(predicted, np.stack((cal[0], np.zeros_like(cal[1]))))
    gap = perturbed.mean() - zeros_only.mean()
    assert gap == pytest.approx(0.057, abs=0.003)
    # on the training controls the offset closes the gap on the 10% left above 0: 10x the gap on each
    assert calibrate(predicted, cal).mean() == pytest.approx(perturbed.mean(), abs=0.003)
    assert cal[1, 0] == pytest.approx(10 * gap, rel=0.05)
    held_out = rng.normal(2.0, 0.1, size=(500, 1)).astype(np.float32)  # every cell expresses the gene
    change = calibrate(held_out, cal).mean() - held_out.mean()
    assert 0 < change <= 1.1 * gap  # was 10x the gap: the amplified offset on every cell
    assert calibrate(held_out, cal[:2]).mean() - held_out.mean() > 5 * gap  # as a model saved before applies it


def test_calibration_stays_in_the_data_range_when_predictions_tie() -> None:
    # a gene with no counts in the controls, "on" in 40% of the perturbed cells: a mean shift moves
    # every control to one value, the zero threshold takes the whole tie, two cells are left
    predicted = np.full((600, 1), 0.4, dtype=np.float32)
    predicted[:2, 0] = [1.0, 1.5]
    perturbed = np.zeros((600, 1))
    perturbed[:240, 0] = np.random.default_rng(0).uniform(0.5, 2.0, 240)
    cal = fit_calibration(predicted, perturbed)
    out = calibrate(predicted, cal)
    # zeroing the tie would leave the two to carry the whole mean: 1.25 + 0.5 * 600 / 2 = 151; the tie stays instead
    assert cal[0, 0] == -np.inf
    assert (out > 0).all()
    assert out.max() <= perturbed.max()
    assert out.mean() == pytest.approx(perturbed.mean(), abs=0.02)  # and the mean is met
    # tied predictions below the threshold keep the usual rule: the 360 lowest (60%) become the zeros
    spread = np.linspace(0.0, 1.0, 600, dtype=np.float32)[:, None]
    spread[:300] = 0.2
    out = calibrate(spread, fit_calibration(spread, perturbed))
    assert (out == 0).sum() == 360
    assert (out[:300] == 0).all()
    assert out.mean() == pytest.approx(perturbed.mean(), abs=0.02)


def test_predictions_are_non_negative_with_the_share_of_zeros_of_the_response(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    counts = rng.poisson(np.tile(rng.gamma(0.6, 1.0, 40), (400, 1))).astype(np.float32)
    counts[200:, :10] = rng.poisson(4.0, size=(200, 10))  # genes 0-9 switch on
    adata = ad.AnnData(
        X=counts, obs=pd.DataFrame({"condition": np.repeat(["ctrl", "pert"], 200)}, index=[f"c{i}" for i in range(400)])
    )
    model = cellw1.fit(adata, "condition", "ctrl", "pert", config=FAST, progress=False)
    raw = model.embedding.decode(model.method.predict(model.preprocess(adata[:200])))
    assert (raw < 0).mean() > 0.01  # the map alone leaves negative expression
    pred = model.predict(adata[:200])
    assert pred.X.min() >= 0
    assert pred.uns["cellw1"]["output"] == "calibrated"
    real = model.preprocess(adata[200:])
    zeros, real_zeros = (pred.X == 0).mean(0), (real == 0).mean(0)
    control_zeros = (model.preprocess(adata[:200]) == 0).mean(0)
    assert (control_zeros[:10] - real_zeros[:10]).mean() > 0.5  # genes 0-9 lose most of their zeros
    np.testing.assert_allclose(zeros[:10], real_zeros[:10], atol=0.05)  # genes that switch on lose their zeros
    assert np.abs(zeros[10:] - real_zeros[10:]).mean() < 0.05  # the others keep theirs, up to sampling noise
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(cellw1.load(tmp_path / "m").predict(adata[:200]).X, pred.X)


def test_measured_cells_are_clipped_only() -> None:
    adata = log_groups(n=100, constant=0)
    model = cellw1.fit(adata, "condition", "ctrl", "pert", method="observed", input_kind="log", progress=False)
    assert model.calibration is None
    pred = model.predict(adata[:100])
    assert pred.uns["cellw1"]["output"] == "clipped"
    assert np.asarray(pred.X).min() >= 0
    identity = cellw1.fit(adata, "condition", "ctrl", "pert", method="identity", input_kind="log", progress=False)
    pred = identity.predict(adata[:100])
    assert pred.uns["cellw1"]["output"] == "unchanged"
    np.testing.assert_array_equal(pred.X, np.asarray(adata.X[:100], dtype=np.float32))


@pytest.mark.parametrize("dim", [7, 300])
def test_energy_pool_equals_the_direct_energy_distance(dim: int) -> None:
    """Pooled inner products (many dimensions) or distances (few) give the energy distance and its gradient."""
    from cellw1.ot.energy import EnergyPool

    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(40, dim, generator=g, dtype=torch.float64),
        torch.randn(30, dim, generator=g, dtype=torch.float64) + 1,
    )
    u = torch.nn.functional.normalize(torch.randn(40, dim, generator=g, dtype=torch.float64), dim=1)
    i, j = torch.randperm(40, generator=g)[:16], torch.randint(30, (16,), generator=g)
    eta = torch.rand(16, generator=g, dtype=torch.float64).requires_grad_(True)
    pooled = EnergyPool(x, u, y).loss(i, j, eta)
    (grad_pooled,) = torch.autograd.grad(pooled, eta)
    moved = x[i] - eta[:, None] * u[i]
    inside = torch.pdist(moved).sum() * 2 / (16 * 15)
    direct = 2 * torch.cdist(moved, y[j]).mean() - inside
    (grad_direct,) = torch.autograd.grad(direct, eta)
    assert pooled.item() == pytest.approx(direct.item(), rel=1e-9)
    torch.testing.assert_close(grad_pooled, grad_direct, rtol=1e-6, atol=1e-9)


def test_a_perturbation_without_a_response_predicts_the_controls(tmp_path: Path) -> None:
    """The test for a response (cellw1.ot.effect): no effect in, the controls' own values out."""
    adata = log_groups(genes=20, constant=0, groups=("ctrl", "none", "up"), responding=("up",))
    controls = adata[:300]
    model = cellw1.fit(adata, "condition", "ctrl", "none", config=FAST, input_kind="log", progress=False)
    assert not model.method.has_response
    assert model.method.info["effect"]["p_value"] > 0.05
    pred = model.predict(controls)
    assert np.array_equal(pred.X, controls.X)  # calibrated against the controls: nothing changes
    assert np.all(pred.obs["response"] == 0)
    assert not cellw1.load(model.save(tmp_path / "still")).method.has_response
    assert "no response detected" in repr(model)
    up = cellw1.fit(adata, "condition", "ctrl", "up", config=FAST, input_kind="log", progress=False)
    assert up.method.has_response
    assert up.predict(controls).X[:, :6].mean() - controls.X[:, :6].mean() > 0.5


def test_a_weak_response_is_predicted_by_its_resolved_share(tmp_path: Path) -> None:
    """A response near the sampling noise: each cell moves the resolved share of the way to where
    the map moves it (cellw1.ot.effect), and the output is calibrated to a response of that size;
    kept by save/load.
    """
    adata = log_groups(n=150, genes=20, constant=0, seed=3)
    adata.X[150:, :8] -= 0.6  # 0.2 above the controls on 8 genes, 150 cells a group
    controls = adata[:150]
    whole_map = cellw1.fit(adata, "condition", "ctrl", "pert", config=FAST, input_kind="log", progress=False)
    # off by default
    assert whole_map.method.response_share == 1.0
    assert "of the response" not in repr(whole_map)
    config = FAST.replace(shrink_response=True)
    model = cellw1.fit(adata, "condition", "ctrl", "pert", config=config, input_kind="log", progress=False)
    share = model.method.response_share
    assert share == model.method.map.info["effect"]["resolved"] == whole_map.method.map.resolved
    assert model.method.has_response
    assert 0.1 < share < 0.9, share
    assert f"applies {share:.0%} of the response" in repr(model)
    z = model.embedding.encode(model.preprocess(controls))
    whole = model.method.map.transport(z)
    np.testing.assert_allclose(model.method.predict(z), z + share * (whole - z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.method.response(z), share * model.method.map.step_size(z), rtol=1e-6)
    pred = model.predict(controls)
    seen = adata.X[150:, :8].mean() - controls.X[:, :8].mean()
    moved = pred.X[:, :8].mean() - controls.X[:, :8].mean()
    assert abs(moved - share * seen) <= 0.25 * share * seen, (moved, share * seen)
    loaded = cellw1.load(model.save(tmp_path / "weak"))
    assert loaded.method.response_share == share
    np.testing.assert_array_equal(loaded.predict(controls).X, pred.X)


def test_the_conditional_model_leaves_conditions_without_a_response_at_the_control(tmp_path: Path) -> None:
    adata = log_groups(genes=20, constant=0, groups=("ctrl", "none", "up"), responding=("up",))
    controls = adata[:300]
    config = cellw1.ConditionalConfig.from_w1(FAST)
    model = cellw1.fit_conditional(adata, "condition", "ctrl", config=config, input_kind="log", progress=False)
    effects = dict(zip([c["label"] for c in model.conditions], model.map.info["effects"], strict=True))
    assert effects["none"]["p_value"] > 0.05
    assert effects["up"]["p_value"] <= 0.05
    assert model.without_response == [("none", None)]
    assert "1 without a detected response" in repr(model)
    for loaded in (model, cellw1.load(model.save(tmp_path / "conditional"))):
        still = loaded.predict(controls, perturbation="none")
        np.testing.assert_allclose(still.X, controls.X, atol=1e-5)  # PCA space: round-off of the reconstruction
        assert np.all(still.obs["response"] == 0)
        moved = loaded.predict(controls, perturbation="up").X
        assert moved[:, :6].mean() - controls.X[:, :6].mean() > 0.5
