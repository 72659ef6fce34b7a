"""MaxMin, GroupSort, HouseholderActivation and Residual against direct definitions."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certopt.core.errors import InputTypeError, InputValueError
from certopt.sdp.activations import GroupSort, HouseholderActivation, MaxMin, Residual


def maxmin_loop(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for row in range(x.shape[0]):
        for k in range(0, x.shape[1], 2):
            a, b = x[row, k], x[row, k + 1]
            out[row, k], out[row, k + 1] = max(a, b), min(a, b)
    return out


def groupsort_loop(x: np.ndarray, g: int) -> np.ndarray:
    out = np.empty_like(x)
    for row in range(x.shape[0]):
        for k in range(0, x.shape[1], g):
            out[row, k:k + g] = sorted(x[row, k:k + g], reverse=True)
    return out


def householder_loop(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for row in range(x.shape[0]):
        for k, angle in enumerate(theta):
            v = np.array([math.cos(angle), math.sin(angle)])
            z = x[row, 2 * k:2 * k + 2]
            out[row, 2 * k:2 * k + 2] = z if v @ z > 0 else (np.eye(2) - 2 * np.outer(v, v)) @ z
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 5), st.sampled_from([1, 2, 3, 4]))
def test_forward_matches_loops(seed, n_groups, g):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4 * n_groups * g // math.gcd(4, g)))
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(GroupSort(g)(xt).numpy(), groupsort_loop(x, g), atol=0)
    np.testing.assert_allclose(MaxMin()(xt).numpy(), maxmin_loop(x), atol=0)
    np.testing.assert_allclose(GroupSort(2)(xt).numpy(), MaxMin()(xt).numpy(), atol=0)
    theta = rng.uniform(-math.pi, math.pi, x.shape[1] // 2)
    hh = HouseholderActivation(x.shape[1], torch.from_numpy(theta))
    np.testing.assert_allclose(hh(xt).detach().numpy(), householder_loop(x, theta), atol=1e-12)


def test_householder_default_is_maxmin_and_norm_preserving():
    x = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = HouseholderActivation(8, torch.tensor(-math.pi / 4, dtype=torch.float64))
    torch.testing.assert_close(exact(x), MaxMin()(x), atol=1e-12, rtol=0)
    default = HouseholderActivation(8)  # float32 angle -pi/4: MaxMin up to float32 rounding
    torch.testing.assert_close(default(x), MaxMin()(x), atol=1e-6, rtol=0)
    hh = HouseholderActivation(8, theta=0.3).double()
    torch.testing.assert_close(hh(x).norm(dim=1), x.norm(dim=1), atol=1e-12, rtol=0)


def test_shapes_other_than_2d():
    x = torch.arange(12.0).flip(0)
    assert torch.equal(GroupSort(3)(x.reshape(2, 2, 3)).reshape(-1), torch.tensor(
        [11.0, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]))
    assert torch.equal(MaxMin()(torch.tensor([1.0, 2.0])), torch.tensor([2.0, 1.0]))


def test_gradients_gradcheck():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(GroupSort(4), (x,))
    assert torch.autograd.gradcheck(MaxMin(), (x,))
    hh = HouseholderActivation(8, torch.randn(4, dtype=torch.float64, generator=gen))
    theta = hh.theta.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda inp, th: torch.func.functional_call(hh, {"theta": th}, (inp,)), (x, theta))


def test_householder_theta_gets_gradient_and_matches_formula():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 4, dtype=torch.float64, generator=gen)
    theta = torch.tensor([0.4, -2.0], dtype=torch.float64)
    hh = HouseholderActivation(4, theta.clone())
    hh(x).pow(2).mul(torch.arange(4.0, dtype=torch.float64)).sum().backward()
    assert hh.theta.grad is not None and hh.theta.grad.abs().sum() > 0
    # finite differences in theta
    eps = 1e-6
    for k in range(2):
        bumped = theta.clone()
        bumped[k] += eps
        lo = HouseholderActivation(4, theta.clone())(x).pow(2).mul(torch.arange(4.0)).sum()
        hi = HouseholderActivation(4, bumped)(x).pow(2).mul(torch.arange(4.0)).sum()
        assert abs(float((hi - lo).detach() / eps) - float(hh.theta.grad[k])) < 1e-4


def test_residual():
    lin = nn.Linear(3, 3).double()
    block = Residual(nn.Sequential(lin, nn.Tanh()))
    x = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(block(x), x + torch.tanh(lin(x)))
    with pytest.raises(InputValueError, match="same shape"):
        Residual(nn.Linear(3, 2))(torch.zeros(1, 3))
    with pytest.raises(InputTypeError, match="inner"):
        Residual(lambda x: x)


def test_bad_arguments():
    with pytest.raises(InputValueError, match="divisible by 4"):
        GroupSort(4)(torch.zeros(2, 6))
    with pytest.raises(InputValueError, match="divisible by 2"):
        MaxMin()(torch.zeros(3))
    with pytest.raises(InputValueError, match="group_size"):
        GroupSort(0)
    with pytest.raises(InputTypeError, match="group_size"):
        GroupSort(2.5)
    with pytest.raises(InputValueError, match="even"):
        HouseholderActivation(5)
    with pytest.raises(InputValueError, match="theta"):
        HouseholderActivation(6, theta=[0.1, 0.2])
    with pytest.raises(InputValueError, match="last dimension 4"):
        HouseholderActivation(4)(torch.zeros(2, 6))
