"""Feasibility repair: re-solve the convex QP on the support a sparse solve found.

The semi-dual plan meets ``b`` exactly but ``a`` only approximately (with
``k = 1`` some rows can miss their whole mass); the dual plan misses both a
little.  Fixing the support ``S`` (each column's ``k`` candidate rows, the
top-k set of the final potentials) turns the problem into the convex QP::

    min  <C, T> + (reg/2) ||T||_F^2   s.t.  T 1 = a, T^T 1 = b, T >= 0, T_ij = 0 off S,

whose dual is the sparse dual of :class:`certopt.ot.sparse.ColumnDuals` with
the support fixed: ``k`` entries per column, so an evaluation costs
``O(k m)`` instead of a pass over ``C``.  It is maximised to a tight
marginal tolerance from the potentials of the first solve.  When ``S`` does
not admit the marginals the dual is unbounded; the ascent then stops at its
budget, the repair is reported as not converged and the better of the two
plans (by marginal error) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from certopt.core.result import Status
from certopt.ot.problem import TransportProblem
from certopt.ot.sparse import ColumnDuals, DualSolution, solve_column_dual


@dataclass(frozen=True)
class RepairOutcome:
    """The repaired (or kept) dense plan and what the repair achieved."""

    plan: torch.Tensor
    error_before: float
    error_after: float
    converged: bool
    n_iter: int


def repair_plan(problem: TransportProblem, solution: DualSolution, duals: ColumnDuals, *,
                max_iter: int, optimizer: str, verbose: bool) -> RepairOutcome:
    """Re-solve on the support of ``solution.plan``; keep whichever plan is more feasible.

    The repair tolerance is ``1e-8`` (float64) or ``1e-5`` (float32) times
    the total mass, in L1 marginal error.
    """
    before = solution.plan.dense()
    error_before = problem.marginal_error(before)
    support = solution.plan.rows
    restricted = duals if support is None else ColumnDuals(problem, duals.k, duals.reg,
                                                           support=support)
    relative = 1e-8 if problem.a.dtype == torch.float64 else 1e-5
    repaired = solve_column_dual(
        restricted, "dual", tol=relative * float(problem.a.sum()), max_iter=max_iter,
        optimizer=optimizer, verbose=verbose, desc="repair on the support",
        start=(solution.alpha, solution.beta),
    )
    after = repaired.plan.dense()
    error_after = problem.marginal_error(after)
    keep_repaired = error_after <= error_before
    return RepairOutcome(
        plan=after if keep_repaired else before,
        error_before=error_before,
        error_after=error_after if keep_repaired else error_before,
        converged=repaired.status is Status.OPTIMAL,
        n_iter=repaired.n_iter,
    )
