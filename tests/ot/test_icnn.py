"""The W2 / ICNN baseline (OT-ICNN, CellOT) against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellw1.errors import ConfigError, InputError, ModelFileError
from cellw1.files.model_files import save_tensors
from cellw1.ot.config import W2Config
from cellw1.ot.energy import energy_distance
from cellw1.ot.icnn import ICNN, f_step, g_step, standardization
from cellw1.ot.w2 import W2Map, fit_w2

SHIFT = np.array([3.0, 0.0])
#: short but converged schedule for the 2-D translation and dilation (the paper: 100,000 x 10 at
#: lr 1e-4); on seeds 0-3 the errors are those of 800 steps (translation <= 0.18, bound 0.3;
#: mean shift <= 0.17, bound 0.25; dilation <= 0.28, bound 0.5)
TRANSLATION = W2Config(n_iters=400, n_inner=3, lr=5e-4, eval_every=100, val_fraction=0.25)


def midpoint_gaps(net: ICNN, dim: int, n: int = 4000, seed: int = 0) -> torch.Tensor:
    """``f((a+b)/2) - (f(a)+f(b))/2`` on random pairs at several scales (<= 0 when convex)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.1, 1.0, 5.0]).repeat_interleave(n // 3 + 1)[:n, None].double()
    a = torch.randn(n, dim, generator=gen, dtype=torch.float64) * scale
    b = torch.randn(n, dim, generator=gen, dtype=torch.float64) * scale
    net = net.double()
    with torch.no_grad():
        gaps = net((a + b) / 2) - (net(a) + net(b)) / 2
    net.float()
    return gaps


@pytest.fixture(scope="module")
def translation() -> tuple[W2Map, np.ndarray]:
    rng = np.random.default_rng(0)
    source = rng.normal(size=(1000, 2)).astype(np.float32)
    target = (rng.normal(size=(1100, 2)) + SHIFT).astype(np.float32)
    return fit_w2(source, target, TRANSLATION, seed=0), source


def energy(x: np.ndarray, y: np.ndarray) -> float:
    return energy_distance(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))


