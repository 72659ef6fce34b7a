"""First-order LipSDP solver against an independent dense cvxpy LipSDP-Neuron."""

import math
import operator
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch import nn

from certopt.core.errors import InputValueError, UnsupportedError
from certopt.core.result import Status
from certopt.sdp import MaxMin, lipschitz_bound
from certopt.sdp.compiler import compile_network
from certopt.sdp.first_order import initial_multipliers, solve_first_order
from certopt.sdp.verify import lmi_matrix
from tests.sdp.test_orthogonal import DATA, load_mat_net, orthogonal_net


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: thread hand-offs dominate on a loaded 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def relu_net(dims, seed):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).double()


def dense_lipsdp(weights, norm):
    """LipSDP-Neuron for a ReLU net, written from section 1 with stacked dense A, B."""
    widths = [w.shape[1] for w in weights]
    n0, hidden, total = widths[0], widths[1:], sum(widths)
    a_mat, b_mat = np.zeros((sum(hidden), total)), np.zeros((sum(hidden), total))
    row = col = 0
    for w, h in zip(weights[:-1], hidden):
        a_mat[row:row + h, col:col + w.shape[1]] = w
        b_mat[row:row + h, col + w.shape[1]:col + w.shape[1] + h] = np.eye(h)
        row, col = row + h, col + w.shape[1]
    t = cp.Variable(sum(hidden), nonneg=True)
    q = cp.bmat([[np.zeros((sum(hidden),) * 2), cp.diag(t)], [cp.diag(t), -2 * cp.diag(t)]])
    ab = np.vstack([a_mat, b_mat])
    out = np.zeros((weights[-1].shape[0], total))
    out[:, total - hidden[-1]:] = weights[-1]
    gamma = cp.Variable(n0, nonneg=True) if norm == "inf" else cp.Variable()
    head = cp.diag(gamma) if norm == "inf" else gamma * np.eye(n0)
    input_block = cp.bmat([[head, np.zeros((n0, total - n0))],
                           [np.zeros((total - n0, n0)), np.zeros((total - n0,) * 2)]])
    m = input_block - out.T @ out - ab.T @ q @ ab
    objective = cp.sum(gamma) if norm == "inf" else gamma
    problem = cp.Problem(cp.Minimize(objective), [0.5 * (m + m.T) >> 0])
    problem.solve(solver="CLARABEL")
    return math.sqrt(problem.value)


@pytest.mark.parametrize("dims", [(6, 16, 3), (5, 12, 12, 2)])
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_matches_dense_reference(dims, norm):
    net = relu_net(dims, seed=sum(dims))
    weights = [m.weight.detach().numpy() for m in net if isinstance(m, nn.Linear)]
    reference = dense_lipsdp(weights, norm)
    program = compile_network(net)
    solution = solve_first_order(program, 2 if norm == "2" else math.inf)
    assert solution.status is Status.OPTIMAL
    value = math.sqrt(solution.value)
    # every iterate is feasible up to round-off: never (much) below the optimum
    assert reference * (1 - 1e-7) <= value <= reference * (1 + 1e-3)
    # the returned multipliers and weights form a PSD LMI matrix (float64 check)
    matrix = lmi_matrix(program, solution.gamma * (1 + 1e-8), solution.multipliers)
    assert np.linalg.eigvalsh(matrix)[0] >= -1e-9 * np.abs(matrix).max()


@pytest.mark.parametrize("norm", [2, "inf"])
def test_lipschitz_bound_first_order_is_verified_and_agrees(norm):
    net = relu_net((8, 20, 20, 3), seed=3)
    interior = lipschitz_bound(net, norm=norm, method="lipsdp", attack=False)
    first = lipschitz_bound(net, norm=norm, method="first-order", random_state=0)
    assert first.verified and interior.verified
    assert abs(first.bound / interior.bound - 1) <= 1e-3
    assert first.lower <= first.bound <= first.naive


def test_initial_point_is_strictly_feasible():
    net = nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.1), nn.Linear(6, 6), nn.Tanh(),
                        nn.Linear(6, 2)).double()
    program = compile_network(net)
    multipliers, rho = initial_multipliers(program)
    matrix = lmi_matrix(program, np.full(4, rho), [{"t": t} for t in multipliers])
    assert np.linalg.eigvalsh(matrix)[0] > 0


def test_max_iter_warns_and_reports_status():
    program = compile_network(relu_net((4, 8, 2), seed=0))
    with pytest.warns(Warning, match="max_iter"):
        solution = solve_first_order(program, max_iter=3)
    assert solution.status is Status.MAX_ITER and solution.n_iter == 3
    assert math.isfinite(solution.value)


def test_bad_input():
    program = compile_network(relu_net((4, 8, 2), seed=0))
    with pytest.raises(InputValueError, match="norm"):
        solve_first_order(program, norm=1)
    with pytest.raises(InputValueError, match="max_iter"):
        solve_first_order(program, max_iter=0)
    with pytest.raises(InputValueError, match="lr"):
        solve_first_order(program, lr=-1.0)


