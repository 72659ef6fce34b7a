"""exact, sinkhorn and quadratic OT against POT and the cvxpy QP."""

import warnings

import numpy as np
import ot as pot
import pytest
import torch

from certopt import ConvergenceWarning, Status
from certopt import ot as cot
from certopt.ot.exact import default_max_iter
from certopt.ot.reference import quadratic_reference
from tests.ot.conftest import point_cloud_problem


def test_exact_matches_pot_with_a_certified_zero_gap():
    a, b, C = point_cloud_problem(40, 30, seed=0)
    res = cot.exact(a, b, C)
    assert res.status is Status.OPTIMAL
    assert res.cost == pytest.approx(pot.emd2(a, b, C), rel=1e-12)
    assert res.objective == res.cost
    assert abs(res.gap) <= 1e-12
    f, g = res.potentials
    assert (f[:, None] + g[None, :] <= C + 1e-15).all()          # dual feasible
    assert res.dual_value == pytest.approx(f @ a + g @ b, rel=1e-12)
    assert res.marginal_error <= 1e-12


def test_exact_budget_exhaustion_is_reported_and_the_gap_tells_the_truth():
    a, b, C = point_cloud_problem(60, 60, seed=1)
    with pytest.warns(ConvergenceWarning, match="result code"):
        res = cot.exact(a, b, C, max_iter=20)
    assert res.status is Status.MAX_ITER
    optimum = pot.emd2(a, b, C)
    assert res.dual_value <= optimum + 1e-12           # the bound stays valid
    # the truncated plan is not optimal-and-feasible, and the certificate shows it
    assert res.gap > 1e-6
    assert res.marginal_error > 1e-3 or res.objective > optimum + 1e-9
    assert default_max_iter(5000, 5000) == 50 * 5000 * 5000


@pytest.mark.parametrize("reg", [0.01, 0.1])
def test_sinkhorn_matches_pots_log_domain_sinkhorn(reg):
    a, b, C = point_cloud_problem(30, 20, seed=2)
    res = cot.sinkhorn(a, b, C, reg, tol=1e-10)
    assert res.status is Status.OPTIMAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pot.sinkhorn(a, b, C, reg, method="sinkhorn_log", stopThr=1e-13,
                           numItermax=100000)
    np.testing.assert_allclose(res.plan, ref, atol=1e-10)
    assert res.cost == pytest.approx(pot.sinkhorn2(a, b, C, reg, method="sinkhorn_log",
                                                   stopThr=1e-13, numItermax=100000),
                                     rel=1e-8)
    plan = res.plan
    entropic = (C * plan).sum() + reg * (plan * np.log(plan) - plan).sum()
    assert res.objective == pytest.approx(entropic, rel=1e-12)
    assert res.gap == pytest.approx(0.0, abs=1e-9)
    assert res.marginal_error <= 1e-10


def test_sinkhorn_torch_and_zero_weights_and_budget():
    a, b, C = point_cloud_problem(10, 12, seed=3)
    a[3] = 0.0
    a /= a.sum()
    res = cot.sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), 0.05, tol=1e-9)
    assert isinstance(res.plan, torch.Tensor)
    assert float(res.plan[3].abs().max()) == 0.0
    assert np.isfinite(res.dual_value) and abs(res.gap) <= 1e-8
    with pytest.warns(ConvergenceWarning):
        short = cot.sinkhorn(a, b, C, 0.001, max_iter=5)
    assert short.status is Status.MAX_ITER


@pytest.mark.parametrize("method", ["dual", "semi-dual"])
def test_quadratic_matches_the_cvxpy_qp_and_pots_smooth_ot(method):
    a, b, C = point_cloud_problem(25, 20, seed=4)
    reg = 0.2
    ref = quadratic_reference(a, b, C, reg)
    res = cot.quadratic(a, b, C, reg, method=method, tol=1e-7)
    assert res.status is Status.OPTIMAL
    assert res.objective == pytest.approx(ref.value, rel=1e-6)
    assert res.dual_value == pytest.approx(ref.value, rel=1e-6)
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, log = pot.smooth.smooth_ot_dual(a, b, C, reg, reg_type="l2", log=True)
    assert res.dual_value >= -log["res"].fun - 1e-9


@pytest.mark.parametrize("solver", [cot.exact, cot.sinkhorn, cot.quadratic])
def test_baselines_reject_bad_input(solver):
    extra = {} if solver is cot.exact else {"reg": 0.1}
    with pytest.raises(ValueError, match="C"):
        solver(None, None, np.array([[1.0, np.nan]]), **extra)
    with pytest.raises(ValueError, match="a"):
        solver(np.array([-1.0, 2.0]), None, np.ones((2, 2)), **extra)
    if extra:
        with pytest.raises(ValueError, match="reg"):
            solver(None, None, np.ones((2, 2)), reg=0.0)


@pytest.mark.cuda
def test_sinkhorn_and_quadratic_on_cuda_match_cpu():
    a, b, C = point_cloud_problem(40, 30, seed=5)
    on_gpu = [torch.tensor(x, device="cuda") for x in (a, b, C)]
    for solve, kwargs in ((cot.sinkhorn, {"reg": 0.05, "tol": 1e-9}),
                          (cot.quadratic, {"reg": 0.1, "tol": 1e-7})):
        cpu, gpu = solve(a, b, C, **kwargs), solve(*on_gpu, **kwargs)
        assert gpu.plan.device.type == "cuda"
        np.testing.assert_allclose(gpu.plan.cpu().numpy(), cpu.plan, atol=1e-7)
        assert gpu.dual_value == pytest.approx(cpu.dual_value, rel=1e-7)
