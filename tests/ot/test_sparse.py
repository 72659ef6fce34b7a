"""Sparsity-constrained OT against POT, the cvxpy QP and exact OT."""

import warnings

import numpy as np
import ot as pot
import pytest
import torch

from certopt import ConvergenceWarning, Status
from certopt import ot as cot
from certopt.core.errors import InfeasibleSettingsError
from certopt.ot.reference import quadratic_reference
from tests.ot.conftest import point_cloud_problem


def _pot_sparse(a, b, C, k, reg, method):
    solve = pot.smooth.smooth_ot_semi_dual if method == "semi-dual" else pot.smooth.smooth_ot_dual
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, log = solve(a, b, C, reg, reg_type="sparsity_constrained", max_nz=k, log=True)
    return -float(log["res"].fun)


def _quiet(solver, *args, **kwargs):
    """Run a solver, ignoring ConvergenceWarnings (the status is checked instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return solver(*args, **kwargs)


@pytest.mark.parametrize("method", ["semi-dual", "dual"])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_dual_value_at_least_pots_and_certificate_is_the_plans(method, k):
    # uniform weights, n = m: feasible for every k (permutations are 1-sparse).  With k = 2
    # this instance's dual optimum sits at a kink where no plan read off the potentials meets
    # the marginals (sparsity-constrained OT is non-convex): the automatic repair on the
    # support found then gives a feasible 2-sparse plan, and a gap that measures the kink.
    a, b, C = point_cloud_problem(30, 30, seed=k, uniform=True)
    reg = 0.1
    res = _quiet(cot.sparse, a, b, C, k, reg=reg, method=method)
    assert res.dual_value >= _pot_sparse(a, b, C, k, reg, method) - 1e-6
    plan = res.plan
    assert isinstance(plan, np.ndarray) and plan.shape == (30, 30)
    assert (plan >= 0).all()
    assert np.count_nonzero(plan, axis=0).max() <= k
    assert res.residuals["max_column_nnz"] == np.count_nonzero(plan, axis=0).max()
    assert res.residuals["nnz"] == np.count_nonzero(plan)
    # the certificate is measured on the returned plan
    assert res.cost == pytest.approx((C * plan).sum(), rel=1e-12)
    assert res.objective == pytest.approx((C * plan).sum() + 0.05 * (plan**2).sum(), rel=1e-12)
    error = max(np.abs(plan.sum(1) - a).sum(), np.abs(plan.sum(0) - b).sum())
    assert res.marginal_error == pytest.approx(error, rel=1e-9, abs=1e-15)
    assert res.gap == pytest.approx(res.objective - res.dual_value, abs=1e-15)
    if method == "semi-dual":
        assert np.abs(plan.sum(0) - b).sum() <= 1e-12        # columns are exact
    # the Newton finish (or the repair) ends near round-off: 1000x below tol
    assert res.status is Status.OPTIMAL and res.gap_certified
    assert res.marginal_error <= 1e-9
    # weak duality for a plan that meets the marginals
    assert res.gap >= -1e-12
    assert ("repair_converged" in res.residuals) == (k == 2)
    if k == 2:
        assert res.residuals["repair_converged"] == 1.0
        assert res.residuals["marginal_error_before_repair"] > 1e-3
        assert 1e-6 < res.gap < 1e-3 * res.objective
    else:
        assert abs(res.gap) <= 1e-12


@pytest.mark.parametrize("method", ["semi-dual", "dual"])
def test_k_at_least_n_is_quadratic_ot_and_matches_the_cvxpy_qp(method):
    a, b, C = point_cloud_problem(15, 12, seed=3)
    reg = 0.05
    ref = quadratic_reference(a, b, C, reg)
    assert ref.status is Status.OPTIMAL
    sparse = cot.sparse(a, b, C, k=20, reg=reg, method=method, tol=1e-7)
    quad = cot.quadratic(a, b, C, reg=reg, method=method, tol=1e-7)
    for res in (sparse, quad):
        assert res.status is Status.OPTIMAL
        assert res.objective == pytest.approx(ref.value, rel=1e-6)
        assert res.dual_value == pytest.approx(ref.value, rel=1e-6)
        np.testing.assert_allclose(res.plan, ref.plan, atol=1e-6)
        assert res.marginal_error <= 1e-7
    np.testing.assert_allclose(sparse.plan, quad.plan, atol=1e-8)


def test_k1_small_reg_approaches_exact_ot():
    a, b, C = point_cloud_problem(30, 30, seed=4, uniform=True)
    exact = cot.exact(a, b, C)
    res = _quiet(cot.sparse, a, b, C, k=1, reg=1e-3)
    assert res.residuals["max_column_nnz"] == 1
    assert res.marginal_error <= 1e-9
    # reg/2 ||T||^2 = reg/2 * n * (1/n)^2 for a permutation plan: the bound is tight
    assert abs(res.cost - exact.cost) <= 1e-3 / (2 * 30) + 1e-9
    assert res.dual_value <= exact.cost + 0.5e-3 / 30 + 1e-9


def test_torch_input_comes_back_as_torch_and_inputs_are_not_modified():
    a, b, C = point_cloud_problem(20, 25, seed=5)
    a_t, b_t, C_t = (torch.tensor(x, dtype=torch.float32) for x in (a, b, C))
    copies = [x.clone() for x in (a_t, b_t, C_t)]
    res = _quiet(cot.sparse, a_t, b_t, C_t, 3, reg=0.1, method="dual")
    assert isinstance(res.plan, torch.Tensor) and res.plan.dtype == torch.float32
    assert res.potentials[0].dtype == torch.float32 and res.potentials[0].shape == (20,)
    for x, copy in zip((a_t, b_t, C_t), copies):
        assert torch.equal(x, copy)
    a_np, C_np = a.copy(), C.copy()
    _quiet(cot.sparse, a, None, C, 2, reg=0.1, repair=True)
    assert np.array_equal(a, a_np) and np.array_equal(C, C_np)


def test_uniform_default_marginals():
    _, _, C = point_cloud_problem(8, 12, seed=6)
    res = _quiet(cot.sparse, None, None, C, 3, reg=0.1)
    assert res.status is Status.OPTIMAL
    np.testing.assert_allclose(res.plan.sum(0), np.full(12, 1 / 12), atol=1e-15)
    assert np.abs(res.plan.sum(1) - 1 / 8).sum() <= 1e-6


def _support_qp(a, b, C, k, reg, alpha):
    """The cvxpy QP on each column's k candidate rows (top-k of alpha - C)."""
    support = np.zeros_like(C, dtype=bool)
    top = np.argsort(-(np.asarray(alpha)[:, None] - C), axis=0, kind="stable")[:k]
    support[top, np.arange(C.shape[1])] = True
    return quadratic_reference(a, b, C, reg, support=support)


