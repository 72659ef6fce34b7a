"""The ADMM's float32 phase (``SolverOptions.mixed_precision``): float64 answers and
certificates, checked against the float64-only solve and the cvxpy reference."""

import dataclasses

import numpy as np
import pytest
import torch

from certopt.convexnn.admm import path_options, solve_admm, solve_admm_from, uses_float32_phase
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.core.errors import InputTypeError
from certopt.core.result import Status

TOL = 1e-4


@pytest.fixture(autouse=True)
def float32_phase_at_any_size(monkeypatch):
    """The float32 phase on these small problems too (it is size-gated for speed only)."""
    monkeypatch.setattr("certopt.convexnn.admm.MIXED_PRECISION_MIN_ENTRIES", 0)


def _regression(n=200, d=5, n_patterns=20, loss="squared", scales=0.0, duplicates=0, seed=0):
    """A ReLU teacher plus noise; columns scaled by 10^-scales .. 10^scales and the first
    ``duplicates`` columns repeated (an ill-conditioned, rank-deficient X)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.maximum(X @ rng.standard_normal((d, 3)), 0.0) @ rng.standard_normal(3) / np.sqrt(d)
    y += 0.1 * rng.standard_normal(n)
    if loss != "squared":
        y = np.where(y > np.median(y), 1.0, -1.0)
    X = np.hstack([X, X[:, :duplicates]]) * np.logspace(-scales, scales, d + duplicates)
    return ConvexReLUProblem.from_data(X, y, lam=1e-2, loss=loss, n_patterns=n_patterns,
                                       random_state=0)


def _assert_certified_against(result, reference, tol):
    """OPTIMAL, float64, and a certificate that is sound against cvxpy's optimum."""
    assert result.status is Status.OPTIMAL
    assert result.v.dtype == torch.float64 and result.w.dtype == torch.float64
    assert reference.status is Status.OPTIMAL
    # a sound bound: bound <= min G <= F of cvxpy's network
    assert result.bound <= reference.objective
    assert abs(result.gap) <= tol * abs(result.bound)
    # F <= (1 + tol) bound <= (1 + tol) min G; from below, F of a network that keeps its
    # cones to tol only (measured down to -1.5e-4 relative at tol 1e-4)
    assert result.objective - reference.objective <= tol * abs(result.bound) + reference.gap
    assert result.objective == pytest.approx(reference.objective, rel=10 * tol)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_float32_phase_gives_the_float64_answer_and_certificate(loss):
    problem = _regression(loss=loss)
    reference = solve_cvxpy(problem, SolverOptions())
    mixed = solve_admm(problem, SolverOptions(tol=TOL))
    plain = solve_admm(problem, SolverOptions(tol=TOL, mixed_precision=False))
    _assert_certified_against(mixed, reference, TOL)
    _assert_certified_against(plain, reference, TOL)
    assert mixed.history["float32_iterations"][0] > 0
    assert "float32_iterations" not in plain.history
    assert mixed.objective == pytest.approx(plain.objective, rel=10 * TOL)
    # the certified numbers are float64 ones, of the returned float64 network
    U, alpha = problem.network(mixed.v, mixed.w)
    assert problem.nonconvex_objective(U, alpha) == mixed.objective


def test_ill_conditioned_duplicated_columns_still_end_certified():
    # columns scaled 0.18 .. 5.6 and two of them duplicated (rank-deficient X); at tol
    # 1e-5 the float32 phase stalled (measured: after 3325 iterations) and the float64
    # phase did the rest (to 5175; 4900 without the float32 phase)
    problem = _regression(n=150, d=4, scales=0.75, duplicates=2)
    reference = solve_cvxpy(problem, SolverOptions())
    result = solve_admm(problem, SolverOptions(tol=1e-5, max_iter=20_000))
    _assert_certified_against(result, reference, 1e-5)
    assert 0 < result.history["float32_iterations"][0] <= result.n_iter
    assert result.residuals["cone_violation"] <= 1e-5 * float(
        torch.cat([result.v, result.w]).matmul(problem.X.T).abs().max())


