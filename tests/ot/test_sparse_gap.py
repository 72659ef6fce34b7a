"""Smaller certified gaps for sparse OT with small k: the quadratic-OT bound and the
priced local search on the repaired support.

References: cvxpy's quadratic-OT QP (a lower bound on every k-sparse plan's objective)
and the repair without the local search.  The solves end near round-off; assertions
keep margins of 1e-9 (absolute) or more.
"""

import numpy as np
import pytest
import torch

from certopt import Status
from certopt import ot as cot
from certopt.ot import repair
from certopt.ot.forest_pivots import TransportForest
from certopt.ot.reference import quadratic_reference
from certopt.ot.support_pricing import basic_plan, priced_pairs
from tests.ot.conftest import point_cloud_problem
from tests.ot.test_sparse_support_search import _rounded_cost


@pytest.mark.parametrize("method", ["semi-dual", "dual"])
def test_on_rounded_costs_the_bound_reaches_the_quadratic_ot_optimum(method):
    # the sparse dual's ascent stops at a kink far below exact OT on rounded costs;
    # the quadratic-OT dual at any point bounds the sparse optimum as well
    C = _rounded_cost(60, 50, 2)
    res = cot.sparse(None, None, C, k=2, reg=0.1, method=method)
    assert res.status is Status.OPTIMAL and res.gap_certified
    ref = quadratic_reference(np.full(60, 1 / 60), np.full(50, 1 / 50), C, 0.1)
    assert res.residuals["bound_from_quadratic"] == 1.0
    assert res.residuals["sparse_dual_bound"] < ref.value - 1e-3     # the sparse dual is far
    assert res.bound >= ref.value - 1e-9
    assert res.bound == res.residuals["quadratic_dual_bound"]
    assert res.bound <= res.objective + 1e-12


def test_when_the_sparse_dual_is_tight_the_quadratic_bound_is_not_computed():
    # k = 3 on a smooth cost: the sparse dual converges and its gap is within tol
    a, b, C = point_cloud_problem(40, 30, seed=4)
    res = cot.sparse(a, b, C, k=30, reg=0.1)
    assert res.status is Status.OPTIMAL
    assert "quadratic_dual_bound" not in res.residuals


def test_the_quadratic_bound_scales_with_the_mass():
    C = _rounded_cost(20, 15, 1)
    unit = cot.sparse(None, None, C, k=2, reg=0.1, method="dual")
    twice = cot.sparse(np.full(20, 2 / 20), np.full(15, 2 / 15), C, k=2, reg=0.05,
                       method="dual")
    assert unit.residuals["bound_from_quadratic"] == 1.0
    assert twice.bound == pytest.approx(2 * unit.bound, rel=1e-9)


def test_priced_pairs_are_off_the_support_positive_and_sorted():
    scores = np.array([[1.0, -1.0, 0.5], [2.0, 3.0, -2.0], [0.2, -0.5, -0.1]])
    on_support = np.array([[False, False, False], [True, True, False], [False, False, True]])
    rows, cols = priced_pairs(scores, on_support)
    assert cols.tolist() == [0, 2] and rows.tolist() == [0, 0]


def test_the_basic_plan_on_a_support_is_a_forest_meeting_the_marginals():
    a, b, C = point_cloud_problem(12, 10, seed=3)
    on_support = np.asarray(cot.exact(a, b, C).plan) > 0     # admits exact OT's plan
    on_support[np.argsort(C, axis=0)[:2], np.arange(10)] = True
    forest = basic_plan(a, b, C, on_support, 1e-12)
    assert isinstance(forest, TransportForest)
    rows, cols = forest.edges()
    assert on_support[rows, cols].all() and rows.size <= 12 + 10 - 1
    plan = np.zeros(C.shape)
    plan[rows, cols] = [forest.flow[(int(i), int(j))] for i, j in zip(rows, cols)]
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-12)


def test_the_local_search_lowers_the_k2_plan_and_keeps_it_feasible(monkeypatch):
    # non-uniform weights, k = 2: the constructed support's QP sits far above the bound
    a, b, C = point_cloud_problem(60, 60, seed=12)
    res = cot.sparse(a, b, C, k=2, reg=0.1)
    monkeypatch.setattr(repair, "LOCAL_SEARCH_GAP", np.inf)
    plain = cot.sparse(a, b, C, k=2, reg=0.1)
    for r in (res, plain):
        assert r.status is Status.OPTIMAL and r.marginal_error <= 1e-9
        assert r.residuals["max_column_nnz"] <= 2
        assert r.bound <= r.objective + 1e-12
    assert res.objective < plain.objective - 1e-6
    ref = quadratic_reference(a, b, C, 0.1, support=np.asarray(res.plan) != 0)
    assert res.objective == pytest.approx(ref.value, rel=1e-6)


@pytest.mark.cuda
def test_cuda_quadratic_bound_on_the_device():
    C = torch.as_tensor(_rounded_cost(60, 50, 2), device="cuda")
    res = cot.sparse(None, None, C, k=2, reg=0.1, method="dual")
    assert res.plan.device.type == "cuda"
    assert res.status is Status.OPTIMAL and res.residuals["bound_from_quadratic"] == 1.0


def test_a_poor_swapped_support_competes_with_the_constructed_one(monkeypatch):
    # rounded costs, k = 3: the swaps around the dual's top-k find a support whose QP is
    # twice exact OT's cost; the constructive support (capped exact OT) is within 1%
    C = _rounded_cost(100, 80, 3)
    uniform = np.full(100, 1 / 100), np.full(80, 1 / 80)
    exact = cot.exact(*uniform, C).cost
    res = cot.sparse(*uniform, C, k=3, reg=0.1, method="dual")
    monkeypatch.setattr(repair, "LOCAL_SEARCH_GAP", np.inf)
    plain = cot.sparse(*uniform, C, k=3, reg=0.1, method="dual")
    assert res.status is Status.OPTIMAL and res.residuals["max_column_nnz"] <= 3
    assert res.objective < 1.01 * exact < 0.6 * plain.objective
    assert res.bound <= res.objective + 1e-12
