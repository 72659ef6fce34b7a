"""ADMM against the independent cvxpy model on tiny data with every pattern (global)."""

import warnings

import numpy as np
import pytest
import torch

from certopt.convexnn.admm import solve_admm, symmetric_matvec
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.core.errors import ConvergenceWarning
from certopt.core.result import Status

LAM = 0.05
MAX_ITER = {"squared": 4000, "hinge": 6000, "logistic": 4000}  # enough for 1e-4 here


def _tiny(loss, n=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    y = np.sin(2.0 * X[:, 0]) + X[:, 1]
    if loss != "squared":
        y = np.where(y > 0.3, 1.0, -1.0)
    return ConvexReLUProblem.from_data(X, y, lam=LAM, loss=loss, n_patterns="all")


@pytest.fixture(scope="module", params=["squared", "hinge", "logistic"])
def solved(request):
    problem = _tiny(request.param)
    reference = solve_cvxpy(problem, SolverOptions())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        admm = solve_admm(problem, SolverOptions(tol=1e-7, max_iter=MAX_ITER[request.param]))
    return problem, reference, admm


def test_admm_reaches_the_cvxpy_optimum_within_1e_4(solved):
    problem, reference, admm = solved
    assert problem.is_global and admm.is_global
    assert reference.status is Status.OPTIMAL
    assert reference.gap <= 1e-6 * reference.objective  # the reference certifies itself
    assert admm.objective == pytest.approx(reference.objective, rel=1e-4)


def test_certificate_is_sound_and_F_equals_G(solved):
    problem, reference, admm = solved
    for result in (reference, admm):
        assert result.lower_bound <= result.objective
        assert result.lower_bound <= reference.objective + 1e-9
        # F of the returned network equals G(v, w) up to the cone residual
        assert result.objective == pytest.approx(result.convex_objective, rel=1e-5)
        U, alpha = problem.network(result.v, result.w)
        assert problem.nonconvex_objective(U, alpha) == result.objective
    assert admm.gap <= 1e-3 * admm.objective


def test_no_adam_run_beats_the_global_optimum(solved):
    problem, reference, _ = solved
    X, y = problem.X, problem.y
    for width in (1, 4, 12):
        for seed in range(1):
            torch.manual_seed(seed)
            U = torch.randn(width, X.shape[1], dtype=torch.float64, requires_grad=True)
            alpha = torch.randn(width, dtype=torch.float64, requires_grad=True)
            optimizer = torch.optim.Adam([U, alpha], lr=0.02)
            for _ in range(400):
                optimizer.zero_grad()
                F = problem.loss.value(problem.network_output(U, alpha, X), y) \
                    + 0.5 * problem.lam * ((U ** 2).sum() + (alpha ** 2).sum())
                F.backward()
                optimizer.step()
            assert problem.nonconvex_objective(U.detach(), alpha.detach()) \
                >= reference.lower_bound - 1e-12


def test_gap_shrinks_with_tol():
    problem = _tiny("squared", seed=1)
    gaps = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for tol in (1e-2, 1e-4, 1e-6):
            result = solve_admm(problem, SolverOptions(tol=tol, max_iter=3000))
            assert result.lower_bound <= result.objective
            gaps.append(result.gap)
    assert gaps[0] > gaps[1] > gaps[2]


def test_max_iter_gives_status_and_warning_not_an_error():
    problem = _tiny("hinge")
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        result = solve_admm(problem, SolverOptions(tol=1e-12, max_iter=15))
    assert result.status is Status.MAX_ITER and result.n_iter == 15
    assert result.lower_bound <= result.objective


def test_sampled_program_bound_says_it_is_not_global():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((30, 4)), rng.standard_normal(30)
    problem = ConvexReLUProblem.from_data(X, y, lam=0.05, n_patterns=10, random_state=0)
    result = solve_admm(problem, SolverOptions(tol=1e-6, max_iter=5000))
    reference = solve_cvxpy(problem, SolverOptions())
    assert not result.is_global
    assert result.lower_bound <= reference.objective + 1e-9
    assert result.objective == pytest.approx(reference.objective, rel=1e-4)


@pytest.mark.cuda
def test_admm_runs_on_cuda():
    problem = _tiny("squared")
    cpu = solve_admm(problem, SolverOptions(tol=1e-7, max_iter=3000))
    X, y = problem.X.cpu().numpy()[:, :-1], problem.y.cpu().numpy()
    gpu_problem = ConvexReLUProblem.from_data(X, y, lam=LAM, n_patterns="all", device="cuda")
    gpu = solve_admm(gpu_problem, SolverOptions(tol=1e-7, max_iter=3000))
    assert gpu.v.device.type == "cuda"
    assert gpu.objective == pytest.approx(cpu.objective, rel=1e-4)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_over_relaxation_needs_fewer_iterations_and_keeps_the_certificate(loss, monkeypatch):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 3))
    y = np.maximum(X @ rng.standard_normal(3), 0.0) + 0.1 * rng.standard_normal(40)
    if loss != "squared":
        y = np.where(y > np.median(y), 1.0, -1.0)
    problem = ConvexReLUProblem.from_data(X, y, lam=0.05, loss=loss, n_patterns=10,
                                          random_state=0)
    reference = solve_cvxpy(problem, SolverOptions())
    options = SolverOptions(tol=1e-5, max_iter=20_000, anderson_memory=0, adaptive_rho=False)
    relaxed = solve_admm(problem, options)
    monkeypatch.setattr("certopt.convexnn.admm.RELAXATION", 1.0)
    plain = solve_admm(problem, options)
    assert relaxed.status is Status.OPTIMAL and plain.status is Status.OPTIMAL
    assert relaxed.n_iter < plain.n_iter
    # the relaxed multipliers still certify: a valid bound, close to the cvxpy optimum
    assert relaxed.objective == pytest.approx(reference.objective, rel=1e-4)
    assert relaxed.lower_bound <= reference.objective + 1e-9
    assert relaxed.gap <= 1e-3 * relaxed.objective


