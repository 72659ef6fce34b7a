"""Feasibility repair: solve the convex QP on the support a sparse solve found.

At a kink of the sparsity-constrained dual (ties in the top-k, or an
optimum where no k-sparse plan read off the potentials meets the
marginals) the plan of the dual point keeps a marginal error.  Fixing the
support ``S`` (each column's ``k`` candidate rows at the final potentials)
turns the problem into the convex QP::

    min  <C, T> + (reg/2) ||T||_F^2   s.t.  T 1 = a, T^T 1 = b, T >= 0, T_ij = 0 off S,

whose dual is the sparse dual of :class:`certopt.ot.sparse.ColumnDuals` with
the support fixed (``k`` entries per column: an evaluation costs ``O(k m)``,
no pass over ``C``).  It is solved by the semismooth Newton iteration of
:mod:`certopt.ot.newton` from the potentials of the first solve, to the
finishing tolerance.  Its plan has at most ``k`` nonzeros per column and,
when ``S`` admits the marginals, meets them to round-off.  When ``S`` does
not admit them the restricted dual is unbounded: the iteration stops at its
budget, the repair is reported as not converged and the better of the two
plans (by marginal error) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from certopt.core.result import Status
from certopt.ot.column_duals import ColumnDuals, Evaluation
from certopt.ot.newton import semismooth_newton
from certopt.ot.problem import TransportProblem

REPAIR_MAX_EVAL = 200


@dataclass(frozen=True)
class RepairOutcome:
    """The repaired (or kept) dense plan, what the repair achieved, and its potentials."""

    plan: torch.Tensor
    error_before: float
    error_after: float
    converged: bool
    n_iter: int
    alpha: torch.Tensor
    beta: torch.Tensor


def repair_plan(problem: TransportProblem, duals: ColumnDuals, evaluation: Evaluation, *,
                tol: float) -> RepairOutcome:
    """Solve the QP on the support of ``evaluation``'s plan; keep whichever plan is more feasible.

    ``tol`` is the absolute L1 marginal error the repair aims at (the finishing
    tolerance of the solve).
    """
    before = evaluation.plan.dense()
    error_before = problem.marginal_error(before)
    support = evaluation.plan.rows
    restricted = duals if support is None else ColumnDuals(problem, duals.k, duals.reg,
                                                           support=support)
    alpha, beta = evaluation.plan.alpha, evaluation.plan.beta
    repaired = semismooth_newton(restricted, alpha, beta, tol=tol, max_eval=REPAIR_MAX_EVAL)
    after = repaired.evaluation.plan.dense()
    error_after = problem.marginal_error(after)
    keep_repaired = error_after <= error_before
    return RepairOutcome(
        plan=after if keep_repaired else before,
        error_before=error_before,
        error_after=error_after if keep_repaired else error_before,
        converged=repaired.status is Status.OPTIMAL,
        n_iter=repaired.n_eval,
        alpha=repaired.alpha,
        beta=repaired.beta,
    )