def test_unsupported_stage_is_reported():
    from certopt.sdp.program import ProgramBuilder, QuadraticConstraint

    class Custom(QuadraticConstraint):
        pre_dim = size = 2
        gain = 1.0

        def cvx_multipliers(self, name):
            return {}, []

        def form(self, multipliers, multiply):
            raise AssertionError

        def project(self, multipliers):
            return {}

    builder = ProgramBuilder((2,))
    out = builder.add_stage(builder.input, Custom())
    with pytest.raises(UnsupportedError, match="Custom"):
        solve_first_order(builder.finish(out))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    program = compile_network(relu_net((6, 16, 3), seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = solve_first_order(program)
        gpu = solve_first_order(program, device="cuda")
    assert abs(gpu.value / cpu.value - 1) <= 1e-3


def test_orthogonal_maxmin_first_order_certifies_one():
    net = orthogonal_net(MaxMin, width=8, seed=2)
    # the optimum sits on the boundary of the Schur domain: ask for a tighter stop
    res = lipschitz_bound(net, norm=2, method="first-order", attack=False, tol=1e-7, patience=30)
    assert res.verified and res.bound <= 1 + 1e-4


@pytest.mark.skipif(not (DATA / "weights_2_16.mat").exists(), reason="maxmin_nets data absent")
def test_real_maxmin_net():
    net, weights = load_mat_net(DATA / "weights_2_16.mat")
    assert weights[0].shape == (16, 784)
    res = lipschitz_bound(net, norm=2, method="first-order", attack=False)
    naive = math.prod(float(np.linalg.norm(w, 2)) for w in weights)
    points = torch.randn(8, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jacobians = torch.func.vmap(torch.func.jacrev(net))(points)
    lower = float(torch.linalg.matrix_norm(jacobians.detach(), ord=2).max())
    assert res.verified
    assert lower <= res.bound <= naive * (1 + 1e-9)


@pytest.mark.parametrize("encoding", ["qc", "network"])
@pytest.mark.parametrize("norm", [2, math.inf])
def test_envelope_gradient_matches_finite_differences(norm, encoding):
    """The analytic gradient (eigen-columns + barrier columns) of the smoothed objective;
    GroupSort "qc" stages are differentiated by autograd, the sorting network's and ReLU's
    slope stages ("network") by their closed forms."""
    from certopt.sdp import GroupSort
    from certopt.sdp.first_order import _Evaluation, _Parametrization
    from certopt.sdp.rules import GroupSortQC, groupsort_encoding

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), GroupSort(4), nn.Linear(8, 8), nn.ReLU(),
                        nn.Linear(8, 3)).double()
    with groupsort_encoding(encoding):
        program = compile_network(net)
    assert any(isinstance(st.qc, GroupSortQC) for st in program.stages) == (encoding == "qc")
    weights, _ = initial_multipliers(program)
    starts = [st.qc.sector_multipliers(t) for st, t in zip(program.stages, weights)]
    cpu = torch.device("cpu")
    shape = np.array([1e-3, 0.5, 1.0, 2.0, 50.0])  # spread: per-entry shape scales (ℓ∞)
    param = _Parametrization(program, starts, 5 if norm == math.inf else 0, cpu, torch.float64,
                             shape if norm == math.inf else None)
    evaluate = _Evaluation(program, param, norm, cpu, torch.float64)
    noise = torch.randn(param.initial.shape, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1))
    z = param.initial + 0.1 * noise
    width = 0.05 * evaluate(z, None)[2]
    _, grad, _ = evaluate(z, width)
    step = 1e-6
    numeric = torch.stack([
        (evaluate(z + step * e, width)[0] - evaluate(z - step * e, width)[0]) / (2 * step)
        for e in torch.eye(len(z), dtype=torch.float64)])
    assert float((grad - numeric).abs().max()) <= 1e-6 * float(numeric.abs().max())
    if norm == math.inf:  # smoothing on F's scale: invariant to rescaling the shape g
        rescaled = z.clone()
        rescaled[-5:] += 0.7 / param.shape_scale  # g -> e^0.7·g
        assert float(evaluate(rescaled, width)[0]) == pytest.approx(
            float(evaluate(z, width)[0]), rel=1e-12)


