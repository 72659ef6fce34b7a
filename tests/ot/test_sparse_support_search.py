"""The constructive support search: k-sparse plans for non-uniform weights and ties.

References: the cvxpy QP restricted to the plan's nonzeros (the exact restricted
optimum) and, for the impossible case, an enumeration of every support.  The
solves end near round-off, so marginal assertions keep a margin of 1000x below
``tol`` (1e-6).
"""

import itertools
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from certopt import ConvergenceWarning, Status
from certopt import ot as cot
from certopt.ot import support_search
from certopt.ot.forest_pivots import TransportForest, lower_cost
from certopt.ot.problem import TransportProblem
from certopt.ot.reference import quadratic_reference
from certopt.ot.repair import hall_violator
from certopt.ot.support_search import HostProblem, constructive_support
from tests.ot.conftest import point_cloud_problem


def _assert_feasible_k_sparse(res, k):
    assert res.status is Status.OPTIMAL and res.gap_certified
    assert res.marginal_error <= 1e-9
    assert res.residuals["repair_converged"] == 1.0
    assert res.residuals["max_column_nnz"] <= k
    assert res.dual_value <= res.objective + 1e-12


def _restricted_optimum(a, b, C, reg, plan):
    """cvxpy's QP on the plan's nonzeros: the plan must be its optimum (the QP on the
    support found has its optimum on these entries)."""
    ref = quadratic_reference(a, b, C, reg, support=np.asarray(plan) != 0)
    assert ref.status is Status.OPTIMAL
    return ref.value


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("method", ["semi-dual", "dual"])
def test_non_uniform_weights_end_optimal_on_the_exact_restricted_optimum(k, method):
    # weights uniform in [0.5, 1.5], n = m: for k = 2 a feasible plan is a spanning tree in
    # which every column joins at most two rows; the swaps around the dual's top-k find none
    a, b, C = point_cloud_problem(80, 80, seed=10 + k)
    res = cot.sparse(a, b, C, k=k, reg=0.1, method=method)
    _assert_feasible_k_sparse(res, k)
    restricted = _restricted_optimum(a, b, C, 0.1, res.plan)
    assert res.objective == pytest.approx(restricted, rel=1e-6)


def _rounded_cost(n, m, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((m, 2))
    return ((x[:, None] - y[None]) ** 2).sum(-1).round()


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("n, m, seed", [(8, 6, 1), (40, 30, 2), (100, 80, 3)])
def test_rounded_costs_end_optimal(n, m, seed, k):
    # uniform weights, n > m: a 2-sparse plan splits into n / gcd(n, m) balanced blocks
    C = _rounded_cost(n, m, seed)
    res = cot.sparse(None, None, C, k=k, reg=0.1, method="dual")
    _assert_feasible_k_sparse(res, k)
    if n <= 40:
        restricted = _restricted_optimum(np.full(n, 1 / n), np.full(m, 1 / m), C, 0.1, res.plan)
        assert res.objective == pytest.approx(restricted, rel=1e-6, abs=1e-9)


def test_integer_costs_and_duplicated_points_end_optimal():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 2))
    x[10:] = x[:10]                                 # every source point twice
    y = rng.standard_normal((16, 2))
    C = np.round(3 * ((x[:, None] - y[None]) ** 2).sum(-1)).astype(np.int64)
    for k in (2, 3):
        res = cot.sparse(None, None, C, k=k, reg=0.1)
        _assert_feasible_k_sparse(res, k)


def test_the_constructive_support_admits_a_plan_with_two_rows_per_column():
    a, b, C = point_cloud_problem(120, 120, seed=5)
    problem = TransportProblem.from_inputs(a, b, C, None)
    alpha, beta = torch.zeros(120, dtype=torch.float64), torch.zeros(120, dtype=torch.float64)
    support = constructive_support(HostProblem(problem), 2, alpha, beta)
    assert support is not None and support.shape == (120, 2)
    assert all(len(set(column)) == 2 for column in support.tolist())
    assert hall_violator(problem, support) is None


def _admits_a_plan(a, b, rows_per_column):
    n, m = a.size, b.size
    mask = np.zeros((n, m), dtype=bool)
    for j, rows in enumerate(rows_per_column):
        mask[list(rows), j] = True
    r, c = np.nonzero(mask)
    equalities = np.zeros((n + m, r.size))
    equalities[r, np.arange(r.size)] = 1
    equalities[n + c, np.arange(r.size)] = 1
    out = linprog(np.zeros(r.size), A_eq=equalities, b_eq=np.r_[a, b], bounds=(0, None),
                  method="highs")
    return out.status == 0


