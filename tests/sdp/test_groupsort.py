"""Compiler rules for MaxMin / GroupSort / Householder / Residual, and the GroupSort QC."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certopt.core.errors import InputValueError
from certopt.sdp import GroupSort, HouseholderActivation, MaxMin, Residual, lipschitz_bound
from certopt.sdp.compiler import compile_network
from certopt.sdp.program import SlopeRestricted
from certopt.sdp.rules import GroupSortQC, groupsort_encoding, sorting_network


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=9))
def test_sorting_network_sorts_descending(values):
    items = list(values)
    for comparators in sorting_network(len(items)):
        for i, j in comparators:
            items[i], items[j] = max(items[i], items[j]), min(items[i], items[j])
    assert items == sorted(values, reverse=True)


def run_program(program, x):
    """Evaluate a compiled program: abs stages for reflections, sorting for GroupSortQC."""
    state = [x]
    for stage in program.stages:
        pre = sum(block @ state[k] for k, block in stage.pre.terms.items())
        if isinstance(stage.qc, GroupSortQC):
            groups = pre.reshape(-1, stage.qc.group_size)
            state.append(-np.sort(-groups, axis=1).reshape(-1))
        else:
            assert isinstance(stage.qc, SlopeRestricted)
            assert np.all(stage.qc.alpha == -1) and np.all(stage.qc.beta == 1)
            state.append(np.abs(pre))
    return sum(block @ state[k] for k, block in program.output.terms.items())


def mixed_net(seed, bias=True):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(5, 8), MaxMin(), nn.Linear(8, 8), GroupSort(4), nn.Linear(8, 6),
        HouseholderActivation(6, theta=torch.tensor([0.3, -2.0, 1.1])),
        Residual(nn.Sequential(nn.Linear(6, 6), GroupSort(3))), nn.Linear(6, 2),
    ).double()
    if not bias:
        for module in net.modules():
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
    return net


@pytest.mark.parametrize("encoding", ["network", "qc"])
def test_compiled_program_reproduces_the_network(encoding):
    net = mixed_net(0, bias=False)  # the compiler drops biases
    with groupsort_encoding(encoding):
        program = compile_network(net)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal(5)
        expected = net(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(run_program(program, x), expected, atol=1e-10)


def test_groupsort_qc_is_valid():
    """The weighted QC is >= 0 on every pair (c, sort(c)) for admissible multipliers."""
    rng = np.random.default_rng(1)
    qc = GroupSortQC(12, 4)
    for _ in range(50):
        mult = {"lam": rng.uniform(0, 2, 3), "a": rng.standard_normal(12),
                "b": rng.standard_normal(12)}
        pre_pre, pre_out, out_out = qc.form(mult, np.multiply)
        c1, c2 = rng.standard_normal(12), rng.standard_normal(12)
        dc = c1 - c2
        dphi = (-np.sort(-c1.reshape(3, 4), 1) + np.sort(-c2.reshape(3, 4), 1)).reshape(-1)
        value = dc @ pre_pre @ dc + 2 * dc @ pre_out @ dphi + dphi @ out_out @ dphi
        assert value >= -1e-10
    with pytest.raises(InputValueError, match="multiple"):
        GroupSortQC(10, 4)


@pytest.mark.parametrize("norm", [2, "inf"])
def test_both_encodings_are_sound_and_both_keeps_the_smaller(norm):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(4, 8), GroupSort(4), nn.Linear(8, 3)).double()
    results = {}
    for encoding in ("network", "qc", "both"):
        results[encoding] = lipschitz_bound(net, norm=norm, groupsort=encoding)
        assert results[encoding].verified
        assert results[encoding].lower <= results[encoding].bound * (1 + 1e-9)
    best = min(results["network"].bound, results["qc"].bound)
    assert results["both"].bound == pytest.approx(best, rel=1e-6)


def test_bad_encoding_and_shapes():
    with pytest.raises(InputValueError, match="groupsort"):
        with groupsort_encoding("bubble"):
            pass
    with pytest.raises(InputValueError, match="divisible by 4"):
        compile_network(nn.Sequential(nn.Linear(3, 6), GroupSort(4)))
    with pytest.raises(InputValueError, match="last dimension 4"):
        compile_network(nn.Sequential(nn.Linear(3, 6), HouseholderActivation(4)))
    with pytest.raises(InputValueError, match="same shape"):
        compile_network(nn.Sequential(nn.Linear(3, 6), Residual(nn.Linear(6, 4))))


def test_maxmin_is_exact_on_one_pair():
    """f(x) = MaxMin(x) on R^2 has Lipschitz constant exactly 1 (a permutation)."""
    res = lipschitz_bound(nn.Sequential(nn.Linear(2, 2), MaxMin()).double().requires_grad_(False)
                          .apply(_identity_init), norm=2)
    assert res.verified and abs(res.bound - 1.0) <= 1e-4 and res.lower >= 1 - 1e-6


def _identity_init(module):
    if isinstance(module, nn.Linear):
        with torch.no_grad():
            module.weight.copy_(torch.eye(2))
            module.bias.zero_()


def test_residual_relu_is_exact():
    """x ↦ x + relu(x) has slopes in [1, 2]: the constant 2 is certified exactly."""
    lin = nn.Linear(3, 3, bias=False).double()
    out = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
        out.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
    res = lipschitz_bound(nn.Sequential(Residual(nn.Sequential(lin, nn.ReLU())), out))
    assert res.verified and abs(res.bound - 2.0) <= 2e-4 and res.lower >= 2 - 1e-6


def two_groupsort_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), GroupSort(4), nn.Linear(8, 8), GroupSort(4),
                         nn.Linear(8, 3)).double()


@pytest.mark.parametrize("seed", [0, 2])
@pytest.mark.parametrize("norm", [2, "inf"])
def test_first_order_groupsort_qc_matches_interior_point(seed, norm):
    """GroupSort QC stages (λ >= 0 and free a, b) through the first-order solver."""
    net = two_groupsort_net(seed)
    interior = lipschitz_bound(net, norm=norm, method="lipsdp", groupsort="qc", attack=False)
    first = lipschitz_bound(net, norm=norm, method="first-order", groupsort="qc", attack=False)
    assert interior.verified and first.verified
    assert isinstance(first.program.stages[0].qc, GroupSortQC)
    assert abs(first.bound / interior.bound - 1) <= 1e-3
    assert first.bound < first.naive  # the SDP bound, not the naive fallback


def test_first_order_inf_matches_interior_point_on_a_wider_groupsort_net():
    """ℓ∞ 8-16-16-4 GroupSort(4) QC: 1.7e-3 above Clarabel when the log-sum-exp width was
    relative to λ_max(G^{-1/2}RG^{-1/2}) instead of to F = (Σg)·λ_max (Σg times too wide)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(8, 16), GroupSort(4), nn.Linear(16, 16), GroupSort(4),
                        nn.Linear(16, 4)).double()
    interior = lipschitz_bound(net, norm="inf", method="lipsdp", solver="CLARABEL",
                               groupsort="qc", attack=False)
    first = lipschitz_bound(net, norm="inf", method="first-order", groupsort="qc", attack=False)
    assert interior.verified and first.verified
    assert abs(first.bound / interior.bound - 1) <= 1e-3


