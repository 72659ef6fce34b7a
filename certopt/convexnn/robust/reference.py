"""The robust convex program of section 7 as a plain cvxpy model.

The independent reference for the robust ADMM and ``solver="cvxpy"`` for
small problems.  Variables V, W (P, d); with the (P, n) pattern matrix D,
S = 2D - 1 and the feature columns f (all but the bias column)::

    min  mean_k l_wc(y_k, zhat_k, eps ||r_k||_1) + lam sum_i (||V_i|| + ||W_i||)
    s.t. S_ik (X V_i)_k >= eps ||V_{i,f}||_1,  S_ik (X W_i)_k >= eps ||W_{i,f}||_1,
    zhat_k = sum_i D_ik x_k^T (V_i - W_i),  r_k = sum_i D_ik (V_i - W_i)_f,

with the worst-case loss l_wc written directly in cvxpy: hinge
``pos(1 - y zhat + spread)``, squared ``(|y - zhat| + spread)^2 / 2``.
"""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import torch

from certopt.convexnn.problem import SolverOptions
from certopt.convexnn.robust.problem import RobustProblem, RobustResult, make_robust_result
from certopt.core import cvx


def robust_cvxpy_model(problem: RobustProblem) -> tuple[cp.Problem, cp.Variable, cp.Variable]:
    """The cvxpy model of ``problem`` and its variables (V, W)."""
    base = problem.base
    X = base.X.detach().cpu().double().numpy()
    y = base.y.detach().cpu().double().numpy()
    D = base.D.detach().cpu().double().numpy().T                     # (n, P)
    f = problem.features.detach().cpu().numpy()
    n, d = X.shape
    P = D.shape[1]
    eps = problem.eps
    V, W = cp.Variable((P, d)), cp.Variable((P, d))
    zhat = cp.sum(cp.multiply(D, X @ (V - W).T), axis=1)
    r = D @ (V - W)[:, f]
    spread = eps * cp.norm1(r, axis=1)
    if problem.base.loss.name == "hinge":
        losses = cp.pos(1 - cp.multiply(y, zhat) + spread)
    else:
        losses = 0.5 * cp.square(cp.abs(y - zhat) + spread)
    loss = cp.sum(losses) / n
    decay = base.lam * (cp.sum(cp.norm(V, 2, axis=1)) + cp.sum(cp.norm(W, 2, axis=1)))
    S = 2 * D - 1
    ones = np.ones((n, 1))
    constraints = [
        cp.multiply(S, X @ G.T)
        >= eps * ones @ cp.reshape(cp.norm1(G[:, f], axis=1), (1, P), order="C")
        for G in (V, W)
    ]
    return cp.Problem(cp.Minimize(loss + decay), constraints), V, W


def solve_robust_cvxpy(problem: RobustProblem, options: SolverOptions) -> RobustResult:
    """Solve the robust program with cvxpy (Clarabel by default).

    ``objective`` is re-measured on the returned (V, W) (certified robust
    objective of its network); ``bound`` is the solver's optimal value, a
    lower bound up to the solver's own tolerance (an interior-point solver
    gives no separate certificate here).
    """
    model, V, W = robust_cvxpy_model(problem)
    status, elapsed = cvx.solve(model, "socp", options.cvxpy_solver, verbose=options.verbose)
    X = problem.base.X

    def tensor(var: cp.Variable) -> torch.Tensor:
        value = var.value if var.value is not None else np.zeros(var.shape)
        return torch.as_tensor(value, dtype=X.dtype, device=X.device)

    value = float(model.value) if model.value is not None else math.nan
    return make_robust_result(problem, tensor(V), tensor(W), bound=value, solver="cvxpy",
                              status=status, n_iter=0, solve_time=elapsed)
