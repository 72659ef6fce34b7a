"""method="fast": the compositional closed-form bound (certopt.sdp.fast)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from certopt.sdp import GroupSort, HouseholderActivation, MaxMin, Residual, lipschitz_bound
from certopt.sdp.compiler import compile_network
from certopt.sdp.fast import solve_fast
from certopt.sdp.first_order import solve_first_order
from certopt.sdp.maxmin_nets import load_maxmin_mat
from certopt.sdp.program import input_basis
from certopt.sdp.verify import scaled_top_eigenvalue
from tests.sdp.test_orthogonal import DATA


def _layers(activation, widths, seed):
    torch.manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(activation(n_out))
    return nn.Sequential(*layers).double()


NETS = {
    "relu": lambda: _layers(lambda n: nn.ReLU(), (5, 8, 8, 3), 0),
    "leaky": lambda: _layers(lambda n: nn.LeakyReLU(0.2), (5, 8, 8, 3), 1),
    "tanh": lambda: _layers(lambda n: nn.Tanh(), (5, 8, 6, 3), 2),
    "sigmoid": lambda: _layers(lambda n: nn.Sigmoid(), (5, 8, 6, 3), 3),
    "maxmin": lambda: _layers(lambda n: MaxMin(), (5, 8, 8, 3), 4),
    "householder": lambda: _layers(lambda n: HouseholderActivation(n, theta=0.4), (5, 8, 8, 3), 5),
    "groupsort": lambda: _layers(lambda n: GroupSort(4), (5, 8, 8, 3), 6),
    "residual": lambda: nn.Sequential(
        nn.Linear(5, 6), Residual(nn.Sequential(nn.Linear(6, 6), MaxMin())),
        Residual(nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))),
        nn.Linear(6, 3)).double(),
}


@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_fast_is_verified_between_the_sdp_and_the_naive_bound(name, norm):
    torch.manual_seed(0)
    net = NETS[name]()
    for encoding in (("network", "qc") if name == "groupsort" else ("network",)):
        fast = lipschitz_bound(net, norm=norm, method="fast", groupsort=encoding)
        sdp = lipschitz_bound(net, norm=norm, method="lipsdp", groupsort=encoding,
                              attack=False)
        assert fast.verified and fast.check() and fast.n_iter == 0
        assert fast.lower <= fast.bound <= fast.naive
        assert sdp.verified and sdp.bound <= fast.bound * (1 + 1e-9)
        # the closed form is a real improvement on the product of norms except for
        # GroupSort's sorting network, whose pass-through chains it bounds by norms
        if name != "groupsort":
            assert fast.bound < 0.97 * fast.naive


def _scaled_orthogonal(n, scale, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return scale * q


@pytest.mark.parametrize("activation, gain", [(nn.ReLU(), 1.0), (nn.LeakyReLU(-0.5), 1.0),
                                              (nn.Sigmoid(), 0.25), (MaxMin(), 1.0)])
def test_fast_is_exact_on_one_hidden_layer_with_orthogonal_output(activation, gain):
    """ℓ2, W_1ᵀW_1 = νI: fast = LipSDP = √ν·gain·‖W_0‖₂ (module doc of certopt.sdp.fast).
    (In ℓ∞ the closed form's input shape diag(R) is not optimal in general.)"""
    rng = np.random.default_rng(0)
    w0, w1 = rng.standard_normal((6, 4)), _scaled_orthogonal(6, 1.7, 1)
    net = nn.Sequential(nn.Linear(4, 6), activation, nn.Linear(6, 6)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w0))
        net[2].weight.copy_(torch.from_numpy(w1))
    fast = lipschitz_bound(net, method="fast")
    sdp = lipschitz_bound(net, method="lipsdp", attack=False)
    assert fast.verified and sdp.verified
    assert fast.bound == pytest.approx(sdp.bound, rel=1e-6)
    assert fast.bound == pytest.approx(1.7 * gain * np.linalg.norm(w0, 2), rel=1e-9)


def test_fast_certifies_one_on_an_orthogonal_maxmin_net():
    net = nn.Sequential(nn.Linear(6, 6), MaxMin(), nn.Linear(6, 6), MaxMin(),
                        nn.Linear(6, 6)).double()
    with torch.no_grad():
        for k, layer in enumerate(net[::2]):
            layer.weight.copy_(torch.from_numpy(_scaled_orthogonal(6, 1.0, k)))
    assert lipschitz_bound(net, method="fast").bound == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("norm", [2, math.inf])
def test_first_order_from_the_fast_point_reaches_the_same_optimum(norm):
    net = NETS["relu"]()
    program = compile_network(net)
    name = "2" if norm == 2 else "inf"
    fast = solve_fast(program, name)
    warm = solve_first_order(program, norm, start=(fast.input_weight, fast.multipliers))
    cold = solve_first_order(program, norm)
    sdp = lipschitz_bound(net, norm=name, method="lipsdp", attack=False).bound ** 2
    assert warm.history["value"][0] == pytest.approx(float(np.max(fast.input_weight))
                                                     if norm == 2 else fast.input_weight.sum(),
                                                     rel=1e-6)
    for solution in (warm, cold):
        assert solution.value == pytest.approx(sdp, rel=1e-3)


