"""The conditional W1 engine (cellw1.ot.conditional): Lipschitz in x for every condition, known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellw1.errors import ConfigError, InputError, ModelFileError
from cellw1.ot.conditional import (
    Condition,
    ConditionalConfig,
    ConditionalMap,
    ConditionalPotential,
    ConditionEncoder,
    fit_conditional_map,
)

FAST = dict(potential_iters=400, regression_iters=300, energy_iters=200, batch_size=256, eval_every=50)
SHIFTS = [np.array([2.0, 0.0, 0.0, 0.0, 0.0]), np.array([0.0, -1.5, 1.0, 0.0, 0.0]), np.zeros(5)]


def translations(seed: int = 0, n: int = 800, m: int = 600) -> tuple[np.ndarray, list[np.ndarray]]:
    """Control N(0, I) in 5-D; condition i is the control translated by SHIFTS[i] (the last: none)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), [rng.normal(size=(m, 5)) + s for s in SHIFTS]


@pytest.fixture(scope="module")
def fitted() -> dict[str, ConditionalMap]:
    x, ys = translations()
    conditions = [Condition((i,)) for i in range(3)]
    return {
        p: fit_conditional_map(x, ys, conditions, ConditionalConfig(parametrisation=p, **FAST), seed=0)
        for p in ("concat", "bias")
    }


