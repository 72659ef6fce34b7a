"""lipschitz_bound against an independent LipSDP-Neuron, closed forms and soundness checks."""

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

from certopt.core.errors import ConvergenceWarning, InputValueError, UnsupportedError
from certopt.sdp import compile_network, lipschitz_bound
from certopt.sdp import lipschitz as lipschitz_module
from certopt.sdp.reference import solve_lipsdp
from certopt.sdp.result import SDPSolution
from certopt.sdp.verify import lmi_matrix, passes_cholesky, verify

REL = 1e-3  # agreement with the independent reference, relative


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: extra threads only add contention on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def relu_net(widths, seed, bias=True):
    torch.manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out, bias=bias))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def lipsdp_neuron(weights, alpha=0.0, beta=1.0, norm="2", solver="CLARABEL"):
    """LipSDP-Neuron, the classic stacked formulation (math note, sections 1 and 5), in cvxpy.

    minimise ρ s.t. [A; B]ᵀ Q(T) [A; B] + diag(−ρI, 0, …, 0, W_LᵀW_L) ⪯ 0, T ≥ 0 diagonal
    (ℓ∞: −diag(γ) instead of −ρI, minimise Σγ).  Returns the bound √ρ or √Σγ.
    ``solver="SCS"`` runs at eps 1e-9 (agrees with Clarabel to ~1e-8, much faster on
    orders above 100).
    """
    n0, n_hidden = weights[0].shape[1], sum(w.shape[0] for w in weights[:-1])
    n_state = n0 + n_hidden
    a = np.zeros((n_hidden, n_state))
    row = col = 0
    for w in weights[:-1]:
        a[row:row + w.shape[0], col:col + w.shape[1]] = w
        row, col = row + w.shape[0], col + w.shape[1]
    b = np.hstack([np.zeros((n_hidden, n0)), np.eye(n_hidden)])
    t = cp.Variable(n_hidden, nonneg=True)
    tt = cp.diag(t)
    q = cp.bmat([[-2 * alpha * beta * tt, (alpha + beta) * tt], [(alpha + beta) * tt, -2 * tt]])
    ab = np.vstack([a, b])
    last = np.zeros((n_state, n_state))
    width_last = weights[-1].shape[1]
    last[-width_last:, -width_last:] = weights[-1].T @ weights[-1]
    select_x = np.eye(n_state)[:n0]
    if norm == "2":
        rho = cp.Variable(nonneg=True)
        input_block, objective = rho * np.eye(n0), rho
    else:
        gamma = cp.Variable(n0, nonneg=True)
        input_block, objective = cp.diag(gamma), cp.sum(gamma)
    lmi = ab.T @ q @ ab - select_x.T @ input_block @ select_x + last
    problem = cp.Problem(cp.Minimize(objective), [0.5 * (lmi + lmi.T) << 0])
    options = {"eps": 1e-9, "max_iters": 200_000} if solver == "SCS" else {}
    problem.solve(solver=solver, **options)
    assert problem.status == cp.OPTIMAL
    return math.sqrt(objective.value)