@pytest.mark.parametrize("method", ["semi-dual", "dual"])
def test_repair_solves_the_qp_on_the_support(method):
    # k = 2 on this instance: the dual optimum is a kink whose plan misses the marginals
    a, b, C = point_cloud_problem(30, 30, seed=2, uniform=True)
    k, reg = 2, 0.1
    plain = _quiet(cot.sparse, a, b, C, k, reg=reg, method=method, repair=False)
    res = _quiet(cot.sparse, a, b, C, k, reg=reg, method=method)     # repairs by default
    assert plain.status is Status.INACCURATE and plain.marginal_error > 1e-3
    assert not plain.gap_certified and "repair_converged" not in plain.residuals
    assert res.residuals["marginal_error_before_repair"] == pytest.approx(
        plain.marginal_error, rel=1e-9, abs=1e-15)
    assert res.residuals["repair_converged"] == 1.0
    assert res.status is Status.OPTIMAL and res.marginal_error <= 1e-9
    assert res.residuals["max_column_nnz"] <= k
    ref = _support_qp(a, b, C, k, reg, plain.potentials[0])   # independent reference
    assert ref.status is Status.OPTIMAL
    assert res.objective == pytest.approx(ref.value, rel=1e-6)
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-6)
    # the certificate stays valid: the (semi-)dual bound is below the feasible objective
    assert res.dual_value <= res.objective + 1e-12


def test_repair_builds_a_support_when_the_top_k_admits_no_plan():
    # non-uniform weights, k = 2: no plan lives on the dual's top-2 rows (cvxpy: infeasible);
    # the repair's staircase support admits one (a forest with two rows per column)
    a, b, C = point_cloud_problem(30, 30, seed=7)
    plain = _quiet(cot.sparse, a, b, C, 2, reg=0.1)
    assert _support_qp(a, b, C, 2, 0.1, plain.potentials[0]).status is Status.INFEASIBLE
    res = cot.sparse(a, b, C, 2, reg=0.1, repair=True, max_iter=300)
    assert res.residuals["repair_converged"] == 1.0
    assert res.status is Status.OPTIMAL and res.marginal_error <= 1e-9
    assert res.residuals["max_column_nnz"] <= 2
    assert res.dual_value <= res.objective + 1e-12


def test_budget_exhaustion_is_reported():
    a, b, C = point_cloud_problem(20, 20, seed=8)
    with pytest.warns(ConvergenceWarning):       # (the repair would build a feasible plan)
        res = cot.sparse(a, b, C, 3, reg=0.1, max_iter=3, repair=False)
    assert res.status is Status.MAX_ITER and not res.gap_certified
    assert res.n_iter <= 3 + 3      # the budget, then the final plan's evaluations
    assert res.marginal_error > 1e-3


