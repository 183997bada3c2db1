"""1-Lipschitz building blocks: GroupSort, orthonormal layers, the potential network."""

from __future__ import annotations

import copy

import pytest
import torch

from cellw1 import ConfigError, GroupSort, LipschitzPotential, OrthonormalLinear

SHAPES = [(2, 64), (64, 64), (64, 1), (50, 64), (64, 17), (300, 64), (1, 8)]


def test_groupsort_sorts_within_groups() -> None:
    x = torch.tensor([[3.0, 1.0, 2.0, 0.0, -1.0, 5.0, 4.0, 2.0]])
    out = GroupSort(4)(x)
    assert torch.equal(out, torch.tensor([[0.0, 1.0, 2.0, 3.0, -1.0, 2.0, 4.0, 5.0]]))


def test_groupsort_full_sort_and_maxmin() -> None:
    x = torch.randn(17, 12)
    assert torch.equal(GroupSort(12)(x), x.sort(dim=1).values)
    pairs = x.reshape(17, 6, 2).sort(-1).values.reshape(17, 12)
    assert torch.equal(GroupSort(2)(x), pairs)


def test_groupsort_is_a_permutation_norm_preserving() -> None:
    x = torch.randn(29, 16)
    out = GroupSort(4)(x)
    torch.testing.assert_close(out.norm(dim=1), x.norm(dim=1))


@pytest.mark.parametrize("bad", [1, 0, -2])
def test_groupsort_refuses_identity_group(bad: int) -> None:
    with pytest.raises(ConfigError, match="group_size"):
        GroupSort(bad)


def test_groupsort_width_must_divide() -> None:
    with pytest.raises(ConfigError, match="not divisible"):
        GroupSort(4)(torch.randn(3, 6))
    with pytest.raises(ConfigError, match="does not divide"):
        LipschitzPotential(3, (64, 30), group_size=4)


def test_unknown_orthonormalization() -> None:
    with pytest.raises(ConfigError, match="unknown orthonormalization"):
        OrthonormalLinear(3, 4, orthonormalization="qr")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["cayley", "bjorck"])
@pytest.mark.parametrize(("d_in", "d_out"), SHAPES)
def test_weight_is_orthonormal(method: str, d_in: int, d_out: int) -> None:
    torch.manual_seed(0)
    w = OrthonormalLinear(d_in, d_out, orthonormalization=method).weight().detach().double()  # type: ignore[arg-type]
    assert w.shape == (d_out, d_in)
    gram = w @ w.T if d_out <= d_in else w.T @ w
    torch.testing.assert_close(gram, torch.eye(min(d_in, d_out), dtype=torch.float64), atol=2e-5, rtol=0)


def test_bjorck_order_and_iterations_are_configurable() -> None:
    torch.manual_seed(1)
    layer = OrthonormalLinear(20, 20, orthonormalization="bjorck", bjorck_order=1, bjorck_iters=1)
    with torch.no_grad():
        layer.free.add_(0.3 * torch.randn(20, 20))

    def error(order: int, iters: int) -> float:
        layer.bjorck_order, layer.bjorck_iters = order, iters
        layer._invalidate()
        w = layer.weight().detach().double()
        return float((w @ w.T - torch.eye(20, dtype=torch.float64)).abs().max())

    assert error(1, 2) > error(1, 20)
    assert error(3, 3) < error(1, 3)
    assert error(1, 30) < 1e-5


def _lipschitz_ratio(f: torch.nn.Module, dim: int, n: int = 4000) -> float:
    """The largest |f(x) - f(y)| / |x - y| over random near and far pairs, in float64 (no cancellation)."""
    torch.manual_seed(3)
    x = torch.randn(n, dim, dtype=torch.float64) * 3
    y = x + torch.randn(n, dim, dtype=torch.float64) * (torch.rand(n, 1, dtype=torch.float64) ** 3 + 1e-4)
    f64 = copy.deepcopy(f).double()
    with torch.no_grad():
        return float(((f64(x) - f64(y)).abs() / (x - y).norm(dim=1)).max())


@pytest.mark.parametrize("method", ["cayley", "bjorck"])
@pytest.mark.parametrize("dim", [1, 2, 50, 300])
def test_potential_is_one_lipschitz(method: str, dim: int) -> None:
    torch.manual_seed(0)
    f = LipschitzPotential(dim, (64, 64, 64, 64), orthonormalization=method)  # type: ignore[arg-type]
    assert _lipschitz_ratio(f, dim) <= 1 + 1e-5
    # still 1-Lipschitz after the parameters move far from their initial values
    opt = torch.optim.Adam(f.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        x = torch.randn(64, dim)
        (-(f(x) - f(x + 1)).mean()).backward()
        opt.step()
    assert _lipschitz_ratio(f, dim) <= 1 + 1e-5


def test_potential_reaches_unit_gradient_norm_somewhere() -> None:
    """Orthonormal weights and GroupSort preserve gradient norms (a ReLU net would not)."""
    torch.manual_seed(0)
    f = LipschitzPotential(64, (64, 64), group_size=4)
    x = torch.randn(100, 64, requires_grad=True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    torch.testing.assert_close(g.norm(dim=1), torch.ones(100), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_weight_computed_once_per_step_and_never_stale(fused: bool) -> None:
    torch.manual_seed(0)
    f = LipschitzPotential(5, (8, 8), group_size=2)
    layers = list(f.layers)
    opt = torch.optim.Adam(f.parameters(), lr=0.05, fused=fused, foreach=not fused)
    x = torch.randn(32, 5)
    with torch.no_grad():
        before = [layer.weight().clone() for layer in layers]
    counts = [layer.n_orthonormalizations for layer in layers]
    for _ in range(3):
        opt.zero_grad()
        loss = f(x).mean() - f(x + 1).mean()  # two forward passes in one step
        loss.backward()
        opt.step()
    assert [layer.n_orthonormalizations - c for layer, c in zip(layers, counts, strict=False)] == [3] * len(layers)
    after = [layer.weight().detach() for layer in layers]
    assert all(not torch.allclose(a, b) for a, b in zip(before, after, strict=False))
    # the weight used at inference is the orthonormalisation of the current parameters
    for layer in layers:
        fresh = layer._cayley().detach()
        torch.testing.assert_close(layer.weight().detach(), fresh)


def test_inference_cache_and_load_state_dict() -> None:
    torch.manual_seed(0)
    f = LipschitzPotential(4, (8,), group_size=4).requires_grad_(False)
    x = torch.randn(10, 4)
    n0 = f.layers[0].n_orthonormalizations
    for _ in range(5):
        f(x)
    assert f.layers[0].n_orthonormalizations - n0 == 1
    other = LipschitzPotential(4, (8,), group_size=4)
    f.load_state_dict(other.state_dict())
    torch.testing.assert_close(f(x), other(x).detach())


def test_gradient_accumulation_without_step() -> None:
    f = LipschitzPotential(3, (8,), group_size=2)
    x = torch.randn(6, 3)
    f(x).sum().backward()
    f(x).sum().backward()  # would fail on a freed graph if the cache were reused
    assert all(p.grad is not None for p in f.parameters())
