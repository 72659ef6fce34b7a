"""Sampled convex programs (section 6): FISTA vs a cvxpy gated group lasso, and the ReLU net."""

import dataclasses
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from certopt.convexnn import sampled as sampled_module
from certopt.convexnn.admm import solve_admm
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.convexnn.sampled import (
    ConePenalisedProgram,
    GatedProgram,
    fista,
    solve_gated,
    solve_sampled,
)
from certopt.core.errors import ConvergenceWarning
from certopt.core.result import Status


def gated_cvxpy(problem: ConvexReLUProblem) -> float:
    """Optimal value of the gated-ReLU group lasso, written directly in cvxpy."""
    X, D, y = problem.X.numpy(), problem.D.numpy(), problem.y.numpy()
    n = X.shape[0]
    U = cp.Variable((D.shape[0], X.shape[1]))
    pred = cp.sum(cp.multiply(D, U @ X.T), axis=0)
    data = {
        "squared": cp.sum_squares(pred - y) / (2 * n),
        "logistic": cp.sum(cp.logistic(-cp.multiply(y, pred))) / n,
        "hinge": cp.sum(cp.pos(1 - cp.multiply(y, pred))) / n,
    }[problem.loss.name]
    model = cp.Problem(cp.Minimize(data + problem.lam * cp.sum(cp.norm(U, 2, axis=1))))
    model.solve(solver="CLARABEL")
    return float(model.value)


def make_problem(loss: str, n: int = 60, n_patterns: int = 15, seed: int = 0
                 ) -> ConvexReLUProblem:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    target = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    y = target if loss == "squared" else np.sign(target)
    return ConvexReLUProblem.from_data(X, y, lam=1e-2, loss=loss, n_patterns=n_patterns,
                                       random_state=seed)


STEPS_BOUND = {"squared": 800, "logistic": 450}  # measured 420, 220; without momentum 4180, 1560


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_fista_solves_the_gated_program(loss):
    problem = make_problem(loss)
    program = GatedProgram(problem)
    start = problem.X.new_zeros(problem.n_patterns, problem.n_features)
    u, status, steps = fista(program, SolverOptions(max_iter=5000, tol=1e-8), start)
    assert status is Status.OPTIMAL
    assert steps <= STEPS_BOUND[loss]  # accelerated: plain proximal gradient needs far more
    value = problem.convex_objective(u, torch.zeros_like(u))  # the gated objective at u
    assert value == pytest.approx(gated_cvxpy(problem), rel=1e-6)


def test_hinge_gated_program_is_the_smoothed_group_lasso():
    problem = make_problem("hinge")
    width = sampled_module.GATED_HINGE_SMOOTHING
    u, status, _ = solve_gated(problem, SolverOptions(max_iter=5000, tol=1e-8))
    assert status is Status.OPTIMAL
    program = GatedProgram(problem)
    value = program.value(u) + program.penalty(u)
    # independent model: the Moreau envelope of max(0, 1 - m) of width mu is
    # huber(max(0, 1 - m), mu) / (2 mu), written directly in cvxpy
    X, D, y = problem.X.numpy(), problem.D.numpy(), problem.y.numpy()
    U = cp.Variable((D.shape[0], X.shape[1]))
    margin = cp.multiply(y, cp.sum(cp.multiply(D, U @ X.T), axis=0))
    smoothed = cp.sum(cp.huber(cp.pos(1 - margin), width)) / (2 * width * X.shape[0])
    model = cp.Problem(cp.Minimize(smoothed + problem.lam * cp.sum(cp.norm(U, 2, axis=1))))
    model.solve(solver="CLARABEL")
    assert value == pytest.approx(model.value, rel=1e-6)


