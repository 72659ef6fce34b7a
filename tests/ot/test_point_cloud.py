"""PointCloudCost: costs computed block by block equal the dense squared-Euclidean matrix.

The reference is the cost matrix built in the test with numpy broadcasting,
``C_ij = sum_d (x_id - y_jd)^2``; every solver that accepts a point cloud
must give the same answer (float64, 1e-10) as with that matrix.
"""

import warnings

import numpy as np
import pytest
import torch

from certopt import ConvergenceWarning, Status
from certopt import ot as cot
from certopt.core.errors import InputValueError
from certopt.ot import streaming
from certopt.ot.geometry import PointCloudCost
from certopt.ot.problem import TransportProblem
from certopt.ot.sparse import ColumnDuals


def _clouds(n, m, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((m, d)) + 0.7
    a, b = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, m)
    return x, y, a / a.sum(), b / b.sum()


def _squared_distances(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0])
def test_blocks_and_entries_equal_the_dense_matrix(p):
    x, y, _, _ = _clouds(11, 7, d=4, seed=1)
    dense = _squared_distances(x, y) ** (p / 2) * 0.25
    cost = PointCloudCost(x, y, p=p, scale=0.25)
    assert cost.shape == (11, 7)
    np.testing.assert_allclose(cost.block(slice(2, 9), slice(1, 6)).numpy(), dense[2:9, 1:6],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cost.block_t(slice(0, 7), slice(3, 11)).numpy(),
                               dense[3:11, :].T, rtol=1e-12, atol=1e-12)
    rows, cols = torch.tensor([[0, 5], [10, 2]]), torch.tensor([[6], [3]])
    np.testing.assert_allclose(cost.entries(rows, cols).numpy(), dense[rows, cols],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cost.dense().numpy(), dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("offset", "dtype", "rtol"), [(1e3, np.float32, 1e-5),
                                                     (1e6, np.float64, 1e-10)])
def test_blocks_stay_accurate_for_clouds_far_from_the_origin(offset, dtype, rtol):
    # Expanding ||x||^2 + ||y||^2 - 2<x, y> about the origin lost 13% (float32,
    # offset 1e3) and 1.6e-3 absolute (float64, offset 1e6) on costs of about 6.
    x, y, _, _ = _clouds(9, 8, seed=7)
    dense = _squared_distances(x, y)
    cost = PointCloudCost((x + offset).astype(dtype), (y + offset).astype(dtype))
    scale = dense.max()
    np.testing.assert_allclose(cost.block(slice(0, 9), slice(0, 8)).numpy(), dense,
                               rtol=0, atol=rtol * scale * 10)
    np.testing.assert_allclose(cost.block_t(slice(0, 8), slice(0, 9)).numpy(), dense.T,
                               rtol=0, atol=rtol * scale * 10)


@pytest.mark.parametrize("entries", [5, 10**6])
def test_streamed_passes_on_point_clouds_equal_the_dense_computation(entries):
    x, y, a, b = _clouds(17, 12, seed=8)
    C = torch.tensor(_squared_distances(x, y))
    cloud = TransportProblem.from_inputs(a, b, PointCloudCost(x, y))
    dense = TransportProblem.from_inputs(a, b, C)
    rng = np.random.default_rng(9)
    f, g = torch.tensor(rng.normal(size=17)), torch.tensor(rng.normal(size=12))
    close = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(streaming.logsumexp_pass(cloud.geometry, g, 0.3, 1, entries),
                               torch.logsumexp((g - C) / 0.3, dim=1), **close)
    torch.testing.assert_close(streaming.logsumexp_pass(cloud.geometry, f, 0.3, 0, entries),
                               torch.logsumexp((f[:, None] - C) / 0.3, dim=0), **close)
    for k in (2, 17):
        ours = ColumnDuals(cloud, k, 0.3, entries=entries)
        theirs = ColumnDuals(dense, k, 0.3, entries=10**6)
        for one, other in ((ours.semi_dual(f), theirs.semi_dual(f)),
                           (ours.dual(f, g), theirs.dual(f, g))):
            torch.testing.assert_close(one.value, other.value, **close)
            torch.testing.assert_close(one.grad, other.grad, **close)
            torch.testing.assert_close(one.plan.dense(), other.plan.dense(), **close)


# Two runs that stop at a marginal tolerance agree to about that tolerance.
# sparse (uniform weights, n = m, an instance whose dual optimum is not at a
# kink) and Sinkhorn converge to tol = 1e-12, quadratic OT (Newton finish) to
# round-off: plans must agree to 1e-10.
SOLVES = [
    (cot.sparse, (24, 24, True, 4), {"k": 3, "reg": 0.5, "tol": 1e-12}),
    (cot.sparse, (24, 24, True, 4), {"k": 3, "reg": 0.5, "tol": 1e-12, "method": "dual"}),
    (cot.quadratic, (24, 19, False, 3), {"reg": 0.5, "tol": 1e-10}),
    (cot.quadratic, (24, 19, False, 3), {"reg": 0.5, "tol": 1e-10, "method": "semi-dual"}),
    (cot.sinkhorn, (24, 19, False, 2), {"reg": 0.5, "tol": 1e-12}),
]


# one block, and blocks of 10 entries (reductions split across blocks: online
# log-sum-exp, running top-k); quadratic OT's thousands of evaluations only in
# one block (its split evaluations are checked in test_streaming.py)
BLOCKINGS = [(10**6, solve) for solve in SOLVES] + [
    (10, solve) for solve in SOLVES if solve[0] is not cot.quadratic]