def test_auto_returns_fast_when_it_meets_rtol_against_the_attack():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), MaxMin(), nn.Linear(6, 6)).double()
    with torch.no_grad():
        for k, layer in enumerate(net[::2]):
            layer.weight.copy_(torch.from_numpy(_scaled_orthogonal(6, 1.0, k)))
    quick = lipschitz_bound(net, rtol=1e-6)
    assert quick.verified and quick.n_iter == 0 and quick.bound == pytest.approx(1.0, abs=1e-8)
    relu = NETS["relu"]()
    solved = lipschitz_bound(relu, rtol=1e-3)  # fast is far above the attack: solve the SDP
    assert solved.verified and solved.n_iter > 0
    assert solved.bound < lipschitz_bound(relu, method="fast").bound
    assert lipschitz_bound(relu, rtol=10.0).n_iter == 0


@pytest.mark.skipif(not (DATA / "resweights_8_32.mat").exists(), reason="needs maxmin_nets data")
def test_inf_verifies_with_inputs_the_network_ignores():
    """Blank MNIST pixels get γ_j ≈ 0, below the Cholesky test's shift δ: the published
    resweights_8_32 net (label 8) failed the float64 verification this way."""
    net = load_maxmin_mat(DATA / "resweights_8_32.mat", output_rows=[8])
    result = lipschitz_bound(net, norm="inf", method="fast", attack=False)
    assert result.verified and result.check() and result.bound < 0.5 * result.naive


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, MaxMin])
def test_fast_on_the_input_row_space_matches_the_full_program(activation):
    # 40 inputs seen through 6 rows: fast's ℓ2 elimination runs on a 6-dimensional input;
    # the verification (full program, dense certificate) must not need to raise its ρ
    net = _layers(lambda n: activation(), (40, 6, 6, 3), 7)
    program = compile_network(net)
    basis = input_basis(program)
    assert basis is not None and basis.shape == (40, 6)
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-12)
    first = program.stages[0].pre.terms[0]
    np.testing.assert_allclose(first @ basis @ basis.T, first, atol=1e-12)
    reduced = solve_fast(program, "2")
    assert reduced.input_weight.shape == (40,)
    result = lipschitz_bound(net, method="fast", attack=False)
    assert result.verified and result.check()
    assert 0 <= result.residuals["verification_increase"] < 1e-8
    assert result.bound == pytest.approx(math.sqrt(reduced.input_weight[0]), rel=1e-8)
    exact = lipschitz_bound(net, method="lipsdp", attack=False)
    assert exact.bound <= result.bound * (1 + 1e-6) <= result.naive * (1 + 1e-6)
    # ℓ∞: the shape √diag(R) and its scale come from the 6-dimensional R̃ as well
    reduced = solve_fast(program, "inf")
    result = lipschitz_bound(net, norm="inf", method="fast", attack=False)
    assert result.verified and result.check()
    assert 0 <= result.residuals["verification_increase"] < 1e-8
    assert result.bound == pytest.approx(math.sqrt(reduced.input_weight.sum()), rel=1e-8)
    exact = lipschitz_bound(net, norm="inf", method="lipsdp", attack=False)
    assert exact.bound <= result.bound * (1 + 1e-6)


def test_scaled_top_eigenvalue_on_the_row_space_matches_the_dense_one():
    rng = np.random.default_rng(3)
    n0, rank = 30, 5
    basis, _ = np.linalg.qr(rng.normal(size=(n0, rank)))
    factor = rng.normal(size=(rank, rank))
    for reduced in (factor @ factor.T, factor @ factor.T - 3.0 * np.eye(rank)):
        full = basis @ reduced @ basis.T
        weight = rng.uniform(0.2, 2.0, n0)
        inv_sqrt = 1.0 / np.sqrt(weight)
        dense = max(np.linalg.eigvalsh(inv_sqrt[:, None] * full * inv_sqrt[None, :])[-1], 0.0)
        assert scaled_top_eigenvalue(reduced, weight, basis) == pytest.approx(dense, abs=1e-12,
                                                                              rel=1e-10)
        assert scaled_top_eigenvalue(full, weight, None) == pytest.approx(
            np.linalg.eigvalsh(inv_sqrt[:, None] * full * inv_sqrt[None, :])[-1], rel=1e-10)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_groupsort_qc_fast_passes_the_group_means_through_below_naive(seed, norm):
    """GroupSort QC stages: the mean pass-through multipliers (module doc) give a verified
    bound strictly below the naive product (by 0.3-9% on these nets, where the plain
    1-Lipschitz QC and the sorting network give the naive bound), above the SDP."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 8), GroupSort(4), nn.Linear(8, 8), GroupSort(4),
                        nn.Linear(8, 3)).double()
    fast = lipschitz_bound(net, norm=norm, method="fast", groupsort="qc", attack=False)
    sdp = lipschitz_bound(net, norm=norm, method="lipsdp", groupsort="qc", attack=False)
    assert fast.verified and fast.status.value == "optimal"
    assert fast.bound < (1 - 1e-3) * fast.naive
    assert sdp.verified and sdp.bound <= fast.bound * (1 + 1e-9)
    both = lipschitz_bound(net, norm=norm, method="fast", attack=False)
    assert both.verified and both.bound <= fast.bound * (1 + 1e-12) < both.naive
