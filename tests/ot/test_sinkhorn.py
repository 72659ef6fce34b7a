"""Sinkhorn: feasible rounded plans, certified gaps, both domains, against POT.

References are POT's ``ot.sinkhorn`` (scaling domain; its kernel underflows
for small ``reg``) and ``ot.bregman.sinkhorn_log``, run to ``stopThr=1e-14``,
and the entropic objective of the returned plan computed here in numpy.
"""

import sys
import warnings

import numpy as np
import ot as pot
import pytest
import torch

from certopt import ConvergenceWarning, Status
from certopt import ot as cot
from certopt.core.progress import progress
from certopt.ot import gibbs, streaming
from certopt.ot.geometry import PointCloudCost
from certopt.ot.gibbs import KernelUnderflow, ScaledKernel, StreamedKernel
from certopt.ot.problem import TransportProblem
from tests.ot.conftest import point_cloud_problem
from tests.ot.test_point_cloud import _RecordingCost

sinkhorn_module = sys.modules["certopt.ot.sinkhorn"]


def _entropic(plan, C, reg):
    return float((C * plan).sum() + reg * (plan * np.log(plan) - plan).sum())


def _pot_log(a, b, C, reg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pot.bregman.sinkhorn_log(a, b, C, reg, stopThr=1e-14, numItermax=200000)


@pytest.mark.parametrize("reg", [1.0, 0.1, 0.01, 0.001])
@pytest.mark.parametrize("method", ["scaling", "log"])
def test_plans_match_pots_log_domain_sinkhorn_to_1e_8(reg, method):
    a, b, C = point_cloud_problem(30, 20, seed=2)
    res = cot.sinkhorn(a, b, C, reg, tol=1e-11, method=method, max_iter=100000)
    assert res.status is Status.OPTIMAL
    assert np.isfinite(res.plan).all()
    np.testing.assert_allclose(res.plan, _pot_log(a, b, C, reg), rtol=0, atol=1e-8)
    if reg >= 0.01:                       # exp(-C/reg) >= exp(-100): POT's kernel is usable
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = pot.sinkhorn(a, b, C, reg, stopThr=1e-14, numItermax=200000)
        np.testing.assert_allclose(res.plan, plain, rtol=0, atol=1e-8)


def test_both_domains_and_eps_scaling_agree():
    a, b, C = point_cloud_problem(25, 35, seed=6)
    runs = [cot.sinkhorn(a, b, C, 0.002, tol=1e-11, method=method, eps_scaling=scaled,
                         max_iter=100000)
            for method in ("scaling", "log") for scaled in (False, True)]
    for res in runs[1:]:
        np.testing.assert_allclose(res.plan, runs[0].plan, rtol=0, atol=1e-9)
        assert res.dual_value == pytest.approx(runs[0].dual_value, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("reg", [0.1, 0.01, 0.001])
def test_rounded_plan_is_feasible_and_the_gap_certifies_it(reg):
    a, b, C = point_cloud_problem(40, 30, seed=7)
    res = cot.sinkhorn(a, b, C, reg, tol=1e-8, max_iter=100000)
    plan = res.plan
    assert res.status is Status.OPTIMAL
    assert np.abs(plan.sum(1) - a).sum() <= 1e-12 and np.abs(plan.sum(0) - b).sum() <= 1e-12
    assert res.marginal_error <= 1e-12
    assert not np.shares_memory(plan, C)          # handed over without a copy, not aliased
    assert 1e-12 < res.residuals["dual_plan_marginal"] <= 1e-8     # before rounding
    assert res.objective == pytest.approx(_entropic(plan, C, reg), rel=1e-12, abs=1e-14)
    assert res.cost == pytest.approx(float((C * plan).sum()), rel=1e-12)
    # the rounding moved mass ~1e-9: the gap is far above round-off and certified
    assert res.gap >= 0 and res.dual_value <= res.objective
    optimum = _entropic(_pot_log(a, b, C, reg), C, reg)
    assert res.dual_value <= optimum + 1e-12 <= res.objective + 2e-12
    assert res.gap <= 1e-6


def test_a_kernel_that_underflows_everywhere_is_still_solved():
    # C + 10 moves no plan but exp(-(C + 10) / 0.01) underflows in every entry
    a, b, C = point_cloud_problem(20, 15, seed=8)
    with np.errstate(all="ignore"):
        assert not np.exp(-(C + 10.0) / 0.01).any()
    reference = cot.sinkhorn(a, b, C, 0.01, tol=1e-11)
    for method in ("scaling", "log"):
        res = cot.sinkhorn(a, b, C + 10.0, 0.01, tol=1e-11, method=method, eps_scaling=False)
        assert res.status is Status.OPTIMAL and np.isfinite(res.plan).all()
        np.testing.assert_allclose(res.plan, reference.plan, rtol=0, atol=1e-9)
        assert res.objective == pytest.approx(reference.objective + 10.0, rel=1e-9)


def test_an_underflowing_stored_kernel_takes_a_log_domain_step():
    a, b, C = point_cloud_problem(12, 10, seed=9)
    problem = TransportProblem.from_inputs(a, b, C)

    def underflowing_kernel():
        f = torch.zeros(12, dtype=torch.float64)
        f[4] = -50.0                               # row 4 of K is exp(-5000): zero
        return ScaledKernel(problem, f, torch.zeros(10, dtype=torch.float64), 0.01)

    kernel = underflowing_kernel()
    kernel.mass(0)
    with pytest.raises(KernelUnderflow):
        kernel.fit(0)
    # a first underflow: one log-domain iteration, then the stored kernel again
    with progress(None, False) as bar:
        run = sinkhorn_module._iterate(underflowing_kernel(), problem, 1e-10, 100000, 10,
                                       {"marginal_error": []}, bar, 0)
    assert run.status is Status.OPTIMAL and isinstance(run.kernel, ScaledKernel)
    reference = cot.sinkhorn(a, b, C, 0.01, tol=1e-10, method="log")
    ones = torch.ones(12, dtype=torch.float64), torch.ones(10, dtype=torch.float64)
    for rows, cols, block in streaming.blocks(problem.geometry):
        run.kernel.plan_block(rows, cols, block, *ones)
    plan = run.kernel.plan_storage()
    np.testing.assert_allclose(plan.numpy(), reference.plan, rtol=0, atol=1e-9)
    # a second one keeps the log domain
    kept = sinkhorn_module._log_domain_step(underflowing_kernel(), problem, retry_scaling=False)
    assert isinstance(kept, StreamedKernel) and torch.isfinite(kept.potentials()[0]).all()


def test_without_the_plan_nothing_n_by_m_is_stored(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("an (n, m) array was built")

    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(25, 2)) + 0.5
    full = cot.sinkhorn(None, None, PointCloudCost(x, y), 0.5, tol=1e-10)
    monkeypatch.setattr(streaming, "CPU_BLOCK_ENTRIES", 50)
    monkeypatch.setattr(sinkhorn_module, "ScaledKernel", forbidden)
    monkeypatch.setattr(gibbs.StreamedKernel, "plan_storage", forbidden)
    _RecordingCost.largest = 0
    lazy = cot.sinkhorn(None, None, _RecordingCost(x, y), 0.5, tol=1e-10, return_plan=False)
    assert 0 < _RecordingCost.largest <= 50
    assert lazy.plan is None and lazy.status is Status.OPTIMAL
    for name in ("objective", "dual_value", "cost"):
        assert getattr(lazy, name) == pytest.approx(getattr(full, name), rel=1e-10)
    assert lazy.gap >= 0 and lazy.marginal_error <= 1e-12
    np.testing.assert_allclose(lazy.potentials[0], full.potentials[0], rtol=0, atol=1e-9)
    monkeypatch.undo()
    # the stored kernel, forced, measures its rounded plan block by block alike
    kernel_only = cot.sinkhorn(None, None, PointCloudCost(x, y), 0.5, tol=1e-10,
                               method="scaling", return_plan=False)
    assert kernel_only.plan is None
    assert kernel_only.objective == pytest.approx(full.objective, rel=1e-12)
    assert kernel_only.residuals == pytest.approx(full.residuals, rel=0, abs=1e-14)


def test_eps_scaling_is_the_default_at_small_reg_and_saves_iterations():
    x, y = np.random.default_rng(0).normal(size=(2, 200, 2))     # the README's costs
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    reg = 0.001 * (C.max() - C.min())
    default = cot.sinkhorn(None, None, C, reg, max_iter=50000)
    plain = cot.sinkhorn(None, None, C, reg, max_iter=50000, eps_scaling=False)
    assert default.status is plain.status is Status.OPTIMAL
    assert default.n_iter < 0.5 * plain.n_iter                 # measured: 1511 vs 9391
    assert default.dual_value <= plain.objective and plain.dual_value <= default.objective
    assert max(default.gap, plain.gap) <= 1e-4 * abs(plain.objective)
    low, high = streaming.cost_range(TransportProblem.from_inputs(None, None, C).geometry)
    assert (low, high) == (C.min(), C.max())
    schedule = sinkhorn_module.eps_schedule(high - low, reg, None)
    assert schedule[-1] == reg and all(p / q <= 4 + 1e-12 for p, q in zip(schedule, schedule[1:]))
    assert sinkhorn_module.eps_schedule(high - low, 0.1 * C.max(), None) == [0.1 * C.max()]


def test_a_run_out_of_iterations_is_reported_and_still_certified_at_reg():
    a, b, C = point_cloud_problem(30, 25, seed=13)
    with pytest.warns(ConvergenceWarning):
        res = cot.sinkhorn(a, b, C, 0.001, max_iter=15)       # stops in an early eps stage
    assert res.status is Status.MAX_ITER and res.n_iter == 15
    assert res.residuals["dual_plan_marginal"] > 1e-3
    assert res.marginal_error <= 1e-12
    assert res.objective == pytest.approx(_entropic(res.plan, C, 0.001), rel=1e-12)
    optimum = _entropic(_pot_log(a, b, C, 0.001), C, 0.001)
    assert res.dual_value <= optimum <= res.objective and res.gap > 1e-3


def test_torch_input_is_not_modified_and_comes_back_alike():
    a, b, C = point_cloud_problem(10, 8, seed=11)
    tensors = [torch.tensor(v, dtype=torch.float32) for v in (a, b, C)]
    copies = [t.clone() for t in tensors]
    res = cot.sinkhorn(*tensors, 0.05, tol=1e-5)
    assert isinstance(res.plan, torch.Tensor) and res.plan.dtype == torch.float32
    assert all(torch.equal(t, c) for t, c in zip(tensors, copies))


@pytest.mark.parametrize(("kwargs", "match"), [({"method": "fast"}, "method"),
                                               ({"eps_scaling": "yes"}, "eps_scaling")])
def test_bad_options_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cot.sinkhorn(None, None, np.ones((2, 2)), 0.1, **kwargs)


@pytest.mark.cuda
def test_scaling_and_log_domains_on_cuda_match_cpu():
    a, b, C = point_cloud_problem(60, 50, seed=12)
    for method in ("scaling", "log"):
        cpu = cot.sinkhorn(a, b, C, 0.01, tol=1e-9, method=method)
        gpu = cot.sinkhorn(*(torch.tensor(v, device="cuda") for v in (a, b, C)), 0.01,
                           tol=1e-9, method=method)
        assert gpu.plan.device.type == "cuda"
        np.testing.assert_allclose(gpu.plan.cpu().numpy(), cpu.plan, atol=1e-9)
        assert gpu.gap >= 0


def test_plan_log_plan_counts_zero_entries_as_zero():
    plan = torch.tensor([[0.25, 0.0], [0.5, 0.25]], dtype=torch.float64)
    for block in (plan, plan.clamp_min(0.1)):
        logs, total = sinkhorn_module._plan_log_plan(block, torch.empty_like(block))
        assert float(total) == pytest.approx(float(torch.xlogy(block, block).sum()), rel=1e-15)
        assert torch.isfinite(logs).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_matrix_has_the_requested_kind(dtype):
    out = gibbs.empty_matrix((3, 4), dtype, torch.device("cpu"))
    assert out.shape == (3, 4) and out.dtype == dtype and out.device.type == "cpu"
