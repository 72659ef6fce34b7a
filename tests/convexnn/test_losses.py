"""Losses: prox and conjugate against scipy's scalar minimisation, gradient vs autograd."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from certopt.convexnn.losses import get_loss
from certopt.core.errors import InputValueError

N = 6


def _data(name):
    g = torch.Generator().manual_seed(3)
    v = 2.0 * torch.randn(N, generator=g, dtype=torch.float64)
    if name == "squared":
        y = torch.randn(N, generator=g, dtype=torch.float64)
    else:
        y = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    return v, y


def _scalar_loss(name, p, y):
    if name == "squared":
        return 0.5 * (p - y) ** 2
    if name == "hinge":
        return max(0.0, 1.0 - y * p)
    return math.log1p(math.exp(-y * p))


@pytest.mark.parametrize("name", ["squared", "hinge", "logistic"])
@pytest.mark.parametrize("rho", [0.001, 0.05, 1.0, 30.0])
def test_prox_matches_scalar_minimisation(name, rho):
    loss = get_loss(name)
    v, y = _data(name)
    z = loss.prox(v, y, rho)
    for k in range(N):
        def objective(t, k=k):
            return _scalar_loss(name, t, float(y[k])) / N + 0.5 * rho * (t - float(v[k])) ** 2
        ref = minimize_scalar(objective, bounds=(-60, 200), method="bounded",
                              options={"xatol": 1e-12}).x
        assert float(z[k]) == pytest.approx(ref, abs=1e-7)


@pytest.mark.parametrize("name", ["squared", "logistic"])
def test_gradient_matches_autograd(name):
    loss = get_loss(name)
    v, y = _data(name)
    p = v.clone().requires_grad_(True)
    loss.value(p, y).backward()
    assert torch.allclose(loss.gradient(v, y), p.grad, atol=1e-14)


@pytest.mark.parametrize("name", ["squared", "hinge", "logistic"])
def test_conjugate_is_fenchel_sup(name):
    # L*(lam) = sum_k sup_z (lam_k z - l(z, y_k)/n); at lam = gradient of L at p the sup
    # is attained at p: L*(lam) = lam^T p - L(p) (Fenchel-Young equality).
    loss = get_loss(name)
    p, y = _data(name)
    lam = loss.gradient(p, y)
    if name == "hinge":
        p = p + 0.0  # margins y p != 1 almost surely, so the subgradient is the gradient
    expected = float(lam @ p - loss.value(p, y))
    assert loss.conjugate(lam, y) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # and the sup is a max: any other z gives a smaller value
    other = p + 0.3
    assert loss.conjugate(lam, y) >= float(lam @ other - loss.value(other, y)) - 1e-12


def test_conjugate_outside_domain_is_infinite_and_scaling_is_best():
    loss = get_loss("hinge")
    _, y = _data("hinge")
    assert loss.conjugate(y / N, y) == math.inf  # n lam y = +1 is outside [-1, 0]
    squared = get_loss("squared")
    v, t = _data("squared")
    lam = torch.ones(N, dtype=torch.float64)
    s = squared.best_scale(lam, t, 10.0)
    grid = np.linspace(0.0, 10.0, 2001)
    best = max(-squared.conjugate(g * lam, t) for g in grid)
    assert -squared.conjugate(s * lam, t) >= best - 1e-12


def test_bad_loss_and_labels():
    with pytest.raises(InputValueError, match="loss"):
        get_loss("absolute")
    with pytest.raises(InputValueError, match="labels"):
        get_loss("hinge").check_targets(torch.tensor([0.0, 1.0]))