def teacher_problem(n: int = 300, d: int = 10, n_patterns: int = 20, seed: int = 0,
                    loss: str = "squared") -> ConvexReLUProblem:
    """A 5-neuron ReLU teacher plus noise (the benchmark's data, smaller); hinge: its signs."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.maximum(X @ rng.standard_normal((d, 5)), 0.0) @ rng.standard_normal(5) / np.sqrt(d)
    y += 0.1 * rng.standard_normal(n)
    if loss == "hinge":
        y = np.where(y > np.median(y), 1.0, -1.0)
    return ConvexReLUProblem.from_data(X, y, lam=1e-2, loss=loss, n_patterns=n_patterns,
                                       random_state=seed)


def test_cone_penalised_gradient_matches_autograd():
    problem = make_problem("squared", n=40, n_patterns=6)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, problem.n_patterns, problem.n_features, generator=generator,
                    dtype=torch.float64)
    multipliers = torch.rand(2, problem.n_patterns, problem.n_samples, generator=generator,
                             dtype=torch.float64)
    penalty = 0.3
    value, gradient = ConePenalisedProgram(problem, multipliers, penalty).loss_and_gradient(x)

    def augmented(x):  # the round's smooth objective, written out
        pred = (problem.D * ((x[0] - x[1]) @ problem.X.T)).sum(dim=0)
        cones = problem.signs * (x @ problem.X.T)
        shifted = torch.relu(multipliers - penalty * cones)
        return (0.5 * (pred - problem.y).square().mean()
                + (shifted.square().sum() - multipliers.square().sum()) / (2 * penalty))

    leaf = x.clone().requires_grad_(True)
    expected = augmented(leaf)
    expected.backward()
    assert value == pytest.approx(float(expected.detach()), rel=1e-12)
    torch.testing.assert_close(gradient, leaf.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss, seed", [("squared", 0), ("squared", 1), ("hinge", 0)])
def test_cheap_path_is_certified_within_tol_of_the_cvxpy_optimum(loss, seed):
    problem = teacher_problem(seed=seed, loss=loss)
    tol = 0.02
    result = solve_sampled(problem, SolverOptions(max_iter=3000, tol=tol))
    reference = solve_cvxpy(problem, SolverOptions())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ADMM's F is within 1e-4 here even at max_iter
        admm = solve_admm(problem, SolverOptions(max_iter=3000, tol=1e-5))
    assert reference.status is Status.OPTIMAL
    # this instance is certified by the augmented-Lagrangian path, no ADMM
    assert result.residuals["admm_fallback"] == 0
    assert result.status is Status.OPTIMAL
    U, alpha = problem.network(result.v, result.w)
    assert result.objective == pytest.approx(problem.nonconvex_objective(U, alpha), rel=1e-12)
    # the certificate: a valid lower bound on the optimum (Clarabel's, to its accuracy) ...
    assert result.bound <= reference.objective + 1e-7
    # ... and F within tol of it, hence of the optimum and of the ADMM's F
    assert result.gap <= tol * abs(result.bound)
    assert result.objective <= (1 + tol) * reference.objective
    assert result.objective <= (1 + tol) * admm.objective


@pytest.mark.parametrize("loss", ["squared", "hinge"])
def test_status_is_optimal_only_with_a_certified_gap_or_the_admm(loss):
    problem = make_problem(loss, n=80, n_patterns=20)
    tol = 0.02
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = solve_sampled(problem, SolverOptions(max_iter=3000, tol=tol))
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if result.residuals["admm_fallback"] == 0:
        assert result.status is Status.OPTIMAL and not warned
        assert result.gap <= tol * abs(result.bound)
    else:
        most = sampled_module.AL_ROUNDS * -(-sampled_module.AL_INNER_ITER
                                            // sampled_module.AL_CHECK_ITER)
        assert 1 <= result.residuals["al_checks"] <= most
        # the ADMM's status: OPTIMAL, or another one announced by a warning
        assert result.status is Status.OPTIMAL or warned
        assert result.gap >= -1e-9 or result.residuals["cone_violation"] > 0
    reference = solve_cvxpy(problem, SolverOptions())
    assert result.bound <= reference.objective + 1e-7


def test_hinge_fallback_keeps_the_admm_certificate(monkeypatch):
    monkeypatch.setattr(sampled_module, "AL_ROUNDS", 0)
    problem = make_problem("hinge", n=80, n_patterns=20, seed=0)
    tol = 0.02
    result = solve_sampled(problem, SolverOptions(max_iter=5000, tol=tol))
    reference = solve_cvxpy(problem, SolverOptions())
    assert result.residuals["support_size"] == problem.n_patterns
    assert result.status is Status.OPTIMAL
    assert result.bound <= reference.objective + 1e-7
    # measured 0.5% (the gradient's bound alone: over 50%)
    assert result.gap <= tol * abs(result.bound)
    assert result.objective <= (1 + tol) * reference.objective


def test_admm_fallback_that_stops_early_says_so(monkeypatch):
    monkeypatch.setattr(sampled_module, "AL_ROUNDS", 0)
    problem = make_problem("squared", n=80, n_patterns=20)
    with pytest.warns(ConvergenceWarning, match="sampled: stopped"):
        result = solve_sampled(problem, SolverOptions(max_iter=20, tol=1e-8))
    assert result.status is Status.MAX_ITER
    assert result.residuals["admm_fallback"] == 1
    assert result.bound <= result.objective


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_admm_path_network_is_the_constrained_optimum_on_its_support(seed, monkeypatch):
    monkeypatch.setattr(sampled_module, "AL_ROUNDS", 0)  # the accurate path alone
    problem = make_problem("squared", n=80, n_patterns=20, seed=seed)
    options = SolverOptions(max_iter=5000, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampled = solve_sampled(problem, options)
        admm = solve_admm(problem, options)
    support = (torch.linalg.vector_norm(sampled.v, dim=1) > 0) | (
        torch.linalg.vector_norm(sampled.w, dim=1) > 0)
    restricted = dataclasses.replace(problem, D=problem.D[support])
    reference = solve_cvxpy(restricted, SolverOptions())
    U, alpha = problem.network(sampled.v, sampled.w)
    # objective_ is F of the returned ReLU network, never the gated objective
    assert sampled.objective == pytest.approx(problem.nonconvex_objective(U, alpha), rel=1e-12)
    assert sampled.objective >= sampled.residuals["gated_objective"]
    assert sampled.bound <= sampled.objective
    # the network is the constrained optimum on the support found (independent cvxpy model)
    assert sampled.objective == pytest.approx(reference.objective, rel=1e-4)
    # The issue asks for 2% of the ADMM's F on all the patterns; we assert 0.1%.  The
    # gated support alone missed patterns the ReLU optimum uses (F 0.1%, 16% and 3.6%
    # above the ADMM's on these seeds); the working set adds the patterns whose dual
    # constraint the network violates (measured now: ratio 1.0000 on all three).
    assert sampled.residuals["violated_patterns"] == 0
    assert sampled.objective == pytest.approx(admm.objective, rel=1e-3)


@pytest.mark.cuda
def test_fista_runs_on_cuda_like_on_cpu():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.sin(X[:, 0])
    options = SolverOptions(max_iter=2000, tol=1e-8)
    values = []
    for device in ("cpu", "cuda"):
        problem = ConvexReLUProblem.from_data(X, y, lam=1e-2, n_patterns=15, random_state=0,
                                              device=device)
        program = GatedProgram(problem)
        u, _, _ = fista(program, options, problem.X.new_zeros(15, problem.n_features))
        assert u.device.type == device
        values.append(program.value(u) + program.penalty(u))
    assert values[1] == pytest.approx(values[0], rel=1e-8)


@pytest.mark.cuda
def test_cheap_path_runs_on_cuda_like_on_cpu():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 10))
    y = np.maximum(X @ rng.standard_normal((10, 5)), 0.0) @ rng.standard_normal(5) / np.sqrt(10)
    results = []
    for device in ("cpu", "cuda"):
        problem = ConvexReLUProblem.from_data(X, y, lam=1e-2, n_patterns=20, random_state=0,
                                              device=device)
        result = solve_sampled(problem, SolverOptions(max_iter=3000, tol=0.02))
        assert result.v.device.type == device
        results.append(result)
    assert results[1].residuals["admm_fallback"] == results[0].residuals["admm_fallback"]
    assert results[1].objective == pytest.approx(results[0].objective, rel=1e-6)


def test_fista_in_float32_reaches_a_tight_tolerance():
    # the extrapolated image and a recomputed one differ by float32 round-off: the
    # sufficient-decrease test must allow for it (it once doubled the step's Lipschitz
    # estimate to inf and never returned)
    problem = teacher_problem()
    single = dataclasses.replace(problem, X=problem.X.float(), y=problem.y.float(),
                                 D=problem.D.float())
    start = single.X.new_zeros(single.n_patterns, single.n_features)
    u, status, steps = fista(GatedProgram(single), SolverOptions(max_iter=3000, tol=1e-6),
                             start)
    assert u.dtype == torch.float32 and status is Status.OPTIMAL
    reference, _, _ = fista(GatedProgram(problem), SolverOptions(max_iter=3000, tol=1e-6),
                            problem.X.new_zeros(problem.n_patterns, problem.n_features))
    program = GatedProgram(problem)
    value = program.value(u.double()) + program.penalty(u.double())
    assert value == pytest.approx(program.value(reference) + program.penalty(reference),
                                  rel=1e-4)


def test_max_iter_bounds_the_cheap_path_and_an_early_stop_says_so():
    problem = teacher_problem()
    with pytest.warns(ConvergenceWarning, match="sampled: stopped"):
        result = solve_sampled(problem, SolverOptions(max_iter=1, tol=0.02))
    assert result.status is Status.MAX_ITER and result.residuals["al_checks"] == 0
    assert result.n_iter <= 2            # one gated step, one ADMM iteration
    result = solve_sampled(problem, SolverOptions(max_iter=150, tol=0.02))
    assert result.n_iter <= 150 or result.residuals["admm_fallback"] == 1


def test_cheap_path_gives_up_after_patience_checks_without_progress(monkeypatch):
    """Relative gaps 0.5, 0.4, 0.45, 0.42, 0.41 (forced): the best is the second, so with
    a patience of 3 the fifth check is the last before the fallback."""
    gaps = iter([0.5, 0.4, 0.45, 0.42, 0.41, 0.3, 0.2])
    certify = sampled_module.certify

    def forced(*args, **kwargs):
        result = certify(*args, **kwargs)
        if kwargs.get("nnls_steps") != sampled_module.CHECK_NNLS_STEPS:
            return result                  # the fallback's own certificate
        bound = result.objective / (1 + next(gaps))
        return dataclasses.replace(result, bound=bound, gap=result.objective - bound)

    monkeypatch.setattr(sampled_module, "certify", forced)
    monkeypatch.setattr(sampled_module, "AL_PATIENCE", 3)
    problem = teacher_problem(n=120, d=5, n_patterns=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = solve_sampled(problem, SolverOptions(max_iter=5000, tol=0.02))
    assert result.residuals["al_checks"] == 5
    assert result.residuals["admm_fallback"] == 1


def test_fallback_on_part_of_the_patterns_keeps_a_tight_certificate():
    # the ADMM on the support records its dual point, a dual point of the full program
    # too; the gradients at the network alone gave a bound of 0.108 for F = 0.247
    problem = make_problem("hinge", n=80, n_patterns=20, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = solve_sampled(problem, SolverOptions(max_iter=5000, tol=1e-4))
    reference = solve_cvxpy(problem, SolverOptions())
    assert result.residuals["admm_fallback"] == 1
    assert result.residuals["support_size"] < problem.n_patterns
    assert result.bound <= reference.objective + 1e-7
    assert result.gap <= 1e-2 * result.bound          # measured 0.5%