def _small_regression(loss="squared", n=40, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = np.maximum(X @ rng.standard_normal(3), 0.0) + 0.1 * rng.standard_normal(n)
    if loss != "squared":
        y = np.where(y > np.median(y), 1.0, -1.0)
    return ConvexReLUProblem.from_data(X, y, lam=0.05, loss=loss, n_patterns=10,
                                       random_state=0)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_anderson_acceleration_needs_fewer_iterations_to_the_cvxpy_optimum(loss):
    problem = _small_regression(loss)
    reference = solve_cvxpy(problem, SolverOptions())
    plain = solve_admm(problem, SolverOptions(tol=1e-6, max_iter=20_000, anderson_memory=0,
                                              adaptive_rho=False))
    fast = solve_admm(problem, SolverOptions(tol=1e-6, max_iter=20_000, anderson_memory=10,
                                             adaptive_rho=False))
    assert plain.status is Status.OPTIMAL and fast.status is Status.OPTIMAL
    assert fast.n_iter <= 0.75 * plain.n_iter  # measured: 610 vs 2680 (squared), 610 vs 1020
    assert fast.objective == pytest.approx(reference.objective, rel=1e-4)
    assert fast.lower_bound <= reference.objective + 1e-9
    assert fast.gap <= 1e-4 * fast.objective


@pytest.mark.parametrize("loss", ["squared", "hinge", "logistic"])
def test_adaptive_rho_keeps_the_optimum_and_a_valid_certificate(loss):
    problem = _small_regression(loss)
    reference = solve_cvxpy(problem, SolverOptions())
    result = solve_admm(problem, SolverOptions(tol=1e-6, max_iter=20_000, adaptive_rho=True))
    assert result.status is Status.OPTIMAL
    assert len(set(result.history["rho"])) > 1  # rho did change (measured: 2 or 3 values)
    assert result.objective == pytest.approx(reference.objective, rel=1e-4)
    assert result.lower_bound <= reference.objective + 1e-9
    assert result.gap <= 1e-4 * result.objective


@pytest.mark.parametrize("weight, cone_weight", [(1.0, 1.0), (0.02, 1.0), (0.3, 2.0 ** 0.5)])
def test_direct_and_cg_u_solves_equal_a_dense_solve(weight, cone_weight):
    """Both u-solvers against numpy's solve of the explicit (w F^T F + I + G^T G) u = rhs,
    G scaled by the cone weight."""
    from certopt.convexnn.admm import _ConjugateGradientSolve, _DirectSolve, _Operators

    problem = _small_regression(n=30)
    X, D = problem.X.numpy(), problem.D.numpy()
    P, n, d = D.shape[0], X.shape[0], X.shape[1]
    F = np.hstack([D[i][:, None] * X for i in range(P)] + [-D[i][:, None] * X for i in range(P)])
    G = np.zeros((2 * P * n, 2 * P * d))
    for j in range(2):
        for i in range(P):
            row, col = (j * P + i) * n, (j * P + i) * d
            G[row:row + n, col:col + d] = cone_weight * (2.0 * D[i] - 1.0)[:, None] * X
    matrix = weight * F.T @ F + np.eye(2 * P * d) + G.T @ G
    rhs = np.random.default_rng(0).standard_normal((2, P, d))
    expected = np.linalg.solve(matrix, rhs.reshape(-1)).reshape(2, P, d)
    ops = _Operators(problem.X, problem.D, cone_weight)
    for solver in (_DirectSolve(ops), _ConjugateGradientSolve(ops, tol=1e-13)):
        solver.set_weight(weight)
        u, XU = solver.solve(torch.from_numpy(rhs))
        np.testing.assert_allclose(u.numpy(), expected, rtol=0, atol=1e-9 * np.abs(expected).max())
        np.testing.assert_allclose(XU.numpy(), expected @ X.T, rtol=0,
                                   atol=1e-9 * np.abs(expected @ X.T).max())


@pytest.mark.parametrize("loss, cone_weight",
                         [("squared", 2.0), ("hinge", 2.0), ("squared", 0.5 ** 0.5)])
def test_cone_weight_keeps_the_optimum_and_a_valid_certificate(loss, cone_weight, monkeypatch):
    from certopt.convexnn import admm

    problem = _small_regression(loss)
    reference = solve_cvxpy(problem, SolverOptions())
    certified = []

    def certify_without_refit(*args, **kwargs):  # the solver's own multipliers, unrefitted
        certified.append(kwargs)
        return admm_certify(*args, **{**kwargs, "nnls_steps": 0})

    admm_certify = admm.certify
    monkeypatch.setattr(admm, "certify", certify_without_refit)
    result = solve_admm(problem, SolverOptions(tol=1e-6, max_iter=20_000,
                                               cone_weight=cone_weight))
    assert result.status is Status.OPTIMAL
    # mu = -gamma rho c: with the factor gamma the dual constraints hold to the tolerance
    kwargs = certified[-1]
    dual = problem.loss.project_dual(kwargs["duals"][0], problem.y)
    worst = problem.dual_constraint_norms(dual, kwargs["mu"].clamp(min=0),
                                          kwargs["nu"].clamp(min=0)).max()
    assert float(worst) <= problem.lam * (1 + 1e-3)
    assert result.objective == pytest.approx(reference.objective, rel=1e-4)
    assert result.lower_bound <= reference.objective + 1e-9
    assert result.gap <= 1e-4 * result.objective


def test_cg_admm_equals_direct_admm_and_cvxpy(monkeypatch):
    problem = _small_regression("logistic")
    reference = solve_cvxpy(problem, SolverOptions())
    direct = solve_admm(problem, SolverOptions(tol=1e-7, max_iter=20_000, linear_solver="direct"))
    from certopt.convexnn import admm

    built = []

    class RecordedCG(admm._ConjugateGradientSolve):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(admm, "_ConjugateGradientSolve", RecordedCG)
    monkeypatch.setattr(admm, "DIRECT_MAX_SAMPLES", 10)  # n = 40: "auto" must pick CG
    cg = solve_admm(problem, SolverOptions(tol=1e-7, max_iter=20_000, linear_solver="auto"))
    assert len(built) == 1 and built[0].steps > 0
    assert cg.status is Status.OPTIMAL
    assert cg.objective == pytest.approx(direct.objective, rel=1e-6)
    assert cg.objective == pytest.approx(reference.objective, rel=1e-4)
    assert cg.lower_bound <= reference.objective + 1e-9


def test_bad_acceleration_and_solver_options_are_clear_errors():
    from certopt.core.errors import InputValueError

    with pytest.raises(InputValueError, match="linear_solver"):
        solve_admm(_small_regression(), SolverOptions(linear_solver="lu"))
    with pytest.raises(InputValueError, match="anderson_memory"):
        solve_admm(_small_regression(), SolverOptions(anderson_memory=-1))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputValueError, match="cone_weight"):
            solve_admm(_small_regression(), SolverOptions(cone_weight=bad))