def gradient_norms(potential: ConditionalPotential, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(potential(x, code).sum(), x)
    return g.norm(dim=1)


def check_lipschitz_in_x(potential: ConditionalPotential, encoder: ConditionEncoder, seed: int) -> float:
    """Largest |grad_x f(x, c)| and pairwise ratio over random cells and random conditions."""
    gen = torch.Generator().manual_seed(seed)
    d, worst = potential.dim, 0.0
    members = (torch.rand(40, encoder.n_labels, generator=gen) < 0.4).float()
    members[:, 0] = 1.0
    dose = torch.rand(40, generator=gen) * 20 if encoder.has_dose else None
    codes = torch.cat((encoder(members, dose), 50 * torch.randn(10, encoder.dim, generator=gen)))  # and wild codes
    for code in codes:
        x = 3 * torch.randn(256, d, generator=gen)
        worst = max(worst, float(gradient_norms(potential, x, code.expand(256, -1)).max()))
        x2 = x + torch.randn(256, d, generator=gen)
        with torch.no_grad():
            diff = (potential(x, code.expand(256, -1)) - potential(x2, code.expand(256, -1))).abs()
        worst = max(worst, float((diff / (x - x2).norm(dim=1)).max()))
    return worst


@pytest.mark.parametrize("parametrisation", ["concat", "bias"])
@pytest.mark.parametrize("orthonormalization", ["cayley", "bjorck"])
@pytest.mark.parametrize("encoding", ["learned", "vector", "dose"])
def test_potential_is_1_lipschitz_in_x_for_every_condition(parametrisation, orthonormalization, encoding):
    """Before and after training, |grad_x f(x, c)| <= 1 on random cells and conditions (and wild codes)."""
    rng = np.random.default_rng(1)
    x, ys = translations(1, n=300, m=200)
    vectors = rng.normal(size=(3, 7)) if encoding == "vector" else None
    dose = encoding == "dose"
    conditions = [Condition((i,), dose=float(i + 1) if dose else None) for i in range(3)]
    config = ConditionalConfig(
        parametrisation=parametrisation,
        orthonormalization=orthonormalization,
        potential_iters=60,
        regression_iters=20,
        energy_iters=10,
        batch_size=64,
        eval_every=20,
    )
    encoder = ConditionEncoder(
        3,
        config.condition_dim,
        encoding="vector" if vectors is not None else "learned",
        label_vectors=None if vectors is None else torch.tensor(vectors, dtype=torch.float32),
        dose=dose,
    )
    untrained = ConditionalPotential(5, config.condition_dim, config)
    assert check_lipschitz_in_x(untrained, encoder, 0) <= 1 + 1e-4
    tmap = fit_conditional_map(x, ys, conditions, config, seed=0, label_vectors=vectors)
    assert check_lipschitz_in_x(tmap.potential_net, tmap.encoder, 1) <= 1 + 1e-4


@pytest.mark.parametrize("parametrisation", ["concat", "bias"])
def test_two_translations_recovered(fitted, parametrisation):
    """Each condition's cells are the control translated by its own vector: the map moves the mean by
    that vector, its dual is |shift|, and the condition without an effect leaves cells in place.
    """
    tmap = fitted[parametrisation]
    x = np.random.default_rng(5).normal(size=(1000, 5))
    for i, shift in enumerate(SHIFTS):
        moved = tmap.transport(x, Condition((i,)))
        error = np.linalg.norm(moved.mean(0) - x.mean(0) - shift)
        assert error < 0.3, (i, error)  # the sampling noise of two 600-cell means in 5-D is ~0.13
        if np.linalg.norm(shift) > 0:
            assert tmap.w1(x, x + shift, Condition((i,))) == pytest.approx(np.linalg.norm(shift), rel=0.05)
            step = moved - x
            cosine = step @ shift / (np.linalg.norm(step, axis=1).clip(1e-9) * np.linalg.norm(shift))
            assert np.median(cosine) > 0.9
        else:
            assert np.linalg.norm(moved - x, axis=1).mean() < 0.3


def test_seeded_fits_are_identical():
    x, ys = translations(2, n=200, m=150)
    conditions = [Condition((i,)) for i in range(3)]
    config = ConditionalConfig(potential_iters=40, regression_iters=30, energy_iters=20, batch_size=64, eval_every=10)
    a, b = (fit_conditional_map(x, ys, conditions, config, seed=3) for _ in range(2))
    c = fit_conditional_map(x, ys, conditions, config, seed=4)
    for i in range(3):
        np.testing.assert_array_equal(a.transport(x, conditions[i]), b.transport(x, conditions[i]))
    assert not np.array_equal(a.transport(x, conditions[0]), c.transport(x, conditions[0]))


def test_save_load_round_trip(fitted, tmp_path):
    tmap = fitted["bias"]
    path = tmap.save(tmp_path / "map.safetensors")
    loaded = ConditionalMap.load(path)
    x = np.random.default_rng(0).normal(size=(50, 5))
    for i in range(3):
        np.testing.assert_array_equal(tmap.transport(x, Condition((i,))), loaded.transport(x, Condition((i,))))
    assert loaded.config == tmap.config
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        ConditionalMap.load(tmp_path / "bad.safetensors")


def test_unseen_dose_interpolates():
    """Doses 0.1 ... 10 shift the cells by h(dose) v (a Hill curve in log dose); with dose 1 held out,
    the predicted shift at dose 1 is near the truth, between its neighbours'.
    """
    rng = np.random.default_rng(0)
    doses = [0.1, 0.3, 1.0, 3.0, 10.0]
    v = np.array([2.0, 1.0, 0.0, 0.0])

    def hill(dose: float) -> float:
        return dose / (dose + 1.0)

    x = rng.normal(size=(1000, 4))
    train = [d for d in doses if d != 1.0]
    ys = [rng.normal(size=(500, 4)) + hill(d) * v for d in train]
    config = ConditionalConfig(**FAST)  # 400 potential steps: on seeds 0-3 as close as 800 (rel. error <= 0.2)
    tmap = fit_conditional_map(x, ys, [Condition((0,), dose=d) for d in train], config, seed=0)
    test = rng.normal(size=(1000, 4))
    shift = {d: tmap.transport(test, Condition((0,), dose=d)).mean(0) - test.mean(0) for d in doses}
    truth = hill(1.0) * v
    assert np.linalg.norm(shift[1.0] - truth) < 0.25 * np.linalg.norm(truth)
    along = {d: float(shift[d] @ v / (v @ v)) for d in doses}
    assert along[0.3] < along[1.0] < along[3.0]


def test_bad_input():
    x, ys = translations(0, n=100, m=50)
    with pytest.raises(InputError, match="dose"):
        fit_conditional_map(x, ys, [Condition((0,), dose=1.0), Condition((1,)), Condition((2,))])
    with pytest.raises(InputError, match="one condition per target"):
        fit_conditional_map(x, ys, [Condition((0,))])
    with pytest.raises(InputError, match="label_vectors"):
        fit_conditional_map(x, ys, [Condition((i,)) for i in range(3)], label_vectors=np.ones((2, 4)))
    from cellw1.ot.config import W1Config

    with pytest.raises(ConfigError, match="ConditionalConfig"):
        fit_conditional_map(x, ys, [Condition((i,)) for i in range(3)], W1Config())
    with pytest.raises(ConfigError, match="step_size_learner"):
        ConditionalConfig(step_size_learner="gan")
    with pytest.raises(ConfigError, match="parametrisation"):
        ConditionalConfig(parametrisation="film")
    encoder = ConditionEncoder(3, 4, encoding="vector", label_vectors=torch.ones(3, 6))
    with pytest.raises(InputError, match="6"):
        encoder.encode([Condition(vectors=np.ones(5))])
    with pytest.raises(InputError, match="outside"):
        encoder.encode([Condition((7,))])
    assert encoder.encode([Condition((0, 1))]).shape == (1, 4)
    dosed = ConditionEncoder(3, 4, dose=True)
    with pytest.raises(InputError, match="dose"):
        dosed.encode([Condition((0,))])


def test_combination_is_order_invariant():
    encoder = ConditionEncoder(4, 6, encoding="vector", label_vectors=torch.randn(4, 3))
    a = encoder.encode([Condition((0, 2))])
    b = encoder.encode([Condition((2, 0))])
    c = encoder.encode([Condition((0,), vectors=encoder.vectors[2].numpy())])  # the same label given as a vector
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_a_combination_without_a_response_stays_in_any_order(fitted):
    """A training combination without a detected response is recognised whatever order its labels are given in."""
    cmap = fitted["concat"]
    still = ConditionalMap(
        cmap.encoder, cmap.potential_net, cmap.step_size_net, cmap.config, unresponsive=[Condition((1, 0))]
    )
    x = translations()[0][:50].astype(np.float32)
    for labels in ((0, 1), (1, 0)):
        assert not still.moves(Condition(labels))
        np.testing.assert_array_equal(still.transport(x, Condition(labels)), x)
    assert still.moves(Condition((0,)))
    assert still.moves(Condition((0, 2)))
