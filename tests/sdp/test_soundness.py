"""Soundness by construction: what the compiler refuses, how it reads reparametrized
weights, and the final check of every certified bound against the attack."""

import contextlib
import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from certopt.core.errors import InputTypeError
from certopt.sdp import MaxMin, UnsoundBoundError, compile_network, lipschitz_bound
from certopt.sdp.compiler import _RULES, register_rule
from certopt.sdp.verify import check_against_attack


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).double()


def test_forward_hook_is_refused():
    net = _net()
    net[2].register_forward_hook(lambda m, i, o: 100 * o)
    with pytest.raises(InputTypeError, match=r"2 \(Linear\) has a forward hook"):
        lipschitz_bound(net)


def test_forward_pre_hook_is_refused():
    net = _net()
    net[0].register_forward_pre_hook(lambda m, i: (100 * i[0],))
    with pytest.raises(InputTypeError, match=r"0 \(Linear\) has a forward pre-hook"):
        compile_network(net)


@pytest.mark.parametrize("register", [nn.modules.module.register_module_forward_hook,
                                      nn.modules.module.register_module_forward_pre_hook])
def test_global_hooks_are_refused(register):
    net = _net()
    handle = register(lambda *args: None)
    try:
        with pytest.raises(InputTypeError, match="global module forward"):
            lipschitz_bound(net)
    finally:
        handle.remove()
    assert lipschitz_bound(net, attack=False).verified  # accepted again once removed


class _Louder(nn.Linear):
    def forward(self, x):
        return 100 * super().forward(x)


class _LouderCall(nn.ReLU):
    def __call__(self, x):
        return 100 * super().__call__(x)


@pytest.mark.parametrize("layer", [_Louder(8, 2), _LouderCall()])
def test_subclasses_overriding_forward_or_call_are_refused(layer):
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), layer, nn.Linear(2, 2)) \
        if isinstance(layer, _Louder) else nn.Sequential(nn.Linear(4, 8), layer, nn.Linear(8, 2))
    with pytest.raises(InputTypeError, match=type(layer).__name__):
        lipschitz_bound(net)


def test_instance_forward_is_refused():
    net = _net()
    net[1].forward = lambda x: 100 * torch.relu(x)
    with pytest.raises(InputTypeError, match=r"1 \(ReLU\) has its own 'forward'"):
        lipschitz_bound(net)


@pytest.mark.parametrize("net", [lambda x: x, "net", np.eye(3)])
def test_non_modules_are_refused(net):
    with pytest.raises(InputTypeError, match="net: expected a torch.nn.Module"):
        lipschitz_bound(net)


def _plain_copy(net):
    """The same network with plain weights (the effective ones, as in evaluation mode)."""
    plain = nn.Sequential(*[copy.deepcopy(m) if not isinstance(m, nn.Linear)
                            else nn.Linear(m.in_features, m.out_features).double()
                            for m in net])
    with torch.no_grad():
        net.eval()
        for source, target in zip(net, plain):
            if isinstance(source, nn.Linear):
                target.weight.copy_(source.weight)
                target.bias.copy_(source.bias)
    return plain


def test_parametrized_weights_certify_like_plain_weights():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 8), MaxMin(), nn.Linear(8, 8), nn.ReLU(),
                        nn.Linear(8, 3)).double()
    parametrizations.orthogonal(net[0])
    parametrizations.spectral_norm(net[2])
    parametrizations.weight_norm(net[4])
    spectral = net[2].parametrizations.weight[0]
    net.train()
    net(torch.randn(3, 6, dtype=torch.float64))  # a training step's power iteration
    u_before = spectral._u.clone()
    result = lipschitz_bound(net, random_state=0)
    assert torch.equal(u_before, spectral._u)  # no power iteration ran: the net is unchanged
    assert net.training and spectral.training
    assert parametrize.is_parametrized(net[0], "weight")
    plain = lipschitz_bound(_plain_copy(net), random_state=0)
    assert result.verified and plain.verified
    assert abs(result.bound - plain.bound) <= 1e-6 * plain.bound
    assert result.lower <= result.bound


@pytest.mark.parametrize("form", ["spectral_norm", "weight_norm"])
def test_hook_based_reparametrizations_are_refused_with_the_parametrize_form(form):
    net = _net()
    with pytest.warns(FutureWarning) if form == "weight_norm" else contextlib.nullcontext():
        getattr(nn.utils, form)(net[2])
    with pytest.raises(InputTypeError, match=f"parametrizations.{form} instead"):
        lipschitz_bound(net)
    getattr(nn.utils, f"remove_{form}")(net[2])
    assert lipschitz_bound(net).verified


def test_orthogonal_parametrized_maxmin_net_certifies_one():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(6, 6), MaxMin(), nn.Linear(6, 6), MaxMin(),
                        nn.Linear(6, 6)).double()
    for k in (0, 2, 4):
        parametrizations.orthogonal(net[k])
    result = lipschitz_bound(net)
    assert result.verified
    assert abs(result.bound - 1.0) <= 1e-6


class _Scale(nn.Module):
    def forward(self, x):
        return 100 * x


def test_a_bound_below_the_attack_raises():
    """A (wrong) user rule calling _Scale the identity: the final check catches it."""
    register_rule(_Scale)(lambda module, expr, builder: expr)
    try:
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), _Scale()).double()
        with pytest.raises(UnsoundBoundError, match="below the ratio"):
            lipschitz_bound(net)
        with pytest.raises(UnsoundBoundError, match="naive bound"):
            lipschitz_bound(net, method="naive")
        assert np.isnan(lipschitz_bound(net, attack=False).lower)  # nothing to check against
    finally:
        _RULES.pop(_Scale)


def test_check_against_attack_allows_round_off_only():
    check_against_attack(1.0, 1.0 + 1e-12, "test")
    check_against_attack(1.0, float("nan"), "test")
    with pytest.raises(UnsoundBoundError):
        check_against_attack(1.0, 1.0 + 1e-6, "test")