@pytest.mark.parametrize(("entries", "solve"), BLOCKINGS)
def test_solvers_on_point_clouds_equal_the_dense_cost(entries, solve, monkeypatch):
    solver, data, kwargs = solve
    monkeypatch.setattr(streaming, "CPU_BLOCK_ENTRIES", entries)
    n, m, uniform, seed = data
    x, y, a, b = _clouds(n, m, seed=seed)
    if uniform:
        a = b = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = solver(a, b, _squared_distances(x, y), **kwargs)
        cloud = solver(a, b, PointCloudCost(x, y), **kwargs)
    assert isinstance(cloud.plan, np.ndarray) and cloud.plan.shape == (n, m)
    assert cloud.dual_value == pytest.approx(dense.dual_value, rel=1e-10)
    assert dense.status is Status.OPTIMAL and cloud.status is Status.OPTIMAL
    np.testing.assert_allclose(cloud.plan, dense.plan, rtol=0, atol=1e-10)
    for name in ("objective", "cost", "marginal_error"):
        assert getattr(cloud, name) == pytest.approx(getattr(dense, name), rel=1e-10, abs=1e-12)


def test_repair_on_point_clouds_equals_the_dense_cost():
    # the repair stops at a marginal error of 1e-8 (relative): plans agree to that
    x, y, a, b = _clouds(20, 20, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = cot.sparse(a, b, _squared_distances(x, y), 3, reg=0.5, tol=1e-3, repair=True)
        cloud = cot.sparse(a, b, PointCloudCost(x, y), 3, reg=0.5, tol=1e-3, repair=True)
    assert cloud.residuals["repair_converged"] == dense.residuals["repair_converged"] == 1.0
    np.testing.assert_allclose(cloud.plan, dense.plan, rtol=0, atol=1e-8)
    assert cloud.objective == pytest.approx(dense.objective, rel=1e-8)


class _RecordingCost(PointCloudCost):
    """Records the largest block any solver asks for (class-wide: ``to`` makes copies)."""

    largest = 0

    def block(self, rows, cols):
        out = super().block(rows, cols)
        _RecordingCost.largest = max(_RecordingCost.largest, out.numel())
        return out

    def block_t(self, cols, rows):
        out = super().block_t(cols, rows)
        _RecordingCost.largest = max(_RecordingCost.largest, out.numel())
        return out


@pytest.mark.parametrize("solver", [cot.sparse, cot.quadratic, cot.sinkhorn])
def test_the_cost_is_never_larger_than_one_block(solver, monkeypatch):
    monkeypatch.setattr(streaming, "CPU_BLOCK_ENTRIES", 50)
    x, y, a, b = _clouds(30, 25, seed=4)
    _RecordingCost.largest = 0
    kwargs = {"k": 2} if solver is cot.sparse else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        solver(a, b, _RecordingCost(x, y), reg=0.5, max_iter=20, **kwargs)
    assert 0 < _RecordingCost.largest <= 50


def test_torch_float32_points_give_torch_float32_results_and_are_not_modified():
    x, y, a, b = _clouds(15, 12, seed=5)
    x_t, y_t = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    copies = (x_t.clone(), y_t.clone())
    res = cot.sinkhorn(None, None, PointCloudCost(x_t, y_t), reg=1.0)
    assert isinstance(res.plan, torch.Tensor) and res.plan.dtype == torch.float32
    assert torch.equal(x_t, copies[0]) and torch.equal(y_t, copies[1])


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "match"),
    [
        (np.ones((4, 3)), np.ones((5, 2)), {}, "dimensions"),
        (np.array([[0.0, np.nan]]), np.ones((2, 2)), {}, "x"),
        (np.ones((3, 2)), np.array([[np.inf, 0.0]]), {}, "y"),
        (np.ones(4), np.ones((5, 1)), {}, "x"),
        (np.ones((0, 2)), np.ones((5, 2)), {}, "non-empty"),
        (np.ones((3, 2)), np.ones((5, 2)), {"p": 0.0}, "p"),
        (np.ones((3, 2)), np.ones((5, 2)), {"scale": -1.0}, "scale"),
    ],
)
def test_bad_point_clouds_name_the_argument(x, y, kwargs, match):
    with pytest.raises(InputValueError, match=match):
        PointCloudCost(x, y, **kwargs)


def test_marginals_are_checked_against_the_clouds_and_dense_solvers_refuse_them():
    x, y, _, _ = _clouds(6, 5, seed=6)
    cost = PointCloudCost(x, y)
    with pytest.raises(ValueError, match="b"):
        cot.sparse(None, np.full(6, 1 / 6), cost, 2)
    with pytest.raises(TypeError, match=r"exact\(\) needs a dense"):
        cot.exact(None, None, cost)
    with pytest.raises(TypeError, match=r"class_based\(\) needs a dense"):
        cot.class_based(None, None, cost, np.arange(6) % 2, reg=0.1)
    certified = cot.exact(None, None, cost.dense())          # the explicit way
    assert certified.status is Status.OPTIMAL


@pytest.mark.cuda
def test_point_clouds_on_cuda_match_cpu():
    x, y, a, b = _clouds(40, 30, seed=7)
    cpu = cot.sparse(a, b, PointCloudCost(x, y), 3, reg=0.5)
    on_gpu = PointCloudCost(torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda"))
    gpu = cot.sparse(torch.tensor(a, device="cuda"), torch.tensor(b, device="cuda"), on_gpu, 3,
                     reg=0.5)
    assert gpu.plan.device.type == "cuda"
    assert gpu.dual_value == pytest.approx(cpu.dual_value, rel=1e-8)