def cell_like(seed: int, dim: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Three clusters at expression-like offsets (mean ~2); the target moves them by a
    cluster-specific shift and widens 5 features: a nonlinear response, 1,000 vs 900 cells.
    """
    rng = np.random.default_rng(seed)
    centres = 2.0 + rng.normal(size=(3, dim))
    effect = np.zeros((3, dim))
    effect[:, :5] = rng.normal(size=(3, 5))

    def sample(n: int, perturbed: bool) -> np.ndarray:
        k = rng.integers(3, size=n)
        noise = 0.5 * rng.normal(size=(n, dim))
        if perturbed:
            noise[:, 5:10] *= 1.8
            return (centres[k] + effect[k] + noise).astype(np.float32)
        return (centres[k] + noise).astype(np.float32)

    return sample(1000, False), sample(900, True)


# -- the network -----------------------------------------------------------------------------
@pytest.mark.parametrize(("seed", "quadratic"), [(0, False), (1, False), (2, True)])
def test_icnn_is_convex_at_init(seed: int, quadratic: bool) -> None:
    torch.manual_seed(seed)
    net = ICNN(5, (16, 16, 16), quadratic=quadratic)
    assert net.min_weight() >= 0
    assert float(net.negative_weight_penalty().detach()) == 0.0
    out = net(torch.randn(7, 5))
    assert out.shape == (7,)
    assert float(midpoint_gaps(net, 5).max()) <= 1e-10


def test_midpoint_check_detects_negative_z_weights() -> None:
    """The convexity check can fail: flip the z-path weights and it does."""
    torch.manual_seed(0)
    net = ICNN(5, (16, 16, 16))
    with torch.no_grad():
        for w in net.z_weights:
            w.neg_()
    assert float(net.negative_weight_penalty().detach()) > 0
    assert float(midpoint_gaps(net, 5).max()) > 1e-3
    net.clamp_()
    assert net.min_weight() == 0.0
    assert float(midpoint_gaps(net, 5).max()) <= 1e-10
    quad = ICNN(5, (16, 16, 16), quadratic=True)
    with torch.no_grad():
        quad.quadratic_weight.fill_(-3.0)  # a concave |x|^2 term dominates: clearly non-convex
    assert quad.min_weight() == -3.0
    assert float(quad.negative_weight_penalty().detach()) == pytest.approx(9.0)
    assert float(midpoint_gaps(quad, 5).max()) > 1e-3
    assert quad.clamp_().min_weight() == 0.0
    assert float(midpoint_gaps(quad, 5).max()) <= 1e-10


def test_plain_icnn_hessian_has_low_rank_quadratic_term_fixes_it() -> None:
    """The curvature of an ICNN comes from its squared first layer, so the Hessian (the
    Jacobian of the map grad g) has rank <= hidden[0]; with the |x|^2 / 2 term it is full rank
    and the initial map is close to the identity.
    """
    dim, hidden = 30, (8, 8)
    x = torch.randn(200, dim, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain, quad = ICNN(dim, hidden), ICNN(dim, hidden, quadratic=True)
    for net, full in ((plain, False), (quad, True)):
        sv = torch.linalg.svdvals(torch.autograd.functional.hessian(lambda v, net=net: net(v[None]).sum(), x[0]))
        if full:
            assert float(sv.min()) > 0.9  # Hessian = I + PSD
        else:
            assert float(sv[hidden[0]]) < 1e-6 * float(sv[0])
    xr = x.clone().requires_grad_(True)
    (moved,) = torch.autograd.grad(quad(xr).sum(), xr)
    assert float((moved - x).norm(dim=1).mean()) < 0.05 * float(x.norm(dim=1).mean())


def test_standardization_known_values() -> None:
    source = torch.tensor([[0.0, 10.0], [2.0, 12.0]] * 3)  # variances 1, 1
    target = torch.tensor([[10.0, 0.0], [14.0, 4.0]] * 2)  # variances 4, 4
    shift, scale = standardization(source, target)
    assert torch.allclose(shift, torch.tensor([6.5, 6.5]))
    assert scale == pytest.approx(2.5**0.5)
    _, constant = standardization(torch.ones(10, 3), torch.ones(12, 3))
    assert constant == 1.0


def test_networks_stay_convex_while_training() -> None:
    """The potential f is clamped after every step; g after its projection. Large lr so weights do move."""
    torch.manual_seed(0)
    dim = 4
    f, g = ICNN(dim, (32, 32)), ICNN(dim, (32, 32))
    f0 = [w.detach().clone() for w in f.z_weights]
    f_opt = torch.optim.Adam(f.parameters(), lr=3e-2, betas=(0.5, 0.9))
    g_opt = torch.optim.Adam(g.parameters(), lr=3e-2, betas=(0.5, 0.9))
    x, y = torch.randn(64, dim), torch.randn(64, dim) * 2 + 1
    for _ in range(15):
        for _ in range(2):
            g_step(f, g, g_opt, x, penalty=1.0)
        f_step(f, g, f_opt, x, y)
    assert any(float((w.detach() - w0).abs().max()) > 1e-2 for w, w0 in zip(f.z_weights, f0, strict=False))
    assert f.min_weight() >= 0.0
    assert float(midpoint_gaps(f, dim).max()) <= 1e-10
    assert float(midpoint_gaps(g.clamp_(), dim).max()) <= 1e-10


# -- the fitted map --------------------------------------------------------------------------
def test_translation_is_recovered(translation: tuple[W2Map, np.ndarray]) -> None:
    """N(0, I) -> N(t, I): the Brenier map is x + t, pointwise (a reflection would not do)."""
    tmap, _ = translation
    x = np.random.default_rng(1).normal(size=(500, 2)).astype(np.float32)
    moved = tmap.transport(x)
    assert isinstance(moved, np.ndarray)
    assert moved.shape == (500, 2)
    error = np.linalg.norm(moved - (x + SHIFT), axis=1)
    assert error.mean() < 0.3, error.mean()
    assert np.linalg.norm((moved - x).mean(0) - SHIFT) < 0.25
    assert tmap.info["iterations"] == TRANSLATION.n_iters
    assert tmap.info["seconds"] > 0
    assert 0 < tmap.info["best_step"] <= TRANSLATION.n_iters
    assert tmap.info["val_energy"] < 0.1
    assert tmap.info["initial_val_energy"] > 1.0  # started near the identity, far from the target
    assert tmap.f.min_weight() >= 0.0


def test_potential_is_the_potential_of_the_map(translation: tuple[W2Map, np.ndarray]) -> None:
    """Central differences of ``potential`` (in the units of the data, after standardisation
    is undone) reproduce ``transport``.
    """
    tmap, _ = translation
    # the standardisation is non-trivial
    assert tmap.scale != 1.0
    assert float(tmap.shift.abs().max()) > 1.0
    x = np.random.default_rng(2).normal(size=(50, 2))
    h = 1e-2
    numeric = np.stack([(tmap.potential(x + h * e) - tmap.potential(x - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
    assert np.abs(numeric - tmap.transport(x)).max() < 0.05


def test_short_fit_is_not_worse_than_identity() -> None:
    """Regression: 50 outer steps with the paper's hyper-parameters in 20-D (cells at mean ~2).
    The plain OT-ICNN (no |x|^2 term, no standardisation) ends far worse than the identity:
    its initial map collapses all cells and training first explodes.
    """
    source, target = cell_like(0)
    test_source, test_target = cell_like(1)
    identity = energy(test_source, test_target)
    short = W2Config(n_iters=50, eval_every=10)
    tmap = fit_w2(source, target, short, seed=0)
    assert energy(tmap.transport(test_source), test_target) <= 1.1 * identity
    plain = fit_w2(source, target, short.replace(standardize=False, quadratic=False), seed=0)
    assert energy(plain.transport(test_source), test_target) > 2.0 * identity


def test_initial_state_is_kept_when_training_only_hurts() -> None:
    """With an absurd learning rate every trained state is worse; the returned map is then the
    near-identity starting map (step 0), not the last or a random state.
    """
    source, target = cell_like(0)
    tmap = fit_w2(source, target, W2Config(n_iters=20, n_inner=2, lr=1.0, eval_every=5, batch_size=64), seed=0)
    assert tmap.info["best_step"] == 0
    assert tmap.info["val_energy"] == tmap.info["initial_val_energy"]
    assert max(tmap.history["val_energy"]) > 2 * tmap.info["initial_val_energy"]
    moved = tmap.transport(source)
    assert np.linalg.norm(moved - source, axis=1).mean() < 0.1 * np.linalg.norm(source - source.mean(0), axis=1).mean()


def test_map_is_equivariant_to_rescaling_the_data() -> None:
    """Scaling both groups by c and translating them by b scales and translates the Brenier
    map (T'(c x + b) = c T(x) + b); with the isotropic standardisation the fit sees the same
    numbers, so the fitted maps agree too.
    """
    rng = np.random.default_rng(4)
    source, target = rng.normal(size=(300, 3)), rng.normal(size=(280, 3)) * 1.5 + 1.0
    config = W2Config(n_iters=30, n_inner=3, lr=1e-3, eval_every=10, batch_size=64)
    a = fit_w2(source, target, config, seed=0)
    movement = np.abs(a.transport(source) - source).max()
    assert movement > 0.5  # the map did move
    # a power-of-two scale is exact in floating point: the fits see identical numbers
    scaled = fit_w2(4.0 * source, 4.0 * target, config, seed=0)
    assert scaled.scale == 4.0 * a.scale
    assert torch.equal(scaled.shift, 4.0 * a.shift)
    assert np.allclose(scaled.transport(4.0 * source), 4.0 * a.transport(source), rtol=1e-6, atol=1e-5)
    # any scale and shift: rounding of the inputs perturbs training slightly (~1% of the movement)
    c, b = 40.0, np.array([100.0, -5.0, 7.0])
    shifted = fit_w2(c * source + b, c * target + b, config, seed=0)
    assert shifted.scale == pytest.approx(c * a.scale, rel=1e-5)
    expected = c * a.transport(source) + b
    assert np.abs(shifted.transport(c * source + b) - expected).max() < 0.05 * c * movement


def test_dilation_is_recovered() -> None:
    """N(0, I) -> N(0, 4 I): the Brenier map is x -> 2 x (identity errs by |x|, 1.25 on average)."""
    rng = np.random.default_rng(0)
    source = rng.normal(size=(1000, 2)).astype(np.float32)
    target = (2.0 * rng.normal(size=(1100, 2))).astype(np.float32)
    tmap = fit_w2(source, target, TRANSLATION, seed=0)
    x = np.random.default_rng(1).normal(size=(500, 2)).astype(np.float32)
    error = np.linalg.norm(tmap.transport(x) - 2.0 * x, axis=1)
    assert error.mean() < 0.5, error.mean()


def test_save_load_roundtrip(translation: tuple[W2Map, np.ndarray], tmp_path) -> None:
    tmap, source = translation
    path = tmap.save(tmp_path / "w2.safetensors")
    loaded = W2Map.load(path)
    assert loaded.config == tmap.config
    assert loaded.info == tmap.info
    assert loaded.dim == 2
    assert loaded.scale == tmap.scale
    assert torch.equal(loaded.shift, tmap.shift)
    assert np.array_equal(loaded.transport(source), tmap.transport(source))
    t_in = torch.from_numpy(source[:10])
    t_out = loaded.transport(t_in)
    assert isinstance(t_out, torch.Tensor)
    assert torch.equal(t_out, torch.from_numpy(tmap.transport(source[:10])))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        W2Map.load(tmp_path / "bad.safetensors")


def test_version_1_files_load_as_the_plain_network(tmp_path) -> None:
    """Files written before the quadratic term and the standardisation hold the plain ICNN in
    raw coordinates; they load as exactly that.
    """
    rng = np.random.default_rng(3)
    source, target = rng.normal(size=(60, 3)), rng.normal(size=(50, 3)) + 1.0
    plain = fit_w2(source, target, W2Config(n_iters=5, n_inner=2, eval_every=5, standardize=False, quadratic=False))
    tensors = {k: v for k, v in plain.state_tensors().items() if not k.startswith("standardizer.")}
    header = plain.header()
    header["format_version"] = 1
    header["config"] = {k: v for k, v in header["config"].items() if k not in ("standardize", "quadratic")}
    save_tensors(tmp_path / "v1.safetensors", tensors, header)
    loaded = W2Map.load(tmp_path / "v1.safetensors")
    assert not loaded.config.quadratic
    assert not loaded.config.standardize
    assert loaded.scale == 1.0
    assert np.array_equal(loaded.transport(source), plain.transport(source))
    header["format_version"] = 3
    save_tensors(tmp_path / "v3.safetensors", tensors, header)
    with pytest.raises(ModelFileError, match="upgrade"):
        W2Map.load(tmp_path / "v3.safetensors")


def test_same_seed_same_map_and_input_untouched() -> None:
    rng = np.random.default_rng(3)
    source, target = rng.normal(size=(40, 3)), rng.normal(size=(29, 3)) + 1.0
    copies = source.copy(), target.copy()
    config = W2Config(n_iters=20, n_inner=2, eval_every=10, batch_size=16)
    a, b = fit_w2(source, target, config, seed=5), fit_w2(source, target, config, seed=5)
    c = fit_w2(source, target, config, seed=6)
    assert np.array_equal(a.transport(source), b.transport(source))
    assert not np.array_equal(a.transport(source), c.transport(source))
    assert np.array_equal(source, copies[0])
    assert np.array_equal(target, copies[1])


# -- errors ----------------------------------------------------------------------------------
def test_bad_input_raises_input_error(translation: tuple[W2Map, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="features"):
        fit_w2(rng.normal(size=(50, 3)), rng.normal(size=(50, 4)), W2Config(n_iters=1))
    with pytest.raises(InputError, match="NaN"):
        fit_w2(np.full((50, 2), np.nan), rng.normal(size=(50, 2)), W2Config(n_iters=1))
    with pytest.raises(InputError, match="fitted on 2"):
        translation[0].transport(rng.normal(size=(5, 3)))


@pytest.mark.parametrize(
    "changes",
    [
        dict(n_iters=0),
        dict(lr=0.0),
        dict(betas=(0.5, 1.0)),
        dict(hidden=()),
        dict(penalty=-1.0),
        dict(quadratic="yes"),
        dict(quadratic_lr_scale=0.0),
    ],
)
def test_bad_config_raises_config_error(changes: dict) -> None:
    with pytest.raises(ConfigError):
        W2Config(**changes)


def test_short_default_and_paper_schedule() -> None:
    default, paper = W2Config(), W2Config.paper()
    assert (paper.hidden, paper.n_iters, paper.n_inner, paper.lr, paper.betas, paper.batch_size) == (
        (64, 64, 64, 64),
        100_000,
        10,
        1e-4,
        (0.5, 0.9),
        256,
    )
    assert (default.n_iters, default.eval_every, paper.eval_every) == (600, 250, 1_000)
    assert default == paper.replace(n_iters=600, eval_every=250)  # only the schedule differs
    assert W2Config.paper(n_iters=10).n_iters == 10
    assert W2Config.from_dict(default.to_dict()) == default
    assert default.standardize
    assert default.quadratic
    assert paper.standardize
    assert paper.quadratic
