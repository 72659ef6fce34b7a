"""The naive bound against the closed form ∏‖W_k‖₂ (section 9) and against attacks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from certopt.core.errors import InputValueError
from certopt.sdp import (
    GroupSort,
    HouseholderActivation,
    LinearExpr,
    MaxMin,
    ProgramBuilder,
    Residual,
    attack_lower_bound,
    compile_network,
    lipschitz_bound,
    naive_bound,
)
from certopt.sdp.rules import groupsort_encoding

REL = 1e-9  # the naive bound is a closed form: agreement up to rounding
ATTACK = dict(n_samples=64, n_steps=20)

ACTIVATIONS = {
    "relu": (nn.ReLU, "network"),
    "maxmin": (MaxMin, "network"),
    "groupsort4-network": (lambda: GroupSort(4), "network"),
    "groupsort4-qc": (lambda: GroupSort(4), "qc"),
    "householder": (lambda: HouseholderActivation(
        8, theta=torch.linspace(-3.0, 3.0, 4, dtype=torch.float64)), "network"),
}


def random_linear(n_in, n_out, gen):
    """A float64 ``nn.Linear`` with Gaussian (non-orthogonal) weights and biases."""
    layer = nn.Linear(n_in, n_out).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, dtype=torch.float64, generator=gen))
        layer.bias.copy_(torch.randn(n_out, dtype=torch.float64, generator=gen))
    return layer


def feedforward(activation, widths=(6, 8, 8, 3), seed=0):
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(random_linear(n_in, n_out, gen))
        if k < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def spectral(layer):
    return float(np.linalg.norm(layer.weight.detach().numpy(), 2))


def weight_product(net):
    """∏‖W_k‖₂ over the net's linear layers (every activation here is 1-Lipschitz)."""
    return math.prod(spectral(m) for m in net.modules() if isinstance(m, nn.Linear))


def naive_of(net, norm="2", encoding="network", input_shape=None):
    with groupsort_encoding(encoding):
        return naive_bound(compile_network(net, input_shape), norm)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_feedforward_naive_is_weight_product(name):
    activation, encoding = ACTIVATIONS[name]
    for seed in range(3):
        net = feedforward(activation, seed=seed)
        expected = weight_product(net)
        assert naive_of(net, encoding=encoding) == pytest.approx(expected, rel=REL)
        assert attack_lower_bound(net, (6,), **ATTACK) <= expected * (1 + 1e-9)


@pytest.mark.parametrize("name", ["maxmin", "groupsort4-network", "householder"])
def test_lipschitz_bound_reports_weight_product(name):
    net = feedforward(ACTIVATIONS[name][0], seed=5)
    result = lipschitz_bound(net, method="naive")
    assert result.naive == pytest.approx(weight_product(net), rel=REL)
    assert result.lower <= result.naive


def test_leaky_relu_slope_bound_multiplies():
    net = feedforward(lambda: nn.LeakyReLU(2.5), seed=1)
    assert naive_of(net) == pytest.approx(2.5 ** 2 * weight_product(net), rel=REL)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_infinity_norm_is_sound(name):
    activation, encoding = ACTIVATIONS[name]
    net = feedforward(activation, seed=2)
    bound = naive_of(net, "inf", encoding)
    assert attack_lower_bound(net, (6,), "inf", **ATTACK) <= bound
    assert bound <= math.sqrt(6) * weight_product(net) * (1 + REL)


def residual_net(activation, seed=0):
    gen = torch.Generator().manual_seed(seed)
    entry, inner_a, inner_b, exit_ = (random_linear(4, 8, gen), random_linear(8, 8, gen),
                                      random_linear(8, 8, gen), random_linear(8, 2, gen))
    net = nn.Sequential(entry, activation(),
                        Residual(nn.Sequential(inner_a, activation(), inner_b)),
                        activation(), exit_)
    formula = spectral(entry) * (1 + spectral(inner_a) * spectral(inner_b)) * spectral(exit_)
    return net, formula


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_residual_between_attack_and_product_formula(name):
    activation, encoding = ACTIVATIONS[name]
    net, formula = residual_net(activation, seed=3)
    for norm in ("2", "inf"):
        bound = naive_of(net, norm, encoding)
        assert attack_lower_bound(net, (4,), norm, **ATTACK) <= bound
        scale = math.sqrt(4) if norm == "inf" else 1.0
        assert bound <= scale * formula * (1 + REL)


def test_conv_maxmin_is_sound_and_at_most_the_product():
    gen = torch.Generator().manual_seed(4)
    conv = nn.Conv2d(1, 2, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(2, 1, 3, 3, dtype=torch.float64, generator=gen))
    head = random_linear(2 * 4 * 4, 3, gen)
    net = nn.Sequential(conv, MaxMin(), nn.Flatten(), head)
    conv_matrix = compile_network(nn.Sequential(conv), (1, 4, 4)).output.terms[0]
    bound = naive_of(net, input_shape=(1, 4, 4))
    assert bound == pytest.approx(np.linalg.norm(conv_matrix, 2) * spectral(head), rel=REL)
    assert attack_lower_bound(net, (1, 4, 4), **ATTACK) <= bound


def test_program_holds_real_segments_only():
    program = compile_network(feedforward(MaxMin, seed=0))
    used = {k for st in program.stages for k in st.pre.terms} | set(program.output.terms)
    assert min(used) >= 0 and max(used) < len(program.segment_sizes)
    # every reflection is an abs stage plus its named 1-Lipschitz output
    assert sorted(step.segment for step in program.lipschitz_steps) == [-2, -1, 1, 2]


def test_add_lipschitz_map_rejects_unknown_segments():
    builder = ProgramBuilder((2,))
    unknown = LinearExpr.identity(-1, (2,))
    with pytest.raises(InputValueError, match="source"):
        builder.add_lipschitz_map(unknown, builder.input)
    with pytest.raises(InputValueError, match="value"):
        builder.add_lipschitz_map(builder.input, unknown)
    with pytest.raises(InputValueError, match="gain"):
        builder.add_lipschitz_map(builder.input, builder.input, gain=-1.0)
