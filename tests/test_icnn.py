"""The W2 / ICNN baseline (OT-ICNN, CellOT) against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellw1.errors import ConfigError, InputError, ModelFileError
from cellw1.icnn import ICNN, W2Config, W2Map, f_step, fit_w2, g_step

SHIFT = np.array([3.0, 0.0])
#: short but converged schedule for the 2-D translation (the paper: 100,000 x 10 at lr 1e-4)
TRANSLATION = W2Config(n_iters=800, n_inner=3, lr=5e-4, eval_every=100, val_fraction=0.25)


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


# -- the network -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_icnn_is_convex_at_init(seed: int) -> None:
    torch.manual_seed(seed)
    net = ICNN(5, (16, 16, 16))
    assert net.min_weight() >= 0 and float(net.negative_weight_penalty().detach()) == 0.0
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
    assert net.min_weight() == 0.0 and float(midpoint_gaps(net, 5).max()) <= 1e-10


def test_networks_stay_convex_while_training() -> None:
    """f is clamped after every step; g after its projection. Large lr so weights do move."""
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
    assert any(float((w.detach() - w0).abs().max()) > 1e-2 for w, w0 in zip(f.z_weights, f0))
    assert f.min_weight() >= 0.0
    assert float(midpoint_gaps(f, dim).max()) <= 1e-10
    assert float(midpoint_gaps(g.clamp_(), dim).max()) <= 1e-10


# -- the fitted map --------------------------------------------------------------------------
def test_translation_is_recovered(translation: tuple[W2Map, np.ndarray]) -> None:
    """N(0, I) -> N(t, I): the Brenier map is x + t, pointwise (a reflection would not do)."""
    tmap, _ = translation
    x = np.random.default_rng(1).normal(size=(500, 2)).astype(np.float32)
    moved = tmap.transport(x)
    assert isinstance(moved, np.ndarray) and moved.shape == (500, 2)
    error = np.linalg.norm(moved - (x + SHIFT), axis=1)
    assert error.mean() < 0.3, error.mean()
    assert np.linalg.norm((moved - x).mean(0) - SHIFT) < 0.25
    assert tmap.info["iterations"] == 800 and tmap.info["seconds"] > 0
    assert 0 < tmap.info["best_step"] <= 800 and tmap.info["val_energy"] < 0.1
    assert tmap.f.min_weight() >= 0.0


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
    assert loaded.config == tmap.config and loaded.info == tmap.info and loaded.dim == 2
    assert np.array_equal(loaded.transport(source), tmap.transport(source))
    t_in = torch.from_numpy(source[:10])
    t_out = loaded.transport(t_in)
    assert isinstance(t_out, torch.Tensor) and torch.equal(t_out, torch.from_numpy(tmap.transport(source[:10])))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        W2Map.load(tmp_path / "bad.safetensors")


def test_same_seed_same_map_and_input_untouched() -> None:
    rng = np.random.default_rng(3)
    source, target = rng.normal(size=(40, 3)), rng.normal(size=(29, 3)) + 1.0
    copies = source.copy(), target.copy()
    config = W2Config(n_iters=20, n_inner=2, eval_every=10, batch_size=16)
    a, b = fit_w2(source, target, config, seed=5), fit_w2(source, target, config, seed=5)
    c = fit_w2(source, target, config, seed=6)
    assert np.array_equal(a.transport(source), b.transport(source))
    assert not np.array_equal(a.transport(source), c.transport(source))
    assert np.array_equal(source, copies[0]) and np.array_equal(target, copies[1])


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
    "changes", [dict(n_iters=0), dict(lr=0.0), dict(betas=(0.5, 1.0)), dict(hidden=()), dict(penalty=-1.0)]
)
def test_bad_config_raises_config_error(changes: dict) -> None:
    with pytest.raises(ConfigError):
        W2Config(**changes)


def test_paper_defaults_and_benchmark_preset() -> None:
    paper = W2Config()
    assert (paper.hidden, paper.n_iters, paper.n_inner, paper.lr, paper.betas, paper.batch_size) == (
        (64, 64, 64, 64), 100_000, 10, 1e-4, (0.5, 0.9), 256,
    )
    bench = W2Config.benchmark()
    assert bench.n_iters < paper.n_iters and bench.lr == paper.lr and bench.n_inner == 10
    assert W2Config.from_dict(bench.to_dict()) == bench