def test_fista_optimizer_converges_on_quadratic_ot():
    a, b, C = point_cloud_problem(10, 10, seed=9)
    ref = quadratic_reference(a, b, C, 0.5)
    res = cot.quadratic(a, b, C, reg=0.5, optimizer="fista", tol=1e-6, max_iter=20000)
    assert res.status is Status.OPTIMAL
    assert res.objective == pytest.approx(ref.value, rel=1e-5)


def test_verbose_shows_progress(capsys):
    a, b, C = point_cloud_problem(8, 8, seed=10)
    _quiet(cot.sparse, a, b, C, 2, reg=0.1, verbose=True)
    assert "sparse OT" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k"),
        ({"reg": 0.0}, "reg"),
        ({"reg": -1.0}, "reg"),
        ({"method": "primal"}, "method"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"tol": 0.0}, "tol"),
        ({"tol": 1.0}, "tol"),
        ({"tol": 10.0}, "tol"),
        ({"a": np.array([0.5, np.nan, 0.5])}, "a"),
        ({"a": np.array([1.5, -0.5, 0.0])}, "a"),
        ({"b": np.array([0.2, 0.2, 0.2, 0.2])}, "a, b"),
        ({"b": np.full(5, 0.2)}, "b"),
        ({"C": np.full((3, 4), np.nan)}, "C"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    args = {"a": np.full(3, 1 / 3), "b": np.full(4, 0.25), "C": np.ones((3, 4)), "k": 2,
            "reg": 0.1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cot.sparse(**args)


def test_a_budget_no_plan_can_meet_is_refused_naming_k():
    a, b, C = point_cloud_problem(8, 6, seed=2)
    with pytest.raises(InfeasibleSettingsError, match="k"):
        cot.sparse(a, b, C, k=1, reg=0.1)              # 6 columns x 1 < 8 rows
    b[3:] = 0.0                                        # 3 columns with mass: k = 2 is too few
    with pytest.raises(InfeasibleSettingsError, match="k=2"):
        cot.sparse(a, b / b.sum(), C, k=2, reg=0.1)
    a[:3] = 0.0                                        # 5 rows with mass: k = 2 serves 6
    res = _quiet(cot.sparse, a / a.sum(), b / b.sum(), C, k=2, reg=0.1)
    assert res.residuals["max_column_nnz"] <= 2


@pytest.mark.cuda
def test_cuda_matches_cpu():
    a, b, C = point_cloud_problem(50, 40, seed=11)
    cpu = _quiet(cot.sparse, a, b, C, 3, reg=0.1)
    C_gpu = torch.tensor(C, device="cuda")
    gpu = _quiet(cot.sparse, torch.tensor(a, device="cuda"), torch.tensor(b, device="cuda"),
                 C_gpu, 3, reg=0.1)
    assert gpu.plan.device.type == "cuda"
    assert gpu.dual_value == pytest.approx(cpu.dual_value, rel=1e-8)


@pytest.mark.parametrize("method", ["semi-dual", "dual"])
def test_zero_weights_get_empty_rows_and_columns(method):
    a, b, C = point_cloud_problem(20, 20, seed=1)
    a[5], b[3] = 0.0, 0.0
    a, b = a / a.sum(), b / b.sum()
    res = cot.sparse(a, b, C, 4, reg=0.1, method=method)
    assert res.status is Status.OPTIMAL and res.marginal_error <= 1e-6
    assert np.abs(res.plan[5]).max() == 0.0 and np.abs(res.plan[:, 3]).max() == 0.0
    assert np.isfinite(res.dual_value) and abs(res.gap) <= 1e-7


def test_semi_dual_on_a_fixed_support_matches_the_dual_optimum():
    import importlib

    from certopt.ot.problem import TransportProblem

    sparse_module = importlib.import_module("certopt.ot.sparse")
    a, b, C = point_cloud_problem(12, 12, seed=13, uniform=True)
    problem = TransportProblem.from_inputs(a, b, C)
    # a feasible support (column j may use rows j+3, j+1, j+2, j mod 12), in no sorted order
    support = (torch.arange(12)[:, None] + torch.tensor([3, 1, 2, 0])) % 12
    duals = sparse_module.ColumnDuals(problem, 4, 0.1, support=support)
    semi = sparse_module.solve_column_dual(duals, "semi-dual", tol=1e-9, max_iter=2000,
                                           optimizer="lbfgs", verbose=False, desc="t")
    full = sparse_module.solve_column_dual(duals, "dual", tol=1e-9, max_iter=2000,
                                           optimizer="lbfgs", verbose=False, desc="t")
    assert semi.status is Status.OPTIMAL and full.status is Status.OPTIMAL
    assert semi.dual_value == pytest.approx(full.dual_value, rel=1e-8)
    mask = np.zeros((12, 12), dtype=bool)
    mask[support.numpy(), np.arange(12)[:, None]] = True
    ref = quadratic_reference(a, b, C, 0.1, support=mask)
    assert semi.dual_value == pytest.approx(ref.value, rel=1e-6)