def test_float64_phase_continues_from_where_the_float32_phase_stopped(monkeypatch):
    problem = _regression()
    reference = solve_cvxpy(problem, SolverOptions())
    plain = solve_admm(problem, SolverOptions(tol=TOL, mixed_precision=False))
    assert plain.n_iter > 400  # so that a 100-iteration float32 budget cannot finish
    monkeypatch.setattr("certopt.convexnn.admm.FLOAT32_SHARE", 0.01)
    result = solve_admm(problem, SolverOptions(tol=TOL, max_iter=10_000))
    _assert_certified_against(result, reference, TOL)
    history = result.history
    assert history["float32_iterations"] == [100.0]
    assert result.n_iter > 100
    # one history for both phases: a residual check every 25 iterations, gaps in order
    assert len(history["primal_residual"]) == result.n_iter // 25
    assert history["gap_iteration"] == sorted(history["gap_iteration"])
    assert history["gap_iteration"][-1] == result.n_iter


def test_warm_started_solves_go_through_the_float32_phase_and_hand_on_float64():
    problem = _regression()
    options = path_options(problem, SolverOptions(tol=TOL))
    first, warm = solve_admm_from(problem, options, None)
    assert warm.x.dtype == torch.float64 and warm.multipliers.dtype == torch.float64
    at_lam = dataclasses.replace(problem, lam=0.5 * problem.lam)
    result, next_warm = solve_admm_from(at_lam, options, warm)
    reference = solve_cvxpy(at_lam, SolverOptions())
    assert first.status is Status.OPTIMAL
    _assert_certified_against(result, reference, TOL)
    assert result.history["float32_iterations"][0] > 0
    assert next_warm.x.dtype == torch.float64


def test_targets_beyond_float32_range_are_solved_in_float64_from_zero():
    problem = _regression(n=100, d=3, n_patterns=10)
    # y and lam times 1e39 (y overflows float32): the same program, F times 1e78; rho fixed
    # at the unscaled default, under which the ADMM's iterates scale with y
    scale = 1e39
    big = dataclasses.replace(problem, y=problem.y * scale, lam=problem.lam * scale)
    options = SolverOptions(tol=TOL, rho=problem.lam)
    plain = solve_admm(big, dataclasses.replace(options, mixed_precision=False))
    result = solve_admm(big, options)
    assert plain.status is Status.OPTIMAL and result.status is Status.OPTIMAL
    # the float32 phase stops NUMERICAL at its first check; float64 starts afresh
    assert result.history["float32_iterations"] == [25.0]
    assert result.n_iter == plain.n_iter + 25
    assert result.objective == plain.objective and result.bound == plain.bound
    reference = solve_admm(problem, dataclasses.replace(options, mixed_precision=False))
    assert result.objective == pytest.approx(reference.objective * scale ** 2, rel=10 * TOL)


def test_float32_phase_only_from_a_size(monkeypatch):
    monkeypatch.undo()  # the module's size rule
    options = SolverOptions(tol=TOL)
    assert not uses_float32_phase(_regression(n=900, n_patterns=20), options)  # P n = 18 000
    assert uses_float32_phase(_regression(n=1500, n_patterns=20), options)  # P n = 30 000
    assert not uses_float32_phase(_regression(n=1500, n_patterns=20),
                                  SolverOptions(tol=TOL, mixed_precision=False))


def test_float32_phase_only_for_float64_data_and_loose_tol():
    problem = _regression()
    tight = solve_admm(problem, SolverOptions(tol=1e-6))
    assert tight.status is Status.OPTIMAL and "float32_iterations" not in tight.history
    single = ConvexReLUProblem(problem.X.float(), problem.y.float(), problem.D.float(),
                               problem.loss, problem.lam)
    result = solve_admm(single, SolverOptions(tol=TOL))
    assert result.status is Status.OPTIMAL and "float32_iterations" not in result.history
    assert result.v.dtype == torch.float32


@pytest.mark.cuda
def test_float32_phase_on_cuda():
    problem = _regression()
    X, y = problem.X[:, :-1].numpy(), problem.y.numpy()
    gpu_problem = ConvexReLUProblem.from_data(X, y, lam=problem.lam, n_patterns=20,
                                              random_state=0, device="cuda")
    result = solve_admm(gpu_problem, SolverOptions(tol=TOL))
    cpu = solve_admm(problem, SolverOptions(tol=TOL))
    assert result.status is Status.OPTIMAL and result.history["float32_iterations"][0] > 0
    assert result.v.device.type == "cuda" and result.v.dtype == torch.float64
    assert result.objective == pytest.approx(cpu.objective, rel=10 * TOL)


def test_mixed_precision_must_be_a_flag():
    with pytest.raises(InputTypeError, match="mixed_precision"):
        solve_admm(_regression(n=30), SolverOptions(tol=TOL, mixed_precision="yes"))