def weights_of(net):
    return [m.weight.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("widths, seed", [((4, 6, 3), 0), ((5, 8, 7, 2), 1), ((3, 5, 5, 5, 4), 2)])
def test_agrees_with_independent_lipsdp_neuron(widths, seed, norm):
    net = relu_net(widths, seed)
    expected = lipsdp_neuron(weights_of(net), norm=norm)
    result = lipschitz_bound(net, norm=norm, solver="CLARABEL", attack=False)
    assert result.verified and result.status.converged
    assert result.bound == pytest.approx(expected, rel=REL)
    assert result.solver_bound == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("widths, seed, norm", [
    ((6, 12, 12, 12, 2), 4, "2"), ((6, 12, 12, 12, 2), 4, "inf"),
    ((16, 40, 40, 40, 4), 0, "2"), ((10, 24, 24, 24, 3), 1, "inf")])
def test_default_call_is_tight_on_three_hidden_layers(widths, seed, norm):
    """The default (``method="auto"``: Clarabel at LMI order 42, first-order at 82, 136) is
    within 1e-3 of the exact LipSDP-Neuron optimum, not only on two hidden layers."""
    net = relu_net(widths, seed)
    expected = lipsdp_neuron(weights_of(net), norm=norm, solver="SCS")
    result = lipschitz_bound(net, norm=norm, attack=False)
    assert result.method == "auto" and result.verified
    assert expected * (1 - 1e-6) <= result.bound <= expected * (1 + REL)


def test_leaky_relu_agrees_with_independent_reference():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.2), nn.Linear(6, 5), nn.LeakyReLU(0.2),
                        nn.Linear(5, 2))
    expected = lipsdp_neuron(weights_of(net), alpha=0.2, beta=1.0)
    assert lipschitz_bound(net, solver="CLARABEL", attack=False).bound == pytest.approx(
        expected, rel=REL)


def test_scs_answer_is_verified_and_close():
    net = relu_net((5, 8, 7, 2), 1)
    expected = lipsdp_neuron(weights_of(net))
    result = lipschitz_bound(net, solver="SCS", attack=False)
    assert result.verified
    assert expected * (1 - 1e-9) <= result.bound <= expected * (1 + 1e-3)


def test_linear_net_closed_forms():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 4), nn.Identity(), nn.Dropout(0.3), nn.Linear(4, 3))
    product = net[3].weight.detach().double().numpy() @ net[0].weight.detach().double().numpy()
    result = lipschitz_bound(net, solver="CLARABEL")
    assert result.bound == pytest.approx(np.linalg.norm(product, 2), rel=1e-7)
    assert result.lower == pytest.approx(result.bound, rel=1e-7)  # the Jacobian is constant
    # scalar output, ℓ∞ input: L = ‖a‖₁ exactly (min Σγ s.t. diag(γ) ⪰ aaᵀ is (Σ|a_i|)²)
    row = nn.Linear(6, 1)
    a = row.weight.detach().double().numpy().ravel()
    result = lipschitz_bound(nn.Sequential(row), norm="inf", solver="CLARABEL")
    assert result.bound == pytest.approx(np.abs(a).sum(), rel=1e-6)
    assert result.lower == pytest.approx(np.abs(a).sum(), rel=1e-9)


@pytest.mark.parametrize("norm, dual", [(2, 2), ("inf", 1)])
def test_single_neuron_closed_form(norm, dual):
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 1), nn.ReLU(), nn.Linear(1, 1))
    w1 = net[0].weight.detach().double().numpy().ravel()
    w2 = float(net[2].weight.detach())
    exact = abs(w2) * np.linalg.norm(w1, dual)
    result = lipschitz_bound(net, norm=norm, solver="CLARABEL")
    assert result.bound == pytest.approx(exact, rel=1e-6)
    assert result.lower <= result.bound * (1 + 1e-12)


@pytest.fixture(scope="module")
def moons_net():
    from sklearn.datasets import make_moons

    x, y = make_moons(200, noise=0.1, random_state=0)
    x, y = torch.tensor(x), torch.tensor(y)
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 2)).double()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net


@pytest.mark.parametrize("norm", [2, "inf"])
def test_soundness_lower_le_bound_le_naive(norm, moons_net):
    torch.manual_seed(7)
    nets = [
        relu_net((6, 10, 10, 3), 8),
        nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.LeakyReLU(0.1),
                      nn.Linear(8, 2)),
        moons_net,
    ]
    if norm == 2:
        nets.append(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(2 * 3 * 3, 3)))
    for net in nets:
        shape = (1, 3, 3) if isinstance(net[0], nn.Conv2d) else None
        result = lipschitz_bound(net, norm=norm, solver="CLARABEL", input_shape=shape)
        assert result.verified, net
        assert result.lower <= result.bound
        assert result.bound <= result.naive
        assert result.gap == pytest.approx(result.bound - result.lower)
        # the certificate re-checks: its LMI matrix is positive semidefinite in float64
        assert passes_cholesky(lmi_matrix(result.program, result.input_weight,
                                          result.multipliers))
        assert result.check()