@pytest.mark.parametrize("loss", ["squared", "hinge"])
@pytest.mark.parametrize("cone_weight", [1.0, 2.0])
@pytest.mark.parametrize("linear_solver", ["direct", "cg"])
def test_one_step_equals_the_dense_over_relaxed_admm(loss, cone_weight, linear_solver):
    """T(p) of the fast step against the textbook map p + alpha (A u - x), x = prox(p),
    u = argmin ||A u - (2 x - p)|| with A = (F; I; gamma G) as dense matrices (for the
    folded squared loss A = (I; gamma G) and the loss enters the normal equations)."""
    from certopt.convexnn.admm import _FixedPointMap

    problem = _small_regression(loss, n=30)
    sigma = float(torch.linalg.matrix_norm(problem.X, ord=2))
    T = _FixedPointMap(problem, SolverOptions(cone_weight=cone_weight, tol=1e-12,
                                              linear_solver=linear_solver), sigma)
    rho, alpha = 0.37, 1.8
    T.set_rho(rho)
    X, D, y = (problem.X / sigma).numpy(), problem.D.numpy(), problem.y.numpy()
    (P, n), d = D.shape, X.shape[1]
    F = np.hstack([D[i][:, None] * X for i in range(P)] + [-D[i][:, None] * X for i in range(P)])
    G = np.zeros((2 * P * n, 2 * P * d))
    for block in range(2 * P):
        signs = 2.0 * D[block % P] - 1.0
        G[block * n:(block + 1) * n, block * d:(block + 1) * d] = cone_weight * signs[:, None] * X
    p = torch.randn(sum(T.sizes), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, reflection = T.prox(p).numpy(), (2.0 * T.prox(p) - p).numpy()
    if loss == "squared":
        c_F = 1.0 / (n * rho)
        A = np.vstack([np.eye(2 * P * d), G])
        u = np.linalg.solve(c_F * F.T @ F + A.T @ A, c_F * F.T @ y + A.T @ reflection)
    else:
        A = np.vstack([F, np.eye(2 * P * d), G])
        u = np.linalg.solve(A.T @ A, A.T @ reflection)
    expected = p.numpy() + alpha * (A @ u - x)
    p_next, u_step, _ = T.step(p, alpha)
    np.testing.assert_allclose(p_next.numpy(), expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    np.testing.assert_allclose(u_step.numpy().ravel(), u, rtol=0, atol=1e-9 * np.abs(u).max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symmetric_matvec_equals_the_dense_product(dtype):
    generator = torch.Generator().manual_seed(7)
    factor = torch.randn(30, 30, generator=generator, dtype=torch.float64)
    A = (factor @ factor.T + torch.eye(30, dtype=torch.float64)).to(dtype)
    x = torch.randn(30, generator=generator, dtype=torch.float64).to(dtype)
    A_before, x_before = A.clone(), x.clone()
    result = symmetric_matvec(A, x)
    reference = (A.double() @ x.double()).to(dtype)
    assert result.dtype == dtype and result.shape == (30,)
    scale = float(reference.abs().max())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert float((result - reference).abs().max()) <= tol * scale
    assert torch.equal(A, A_before) and torch.equal(x, x_before)
    strided = symmetric_matvec(torch.cat([A, A], dim=1)[:, :30], x)  # not contiguous: A @ x
    assert float((strided - reference).abs().max()) <= tol * scale
