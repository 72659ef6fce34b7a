"""Gradient-norm-preserving nets: exact certificates, soundness, one real MaxMin net."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from certopt.sdp import GroupSort, HouseholderActivation, MaxMin, Residual, lipschitz_bound
from certopt.sdp.maxmin_nets import maxmin_network

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "maxmin_nets"


def orthogonal_net(activation, width=6, depth=3, seed=0, noise=0.0):
    """``depth`` square orthogonal layers (plus ``noise``·Gaussian) with ``activation`` between."""
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for k in range(depth):
        q, _ = torch.linalg.qr(torch.randn(width, width, dtype=torch.float64, generator=gen))
        lin = nn.Linear(width, width).double()
        with torch.no_grad():
            lin.weight.copy_(q + noise * torch.randn(width, width, dtype=torch.float64,
                                                     generator=gen))
        layers.append(lin)
        if k < depth - 1:
            layers.append(activation())
    return nn.Sequential(*layers)


def product_naive(net, norm):
    """∏‖W_k‖₂ (× √n_0 for the ℓ∞ input norm): every activation here is 1-Lipschitz."""
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    value = math.prod(float(torch.linalg.matrix_norm(w.detach(), 2)) for w in weights)
    return value * (math.sqrt(weights[0].shape[1]) if norm == "inf" else 1.0)


ACTIVATIONS = {
    "maxmin": MaxMin,
    "groupsort4": lambda: GroupSort(4),
    "householder": lambda: HouseholderActivation(
        8, theta=torch.linspace(-3.0, 3.0, 4, dtype=torch.float64)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_orthogonal_nets_certify_one(name):
    net = orthogonal_net(ACTIVATIONS[name], width=8, seed=1)
    res = lipschitz_bound(net, norm=2)
    assert res.verified
    assert res.bound <= 1 + 1e-4
    assert res.lower >= 1 - 1e-6  # the true constant is 1


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("norm", [2, "inf"])
def test_perturbed_weights_are_sound(name, norm):
    net = orthogonal_net(ACTIVATIONS[name], width=8, seed=3, noise=0.3)
    res = lipschitz_bound(net, norm=norm)
    assert res.verified
    assert res.lower <= res.bound * (1 + 1e-9)
    assert res.bound <= product_naive(net, norm) * (1 + 1e-9)


@pytest.mark.parametrize("norm", [2, "inf"])
def test_residual_maxmin_net_is_sound(norm):
    torch.manual_seed(5)
    block = nn.Sequential(nn.Linear(6, 6), MaxMin(), nn.Linear(6, 6))
    net = nn.Sequential(nn.Linear(4, 6), Residual(block), MaxMin(), nn.Linear(6, 2)).double()
    res = lipschitz_bound(net, norm=norm)
    assert res.verified and res.lower <= res.bound <= res.naive


def load_mat_net(path):
    import scipy.io

    weights = [np.asarray(w, dtype=np.float64) for w in scipy.io.loadmat(path)["W"].ravel()]
    return maxmin_network(weights), weights