def test_balance_changes_coordinates_not_the_point():
    """ℓ∞ scales ``c_j = 3·√(ḡ/g_j)`` of the shape (clipped to [0.3, 30]) and ``√(t̄/t_j)`` of
    the multipliers; rebalancing keeps ``(μ, g)``; ℓ2 keeps ``c = 1``."""
    from certopt.sdp.first_order import _Parametrization

    torch.manual_seed(0)
    program = compile_network(nn.Sequential(nn.Linear(5, 4), MaxMin(), nn.Linear(4, 1)).double())
    weights, _ = initial_multipliers(program)
    starts = [st.qc.sector_multipliers(t) for st, t in zip(program.stages, weights)]
    shape = np.array([1e-6, 0.5, 1.0, 2.0, 50.0])
    param = _Parametrization(program, starts, 5, torch.device("cpu"), torch.float64, shape)
    mean = np.mean(shape / shape.max())
    expected = 3 * np.clip(np.sqrt(mean / (shape / shape.max())), 0.1, 10)
    np.testing.assert_allclose(param.shape_scale.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(param.log_shape(param.initial).numpy(),
                               np.log(shape / shape.mean()), rtol=1e-12, atol=1e-12)
    z = param.initial + torch.linspace(-1, 1, len(param.initial), dtype=torch.float64)
    log_g, multipliers = param.log_shape(z), param.multipliers(z)
    balanced = param.balance(z)
    torch.testing.assert_close(param.log_shape(balanced), log_g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(param.multipliers(balanced), multipliers, rtol=1e-12, atol=0)
    assert not torch.allclose(param.shape_scale, torch.as_tensor(expected))
    t = multipliers[0]["t"]
    expected_t = np.clip(np.sqrt(float(t.mean()) / t.numpy()), 0.1, 10)
    np.testing.assert_allclose(param.scales[0].numpy(), expected_t, rtol=1e-12)
    plain = _Parametrization(program, starts, 0, torch.device("cpu"), torch.float64)
    assert torch.equal(plain.balance(z[:-5]), z[:-5]) and all(
        bool((c == 1).all()) for c in plain.scales)


@pytest.mark.parametrize("prefix", [0, 5])
def test_block_cholesky_solves(prefix):
    """``S = LLᵀ`` with a diagonal leading block eliminated first, against a dense solve."""
    from certopt.sdp.first_order import _BlockCholesky

    gen = torch.Generator().manual_seed(0)
    d = torch.rand(5, dtype=torch.float64, generator=gen) + 1
    coupling = torch.randn(5, 7, dtype=torch.float64, generator=gen)
    a = torch.randn(7, 7, dtype=torch.float64, generator=gen)
    tail = a @ a.T + coupling.T @ (coupling / d[:, None]) + torch.eye(7, dtype=torch.float64)
    s = torch.cat([torch.cat([torch.diag(d), coupling], 1), torch.cat([coupling.T, tail], 1)])
    rhs = torch.randn(12, 3, dtype=torch.float64, generator=gen)
    factor = _BlockCholesky.factor(s, prefix)
    half = factor.solve_lower(rhs)
    torch.testing.assert_close(factor.solve_upper(half), torch.linalg.solve(s, rhs),
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(half.T @ half, rhs.T @ torch.linalg.solve(s, rhs),
                               rtol=1e-12, atol=1e-12)
    s[0, 1] = s[1, 0] = 0.1  # no longer diagonal: falls back to plain Cholesky
    torch.testing.assert_close(_BlockCholesky.factor(s, prefix).solve_upper(
        _BlockCholesky.factor(s, prefix).solve_lower(rhs)), torch.linalg.solve(s, rhs),
        rtol=1e-12, atol=1e-12)
    assert _BlockCholesky.factor(-s, prefix) is None


@pytest.mark.parametrize("n_in, width, n_out, seed", [(40, 8, 1, 0), (40, 10, 3, 1)])
def test_inf_on_a_two_layer_maxmin_net_matches_interior_point(n_in, width, n_out, seed):
    """ℓ∞ with a wide input: the eigenproblem runs in the first layer's row space
    (order ``width``, not ``n_in``), the input shape g stays ``n_in``-dimensional."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(n_in, width), MaxMin(), nn.Linear(width, n_out)).double()
    reference = lipschitz_bound(net, norm="inf", method="lipsdp", solver="CLARABEL",
                                attack=False)
    result = lipschitz_bound(net, norm="inf", method="first-order")
    assert result.verified and reference.verified and result.check()
    assert reference.bound * (1 - 1e-6) <= result.bound <= reference.bound * (1 + 1e-3)
    assert len(result.input_weight) == n_in and result.lower <= result.bound


def test_slope_trace_gradient_matches_autograd():
    """``SlopeRestricted.trace_gradient`` (closed form) against autograd through its form."""
    from certopt.sdp.first_order import _form_trace
    from certopt.sdp.program import SlopeRestricted

    gen = torch.Generator().manual_seed(0)
    alpha = np.array([-1.0, 0.0, 0.1, -0.5, 0.25])
    qc = SlopeRestricted(alpha, alpha + np.array([2.0, 1.0, 0.9, 0.25, 0.0]))
    pre, out = (torch.randn(5, 3, dtype=torch.float64, generator=gen) for _ in range(2))
    t = torch.rand(5, dtype=torch.float64, generator=gen).requires_grad_(True)
    (expected,) = torch.autograd.grad(_form_trace(qc.form({"t": t}, operator.mul), pre, out), t)
    closed = qc.trace_gradient({"t": t.detach()}, pre, out)["t"]
    torch.testing.assert_close(closed, expected, rtol=1e-12, atol=1e-12)
