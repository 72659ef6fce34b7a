"""The compiler: programs reproduce the network's linear maps; bad input raises clearly."""

import numpy as np
import pytest
import torch
from torch import nn

from certopt.core.errors import InputValueError, UnsupportedError
from certopt.sdp.compiler import compile_network, register_rule
from certopt.sdp.program import LinearExpr, SlopeRestricted


def _evaluate(program, x):
    """Run the program forward with the exact activations of the test nets."""
    acts = {"ReLU": torch.relu, "Tanh": torch.tanh,
            "LeakyReLU": lambda z: nn.functional.leaky_relu(z, 0.1)}
    state = [x.flatten()]
    for stage in program.stages:
        pre = sum(torch.from_numpy(b) @ state[k] for k, b in stage.pre.terms.items())
        state.append(acts[stage.label](pre))
    return sum(torch.from_numpy(b) @ state[k] for k, b in program.output.terms.items())


def test_program_matches_bias_free_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5, bias=False), nn.ReLU(),
                        nn.Sequential(nn.Linear(5, 4, bias=False), nn.LeakyReLU(0.1)),
                        nn.Dropout(0.5), nn.Identity(), nn.Linear(4, 3, bias=False), nn.Tanh(),
                        nn.Linear(3, 2, bias=False)).double().eval()
    program = compile_network(net)
    assert program.segment_sizes == (6, 5, 4, 3)
    assert program.state_dim == 18
    x = torch.randn(1, 6, dtype=torch.float64)
    np.testing.assert_allclose(_evaluate(program, x), net(x)[0].detach(), rtol=0, atol=1e-12)


def test_slope_bounds_of_activations():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 2), nn.LeakyReLU(2.0),
                        nn.Linear(2, 2), nn.Tanh())
    qcs = [s.qc for s in compile_network(net).stages]
    assert [(q.alpha[0], q.beta[0]) for q in qcs] == [(0.0, 0.25), (1.0, 2.0), (0.0, 1.0)]


def test_conv2d_dense_matrix():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 2))
    program = compile_network(net, input_shape=(2, 5, 5))
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    expected = (conv(x) - conv.bias[:, None, None]).flatten().detach()
    np.testing.assert_allclose(program.stages[0].pre.terms[0] @ x.flatten().numpy(), expected,
                               atol=1e-12)
    assert program.stages[0].pre.shape == (3, 3, 3)


def test_registered_rule_is_used_and_overridden_forward_is_not_inherited():
    class Double(nn.Module):
        def forward(self, x):
            return 2 * x

    register_rule(Double)(lambda module, expr, builder: expr * 2.0)
    program = compile_network(nn.Sequential(nn.Linear(2, 2, bias=False), Double()))
    assert len(program.stages) == 0

    class Custom(nn.ReLU):
        def forward(self, x):
            return x.abs()

    with pytest.raises(UnsupportedError, match="Custom"):
        compile_network(nn.Sequential(nn.Linear(2, 2), Custom()))


def test_bad_networks():
    with pytest.raises(UnsupportedError, match=r"ELU.*supported layers: .*Linear"):
        compile_network(nn.Sequential(nn.Linear(2, 2), nn.ELU()))
    with pytest.raises(TypeError):
        compile_network(nn.Sequential(nn.Linear(2, 2), nn.Softmax(dim=1)))
    with pytest.raises(InputValueError, match="empty"):
        compile_network(nn.Sequential())
    bad = nn.Linear(3, 2)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(InputValueError, match="NaN"):
        compile_network(nn.Sequential(bad))
    with pytest.raises(InputValueError, match="input_shape"):
        compile_network(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten()))
    with pytest.raises(TypeError, match="nn.Module"):
        compile_network(lambda x: x)


def test_linear_expr_algebra():
    a = LinearExpr.identity(0, (3,))
    b = a.left_multiply(np.arange(6.0).reshape(2, 3))
    c = (b + b * 0.5).rows([1])
    np.testing.assert_allclose(c.terms[0], 1.5 * np.array([[3.0, 4.0, 5.0]]))
    with pytest.raises(InputValueError):
        a + b
    with pytest.raises(InputValueError):
        SlopeRestricted(1.0, 0.0, 2)