def test_first_order_both_encodings_keeps_the_smaller_verified_bound():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(4, 8), GroupSort(4), nn.Linear(8, 3)).double()
    results = {e: lipschitz_bound(net, norm=2, method="first-order", groupsort=e, attack=False)
               for e in ("network", "qc", "both")}
    assert all(r.verified for r in results.values())
    best = min(results["network"].bound, results["qc"].bound)
    assert results["both"].bound == pytest.approx(best, rel=1e-12)
    interior = lipschitz_bound(net, norm=2, method="lipsdp", attack=False)
    assert abs(results["both"].bound / interior.bound - 1) <= 1e-3


def test_orthogonal_groupsort_certifies_one_through_first_order():
    from tests.sdp.test_orthogonal import orthogonal_net

    net = orthogonal_net(lambda: GroupSort(4), width=8, seed=1)
    res = lipschitz_bound(net, norm=2, method="first-order", groupsort="qc")
    assert res.verified and res.bound <= 1 + 1e-4 and res.lower >= 1 - 1e-6


def test_auto_uses_first_order_for_groupsort_qc_above_the_threshold(monkeypatch):
    from certopt.sdp import lipschitz

    net = two_groupsort_net(2)
    monkeypatch.setattr(lipschitz, "AUTO_STATE_DIM", 0)
    auto = lipschitz_bound(net, norm=2, method="auto", groupsort="qc", attack=False)
    first = lipschitz_bound(net, norm=2, method="first-order", groupsort="qc", attack=False)
    assert auto.verified and auto.bound == first.bound and auto.n_iter == first.n_iter