def test_a_budget_no_plan_meets_ends_inaccurate_and_says_how_far():
    # 5 x 3, uniform weights, k = 2: k m = 6 >= 5 passes the budget check, but masses
    # p / 5 = q / 3 balance only on the whole problem, so a plan's support is connected:
    # at least n + m - 1 = 7 nonzeros, more than k m = 6.  Every 2-row support is checked.
    a, b = np.full(5, 1 / 5), np.full(3, 1 / 3)
    pairs = list(itertools.combinations(range(5), 2))
    assert not any(_admits_a_plan(a, b, choice) for choice in itertools.product(pairs, repeat=3))
    C = _rounded_cost(5, 3, seed=0) + np.arange(3)        # distinct columns
    problem = TransportProblem.from_inputs(a, b, C, None)
    zeros = torch.zeros(5, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    assert constructive_support(HostProblem(problem), 2, *zeros) is None
    for method in ("semi-dual", "dual"):
        with pytest.warns(ConvergenceWarning, match="repair"):
            res = cot.sparse(a, b, C, k=2, reg=0.1, method=method)
        assert res.status in (Status.MAX_ITER, Status.INACCURATE) and not res.gap_certified
        assert res.residuals["repair_converged"] == 0.0
        assert res.marginal_error > 1e-3             # far above tol 1e-6: the residuals say it
        assert res.marginal_error <= res.residuals["marginal_error_before_repair"]
        assert res.residuals["max_column_nnz"] <= 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            assert np.isfinite(res.dual_value)


def _plan_of(rows, cols, flows, n, m):
    plan = np.zeros((n, m))
    np.add.at(plan, (rows, cols), flows)
    return plan


def ot_exact_cost(a, b, C):
    return float(cot.exact(a, b, C).cost)


def _nearest_neighbour_staircase(a, b, C, k):
    zero = 1e-12
    return support_search.staircase(a, b, k, *support_search._nearest_neighbour(a, b, C, zero),
                                    zero)


def test_pivots_keep_the_marginals_and_the_cap_and_lower_the_cost():
    a, b, C = point_cloud_problem(60, 60, seed=6)
    k = 3
    rows, cols, flows = _nearest_neighbour_staircase(a, b, C, k)
    before = float((C[rows, cols] * flows).sum())
    forest = TransportForest(60, 60, rows, cols, flows)
    assert lower_cost(forest, C, k, 1e-12, max_pivots=2000) > 0
    rows, cols = forest.edges()
    flows = np.array([forest.flow[(i, j)] for i, j in zip(rows, cols)])
    plan = _plan_of(rows, cols, flows, 60, 60)
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-12)
    assert flows.min() >= -1e-12 and (plan != 0).sum(0).max() <= k
    after = float((C * plan).sum())
    # exact OT bounds every plan's cost from below
    assert ot_exact_cost(a, b, C) - 1e-12 <= after <= 0.9 * before


def test_equal_masses_exchange_places_where_it_is_cheaper():
    C = _rounded_cost(100, 80, seed=1)
    a, b = np.full(100, 1 / 100), np.full(80, 1 / 80)
    rows, cols, flows = _nearest_neighbour_staircase(a, b, C, 2)
    before = float((C[rows, cols] * flows).sum())
    rows, cols = support_search.exchange_equal_masses(rows, cols, flows, a, b, C, 1e-12)
    plan = _plan_of(rows, cols, flows, 100, 80)
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-12)
    assert (plan != 0).sum(0).max() <= 2
    assert float((C * plan).sum()) <= 0.5 * before


def test_capping_exact_ots_columns_keeps_the_marginals_and_most_of_its_cost():
    # exact OT's plan (a spanning tree) has columns with 4 rows here; rerouting through them
    # empties those edges: at most 3 rows per column, cost within 1% of exact OT's
    a, b, C = point_cloud_problem(120, 120, seed=8)
    forest = support_search.capped_exact_plan(a, b, C, 3, 1e-12)
    assert forest is not None
    rows, cols = forest.edges()
    flows = np.array([forest.flow[(i, j)] for i, j in zip(rows, cols)])
    plan = _plan_of(rows, cols, flows, 120, 120)
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-12)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-12)
    assert flows.min() >= -1e-12 and (plan != 0).sum(0).max() <= 3
    exact = ot_exact_cost(a, b, C)
    assert exact - 1e-12 <= float((C * plan).sum()) <= 1.01 * exact


def test_point_clouds_get_a_constructed_support_too():
    a, b, _ = point_cloud_problem(40, 40, seed=12)
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    res = cot.sparse(a, b, cot.PointCloudCost(x, y), k=2, reg=0.1)
    _assert_feasible_k_sparse(res, 2)


@pytest.mark.cuda
def test_cuda_non_uniform_k2_ends_optimal_on_the_device():
    a, b, C = point_cloud_problem(60, 60, seed=13)
    res = cot.sparse(torch.tensor(a, device="cuda"), torch.tensor(b, device="cuda"),
                     torch.tensor(C, device="cuda"), k=2, reg=0.1)
    assert res.plan.device.type == "cuda"
    _assert_feasible_k_sparse(res, 2)
