"""The convex program of section 2 written plainly in cvxpy (``solver="cvxpy"``).

    minimize   L(z) + lam sum_i (||v_i|| + ||w_i||)
    subject to z = sum_i D_i X (v_i - w_i),  S_i X v_i >= 0,  S_i X w_i >= 0

It is the independent reference of the tests and usable on small problems.
The certificate reuses the multipliers cvxpy returns (of z = ... and of the
cone constraints) through :func:`certopt.convexnn.certificate.certify`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable

import cvxpy as cp
import numpy as np
import torch

from certopt.convexnn.certificate import certify, within_tolerance
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.result import ConvexNNResult
from certopt.core.cvx import solve
from certopt.core.errors import ConvergenceWarning
from certopt.core.result import Status

CVXPY_LOSSES: dict[str, Callable[[cp.Expression, np.ndarray], cp.Expression]] = {
    "squared": lambda z, y: 0.5 * cp.sum_squares(z - y) / y.shape[0],
    "hinge": lambda z, y: cp.sum(cp.pos(1 - cp.multiply(y, z))) / y.shape[0],
    "logistic": lambda z, y: cp.sum(cp.logistic(-cp.multiply(y, z))) / y.shape[0],
}


def build_model(problem: ConvexReLUProblem
                ) -> tuple[cp.Problem, cp.Variable, cp.Variable, list[cp.Constraint]]:
    """The cvxpy model; returns (model, V, W, [z-equation, cone of V, cone of W])."""
    X = problem.X.detach().cpu().double().numpy()
    y = problem.y.detach().cpu().double().numpy()
    D = problem.D.detach().cpu().double().numpy()
    signs = 2.0 * D - 1.0
    P, d = problem.n_patterns, problem.n_features
    V, W = cp.Variable((P, d)), cp.Variable((P, d))
    z = cp.Variable(X.shape[0])
    prediction = cp.sum(cp.multiply(D.T, X @ (V - W).T), axis=1)
    constraints = [
        z == prediction,
        cp.multiply(signs.T, X @ V.T) >= 0,
        cp.multiply(signs.T, X @ W.T) >= 0,
    ]
    penalty = cp.sum(cp.norm(V, 2, axis=1)) + cp.sum(cp.norm(W, 2, axis=1))
    objective = CVXPY_LOSSES[problem.loss.name](z, y) + problem.lam * penalty
    return cp.Problem(cp.Minimize(objective), constraints), V, W, constraints


def solve_cvxpy(problem: ConvexReLUProblem, options: SolverOptions) -> ConvexNNResult:
    """Solve the program with cvxpy (Clarabel by default) and certify the answer.

    Groups with ||v_i|| <= 1e-9 max_j ||v_j|| are set to zero (interior-point
    solvers return tiny nonzero groups).  The status is OPTIMAL only when the
    certificate proves the relative gap <= ``options.tol``, as for every solver
    (INACCURATE, with a :class:`ConvergenceWarning`, when the solver's optimum
    certifies less).  Dual candidates: the gradient of L
    at the prediction and +-(multiplier of z = ...), whichever bounds best.
    """
    start = time.perf_counter()
    model, V, W, constraints = build_model(problem)
    status, _ = solve(model, "socp", options.cvxpy_solver, verbose=options.verbose)
    like = {"dtype": problem.X.dtype, "device": problem.X.device}
    P, d = problem.n_patterns, problem.n_features
    if V.value is None:
        zero = torch.zeros(P, d, **like)
        v, w = zero, zero.clone()
        duals, mu, nu = [torch.zeros(problem.n_samples, **like)], None, None
        status = Status.NUMERICAL if status is Status.OPTIMAL else status
    else:
        v, w = (torch.as_tensor(var.value, **like) for var in (V, W))
        _drop_tiny_groups(v, w)
        duals = _dual_candidates(problem, v, w, constraints[0])
        mu, nu = (torch.as_tensor(c.dual_value, **like).T if c.dual_value is not None
                  else None for c in constraints[1:])
        if mu is None or nu is None:
            mu = nu = None
    n_iter = int(getattr(model.solver_stats, "num_iters", None) or 0)
    result = certify(problem, v, w, duals=duals, mu=mu, nu=nu, status=status, n_iter=n_iter,
                     solve_time=time.perf_counter() - start, solver="cvxpy")
    if status is Status.OPTIMAL and not within_tolerance(result.objective, result.bound,
                                                         options.tol):
        warnings.warn(f"cvxpy: the solver's answer is certified only to a relative gap of "
                      f"{result.gap / abs(result.bound):.2e}, above tol={options.tol}",
                      ConvergenceWarning, stacklevel=2)
        result = dataclasses.replace(result, status=Status.INACCURATE)
    return result


def solve_gated_cvxpy(problem: ConvexReLUProblem, options: SolverOptions
                      ) -> tuple[torch.Tensor, Status, list[torch.Tensor], int]:
    """The gated program of ``problem`` (its D as fixed gates, no cones) by cvxpy:

        minimize  L(z) + lam sum_i ||u_i||   subject to  z = sum_i D_i X u_i

    (an SOCP; Clarabel by default).  Returns (u (P, d), the solver's status,
    dual candidates l: +-(multiplier of z = ...) and the loss gradient at the
    prediction, the solver's iterations).  Groups with ||u_i|| <= 1e-9 max_j
    ||u_j|| are set to zero.  The caller certifies u with the candidates.
    """
    X = problem.X.detach().cpu().double().numpy()
    y = problem.y.detach().cpu().double().numpy()
    D = problem.D.detach().cpu().double().numpy()
    U, z = cp.Variable((problem.n_patterns, problem.n_features)), cp.Variable(X.shape[0])
    equation = z == cp.sum(cp.multiply(D.T, X @ U.T), axis=1)
    objective = CVXPY_LOSSES[problem.loss.name](z, y) + problem.lam * cp.sum(cp.norm(U, 2, axis=1))
    model = cp.Problem(cp.Minimize(objective), [equation])
    status, _ = solve(model, "socp", options.cvxpy_solver, verbose=options.verbose)
    like = {"dtype": problem.X.dtype, "device": problem.X.device}
    n_iter = int(getattr(model.solver_stats, "num_iters", None) or 0)
    if U.value is None:
        zero = torch.zeros(problem.n_patterns, problem.n_features, **like)
        return zero, (Status.NUMERICAL if status is Status.OPTIMAL else status), [], n_iter
    u = torch.as_tensor(U.value, **like)
    _drop_tiny_groups(u)
    return u, status, _dual_candidates(problem, u, torch.zeros_like(u), equation), n_iter


def _drop_tiny_groups(*blocks: torch.Tensor) -> None:
    """Zero, in place, the groups (rows) of ``blocks`` whose norm is <= 1e-9 times the
    largest group norm of them all: interior-point solvers return tiny nonzero groups."""
    norms = [torch.linalg.vector_norm(block, dim=1) for block in blocks]
    largest = float(torch.cat(norms).max())
    for block, norm in zip(blocks, norms):
        block[norm <= 1e-9 * largest] = 0.0


def _dual_candidates(problem: ConvexReLUProblem, v: torch.Tensor, w: torch.Tensor,
                     equation: cp.Constraint) -> list[torch.Tensor]:
    """Dual candidates l for the certificate: the loss gradient at the prediction of
    (v, w) and +-(cvxpy's multiplier of the equation z = ...), when it returned one."""
    duals = [problem.loss.gradient(problem.predict_convex(v, w), problem.y)]
    if equation.dual_value is not None:
        multiplier = torch.as_tensor(equation.dual_value, dtype=v.dtype, device=v.device)
        duals += [multiplier, -multiplier]
    return duals
