"""The two-phase W1 solver against known answers: translations, POT's exact W1, toys."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

import cellw1
from cellw1 import W1Config
from cellw1.datasets import load_toy
from cellw1.eval.monotonicity import bookshelf_spearman, circles_inner_to_inner

#: short, yet converged on every problem here: the assertions hold with the same margins as with
#: 800 + 400 steps (checked on seeds 0-5 of the toys and 0-3 of the translation)
FAST = W1Config(potential_iters=300, regression_iters=150, eval_every=50)


def nonlinear_pair(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian blob against a noisy ring (no closed-form W1; POT gives it exactly)."""
    rng = np.random.default_rng(seed)
    blob = rng.normal(0.0, 0.5, size=(n, 2))
    angle = rng.uniform(0, 2 * np.pi, n + 17)
    ring = np.c_[np.cos(angle), np.sin(angle)] * 2.5 + rng.normal(0, 0.1, size=(n + 17, 2)) + [1.0, 0.0]
    return blob.astype(np.float32), ring.astype(np.float32)


def exact_w1(x: np.ndarray, y: np.ndarray) -> float:
    return float(
        ot.emd2(np.empty(0), np.empty(0), ot.dist(x.astype(np.float64), y.astype(np.float64), metric="euclidean"))
    )


@pytest.fixture(scope="module")
def translation() -> tuple[np.ndarray, np.ndarray, np.ndarray, cellw1.TransportMap]:
    rng = np.random.default_rng(0)
    t = np.array([3.0, -4.0, 0.0, 0.0, 0.0], dtype=np.float32)
    x = rng.normal(size=(1500, 5)).astype(np.float32)
    y = (rng.normal(size=(1700, 5)) + t).astype(np.float32)
    return x, y, t, cellw1.fit_map(x, y, FAST, seed=0)


def test_translation_dual_recovers_norm_of_shift(translation) -> None:
    x, y, t, tmap = translation
    assert tmap.w1(x, y) == pytest.approx(np.linalg.norm(t), rel=0.03)


def test_translation_transport_is_the_shift(translation) -> None:
    x, _, t, tmap = translation
    moved = tmap.transport(x)
    assert moved.shape == x.shape
    assert moved.dtype == np.float32
    error = np.linalg.norm(moved - (x + t), axis=1)
    assert np.median(error) < 0.1 * np.linalg.norm(t)
    direction = tmap.direction(x)
    cosine = direction @ (-t / np.linalg.norm(t))
    assert np.median(cosine) > 0.98  # cells move along -u, and u points against the shift


def test_unit_gradient_norm_after_training(translation) -> None:
    x, _, _, tmap = translation
    grad = cellw1.ot.potential.gradient(tmap.potential_net, torch.as_tensor(x))
    assert abs(float(grad.norm(dim=1).median()) - 1.0) < 0.05


def test_step_size_is_non_negative(translation) -> None:
    x, _, _, tmap = translation
    eta = tmap.step_size(x * 10)
    assert eta.shape == (len(x),)
    assert (eta >= 0).all()
    assert np.isfinite(eta).all()


@pytest.fixture(scope="module")
def pair_maps() -> dict[str, tuple[float, float]]:
    """(dual on the same points, exact W1) for the nonlinear pair, scaled and swapped."""
    x, y = nonlinear_pair()
    # the dual needs the potential only: one step of each phase-2 learner
    config = FAST.replace(potential_iters=400, regression_iters=1, energy_iters=1, val_fraction=0.0)
    out = {}
    for name, (a, b) in {"base": (x, y), "scaled": (3 * x, 3 * y), "swapped": (y, x)}.items():
        tmap = cellw1.fit_map(a, b, config, seed=1)
        out[name] = (tmap.w1(a, b), exact_w1(a, b))
    return out


def test_dual_is_a_tight_lower_bound_of_exact_w1(pair_maps) -> None:
    for dual, exact in pair_maps.values():
        assert dual <= exact * (1 + 1e-5) + 1e-5  # 1-Lipschitz: never above the exact value
        assert dual >= 0.95 * exact