def test_verification_catches_perturbed_multipliers():
    net = relu_net((5, 8, 7, 2), 1)
    program = compile_network(net)
    solution = solve_lipsdp(program, "2", "CLARABEL")
    good = verify(program, solution.input_weight, solution.multipliers, "2")
    assert good.verified
    assert passes_cholesky(lmi_matrix(program, good.input_weight, good.multipliers))
    # halve the multipliers of the first stage: the solver's ρ no longer certifies anything
    perturbed = (
        {"t": 0.5 * solution.multipliers[0]["t"]},
    ) + solution.multipliers[1:]
    assert not passes_cholesky(lmi_matrix(program, good.input_weight, perturbed))
    check = verify(program, good.input_weight, perturbed, "2")
    # ... and the verified bound for them is either absent or strictly larger
    assert not check.verified or check.bound > good.bound * (1 + 1e-3)
    # zero multipliers make the activation block indefinite: no ρ can fix that
    zeros = tuple({"t": np.zeros_like(m["t"])} for m in solution.multipliers)
    assert not verify(program, solution.input_weight, zeros, "2").verified


def test_failed_verification_falls_back_to_naive(monkeypatch):
    def broken(program, norm, solver=None, **options):
        zeros = tuple({"t": np.zeros(s.qc.size)} for s in program.stages)
        return SDPSolution(np.full(program.input_dim, 1e-3), zeros,
                           lipschitz_module.Status.OPTIMAL, 0.0)

    monkeypatch.setitem(lipschitz_module.METHODS, "lipsdp", broken)
    with pytest.warns(ConvergenceWarning, match="verification"):
        result = lipschitz_bound(relu_net((3, 4, 2), 0), method="lipsdp", attack=False)
    assert not result.verified and not result.check()
    assert result.bound == result.naive
    unverified = lipschitz_bound(relu_net((3, 4, 2), 0), method="lipsdp", attack=False,
                                  verify=False)
    assert not unverified.verified and unverified.bound == pytest.approx(math.sqrt(1e-3))


def test_naive_method_and_inputs_not_modified():
    net = relu_net((4, 6, 2), 9)
    net.train()
    before = [p.detach().clone() for p in net.parameters()]
    result = lipschitz_bound(net, method="naive")
    w = weights_of(net)
    assert result.bound == pytest.approx(np.linalg.norm(w[0], 2) * np.linalg.norm(w[1], 2))
    assert result.verified and math.isnan(result.solver_bound)
    assert net.training
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert "bound" in result.summary()


def test_bad_input():
    net = relu_net((3, 4, 2), 0)
    with pytest.raises(InputValueError, match="norm"):
        lipschitz_bound(net, norm=1)
    with pytest.raises(InputValueError, match="method"):
        lipschitz_bound(net, method="magic")
    with pytest.raises(InputValueError, match="solver"):
        lipschitz_bound(net, solver="ECOS")
    with pytest.raises(UnsupportedError, match="GELU"):
        lipschitz_bound(nn.Sequential(nn.Linear(2, 2), nn.GELU()))
    with pytest.raises(InputValueError, match="empty"):
        lipschitz_bound(nn.Sequential())
    with torch.no_grad():
        net[0].bias[0] = float("inf")
    with pytest.raises(InputValueError, match="Linear.bias"):
        lipschitz_bound(net)
    with pytest.raises(TypeError, match="verify"):
        lipschitz_bound(relu_net((3, 4, 2), 0), verify="yes")


def test_no_warnings_on_a_normal_solve():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lipschitz_bound(relu_net((3, 5, 2), 10), solver="CLARABEL")
