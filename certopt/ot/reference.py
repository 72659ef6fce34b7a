"""cvxpy models of the OT problems: the ``method="cvxpy"`` option and the test reference.

Each model is a plain transcription of the math note (``shared/math/ot.md``),
independent of the fast solvers.  Inputs are numpy arrays; the fast solvers
never import this module at load time.
"""

from __future__ import annotations

from typing import NamedTuple

import cvxpy as cp
import numpy as np

from certopt.core.cvx import solve
from certopt.core.result import Status


class ReferenceSolution(NamedTuple):
    """A cvxpy solution: plan, marginal multipliers, optimal value, status, seconds."""

    plan: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    value: float
    status: Status
    seconds: float


def class_based_reference(
    a: np.ndarray,
    b: np.ndarray,
    C: np.ndarray,
    labels: np.ndarray,
    reg: float,
    gamma: float = 0.0,
    solver: str | None = None,
) -> ReferenceSolution:
    """Class-based OT (math note section 3) as a second-order cone program.

        min_{T >= 0, T 1 = a, T^T 1 = b}  <C, T> + reg * sum_j sum_c ||T[I_c, j]||_2
                                          + (gamma/2) ||T||_F^2 ,

    with ``I_c`` the rows whose ``labels`` equal c.  ``gamma = 0`` is allowed.
    ``alpha``, ``beta`` are the multipliers of the two marginal constraints in
    the sign convention of the Lagrangian ``<C,T> + ... + <alpha, a - T 1> +
    <beta, b - T^T 1>``.
    """
    n, m = C.shape
    plan = cp.Variable((n, m), nonneg=True)
    group_terms = [cp.sum(cp.norm(plan[np.flatnonzero(labels == c), :], 2, axis=0))
                   for c in np.unique(labels)]
    objective = cp.sum(cp.multiply(C, plan)) + reg * cp.sum(cp.hstack(group_terms))
    if gamma > 0:
        objective = objective + (gamma / 2) * cp.sum_squares(plan)
    rows = cp.sum(plan, axis=1) == a
    cols = cp.sum(plan, axis=0) == b
    problem = cp.Problem(cp.Minimize(objective), [rows, cols])
    status, seconds = solve(problem, "socp", solver)
    if plan.value is None:
        nan_plan = np.full((n, m), np.nan)
        return ReferenceSolution(nan_plan, np.full(n, np.nan), np.full(m, np.nan),
                                 float("nan"), status, seconds)
    return ReferenceSolution(np.asarray(plan.value), -np.asarray(rows.dual_value),
                             -np.asarray(cols.dual_value), float(problem.value), status,
                             seconds)


def quadratic_reference(
    a: np.ndarray,
    b: np.ndarray,
    C: np.ndarray,
    reg: float,
    support: np.ndarray | None = None,
    solver: str | None = None,
) -> ReferenceSolution:
    """Quadratically regularised OT (math note, section 1) as a QP::

        min_{T >= 0, T 1 = a, T^T 1 = b}  <C, T> + (reg/2) ||T||_F^2,

    optionally with ``T_ij = 0`` wherever the boolean ``support`` (n, m) is
    False (the convex problem the sparse-OT repair solves).  Multipliers in
    the sign convention of :func:`class_based_reference`.
    """
    n, m = C.shape
    plan = cp.Variable((n, m), nonneg=True)
    objective = cp.sum(cp.multiply(C, plan)) + (reg / 2) * cp.sum_squares(plan)
    rows = cp.sum(plan, axis=1) == a
    cols = cp.sum(plan, axis=0) == b
    constraints = [rows, cols]
    if support is not None:
        constraints.append(cp.multiply(~np.asarray(support, dtype=bool), plan) == 0)
    problem = cp.Problem(cp.Minimize(objective), constraints)
    status, seconds = solve(problem, "qp", solver)
    if plan.value is None:
        return ReferenceSolution(np.full((n, m), np.nan), np.full(n, np.nan),
                                 np.full(m, np.nan), float("nan"), status, seconds)
    return ReferenceSolution(np.asarray(plan.value), -np.asarray(rows.dual_value),
                             -np.asarray(cols.dual_value), float(problem.value), status,
                             seconds)