def test_w1_scales_and_is_symmetric(pair_maps) -> None:
    base, scaled, swapped = pair_maps["base"][0], pair_maps["scaled"][0], pair_maps["swapped"][0]
    assert scaled == pytest.approx(3 * base, rel=0.03)
    assert swapped == pytest.approx(base, rel=0.03)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_learner_keeps_bookshelf_order(seed: int) -> None:
    toy = load_toy("bookshelf", n=500, seed=seed)
    tmap = cellw1.fit_map(toy.source, toy.target, FAST, seed=seed)
    moved = tmap.transport(toy.source)
    assert bookshelf_spearman(toy.source, moved) >= 0.99
    # lands on the shelf
    assert np.percentile(moved[:, 0], 1) > 1.9
    assert np.percentile(moved[:, 0], 99) < 3.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_learner_sends_inner_circle_to_inner_circle(seed: int) -> None:
    toy = load_toy("circles", n=600, seed=seed)
    tmap = cellw1.fit_map(toy.source, toy.target, FAST, seed=seed)
    assert circles_inner_to_inner(toy, tmap.transport(toy.source)) >= 0.95


def test_gan_learner_produces_a_transport_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    config = FAST.replace(step_size_learner="gan", potential_iters=300, step_iters=300, step_lr=1e-3)
    tmap = cellw1.fit_map(x, x + [2.0, 0.0], config)
    assert isinstance(tmap, cellw1.TransportMap)
    moved = tmap.transport(x)
    assert np.isfinite(moved).all()
    # cells move along -u only, never backwards: the x-coordinate grows for every cell
    assert (moved[:, 0] >= x[:, 0] - 1e-5).all()


def test_same_seed_same_map_different_seed_different_map() -> None:
    x, y = nonlinear_pair(100)
    config = FAST.replace(potential_iters=100, regression_iters=50, energy_iters=50)  # every phase, briefly
    a = cellw1.fit_map(x, y, config, seed=3).transport(x)
    b = cellw1.fit_map(x, y, config, seed=3).transport(x)
    c = cellw1.fit_map(x, y, config, seed=4).transport(x)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_torch_input_gives_torch_output_and_inputs_untouched() -> None:
    x, y = nonlinear_pair(100)
    tx, ty = torch.as_tensor(x.copy()), torch.as_tensor(y.copy())
    tmap = cellw1.fit_map(tx, ty, FAST.replace(potential_iters=50, regression_iters=20))
    out = tmap.transport(tx)
    assert isinstance(out, torch.Tensor)
    assert out.shape == tx.shape
    assert torch.equal(tx, torch.as_tensor(x))
    assert np.array_equal(ty.numpy(), y)
    assert isinstance(tmap.potential(tx), torch.Tensor)


def test_transport_in_batches_matches_one_batch() -> None:
    x, y = nonlinear_pair(100)
    tmap = cellw1.fit_map(x, y, FAST.replace(potential_iters=50, regression_iters=20))
    np.testing.assert_allclose(tmap.transport(x, batch_size=7), tmap.transport(x), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_matches_cpu_closely() -> None:  # pragma: no cover - GPU machines only
    x, y = nonlinear_pair(200)
    config = FAST.replace(potential_iters=300, regression_iters=100)
    cpu = cellw1.fit_map(x, y, config, seed=0)
    gpu = cellw1.fit_map(x, y, config.replace(device="cuda"), seed=0)
    assert gpu.device.type == "cuda"
    assert gpu.w1(x, y) == pytest.approx(cpu.w1(x, y), rel=0.05)


def test_step_size_inputs_use_one_scale_for_all_features() -> None:
    """A feature that is constant in training must not explode on new cells."""
    from cellw1.ot.stepsize import Standardize

    x = torch.randn(200, 3)
    x[:, 2] = 1.0  # constant in training
    std = Standardize(3).fit(x)
    assert std.scale.ndim == 0
    new = torch.tensor([[0.0, 0.0, 1.5]])
    assert float(std(new).abs().max()) < 2.0


def test_ot_gan_refinement_never_worsens_validation_and_keeps_order() -> None:
    toy = load_toy("bookshelf", n=400, seed=0)
    base = cellw1.fit_map(toy.source, toy.target, FAST, seed=0)
    refined = cellw1.fit_map(toy.source, toy.target, FAST.replace(step_size_learner="ot_gan", refine_iters=200), seed=0)
    assert refined.info["potential_val_dual"] == base.info["potential_val_dual"]  # same potential
    assert refined.info["step_size_val_energy"] <= base.info["step_size_val_energy"] + 1e-9
    assert bookshelf_spearman(toy.source, refined.transport(toy.source)) >= 0.99
