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
MAX_SWAP_ROUNDS = 30
SHORT_FRACTION = 0.1


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
    """Solve the QP on the support of ``evaluation``'s plan (swapping rows in while it
    admits no plan); keep whichever plan is more feasible.

    ``tol`` is the absolute L1 marginal error the repair aims at (the finishing
    tolerance of the solve).
    """
    before = evaluation.plan.dense()
    error_before = problem.marginal_error(before)
    alpha, beta = evaluation.plan.alpha, evaluation.plan.beta
    support, n_eval = evaluation.plan.rows, 0
    for _ in range(MAX_SWAP_ROUNDS):
        restricted = duals if support is None else ColumnDuals(problem, duals.k, duals.reg,
                                                               support=support)
        repaired = semismooth_newton(restricted, alpha, beta, tol=tol, max_eval=REPAIR_MAX_EVAL)
        n_eval += repaired.n_eval
        if repaired.status is Status.OPTIMAL or support is None:
            break
        support = swap_in_short_rows(problem, repaired.evaluation, alpha, beta)
        if support is None:
            break
    after = repaired.evaluation.plan.dense()
    error_after = problem.marginal_error(after)
    keep_repaired = error_after <= error_before
    return RepairOutcome(
        plan=after if keep_repaired else before,
        error_before=error_before,
        error_after=error_after if keep_repaired else error_before,
        converged=repaired.status is Status.OPTIMAL,
        n_iter=n_eval,
        alpha=repaired.alpha,
        beta=repaired.beta,
    )


def swap_in_short_rows(problem: TransportProblem, restricted: Evaluation, alpha: torch.Tensor,
                       beta: torch.Tensor) -> torch.Tensor | None:
    """A new support: each row the restricted QP leaves short enters one more column.

    ``restricted`` is the last evaluation of the restricted dual (its gradient
    ``a - T 1`` names the short rows, at least ``SHORT_FRACTION`` of the largest
    shortfall); ``(alpha, beta)`` the potentials of the sparse solve, which
    price a swap: row ``x`` replaces column ``j``'s smallest-mass entry ``r``
    where ``s_xj - s_rj`` is largest (``s = alpha + beta_j - C``: the swap that
    departs least from the dual's top-k).  Greedy, one swap per column, short
    rows in decreasing shortfall.  None when no swap is possible.
    """
    shortfall = restricted.grad[0]
    worst = float(shortfall.max())
    if not worst > 0:
        return None
    short = torch.nonzero(shortfall >= SHORT_FRACTION * worst).squeeze(1)
    short = short[torch.argsort(shortfall[short], descending=True)]
    rows, masses = restricted.plan.rows, restricted.plan.values
    m, k = rows.shape
    # the entry each column gives up: its smallest mass, the last (lowest score) among equals
    drop = k - 1 - torch.argmin(masses.flip(1), dim=1)
    dropped = rows.gather(1, drop.unsqueeze(1)).squeeze(1)
    cols = torch.arange(m, device=rows.device)
    geometry = problem.geometry
    score_dropped = alpha[dropped] + beta - geometry.entries(dropped, cols)
    gain = (alpha[short].unsqueeze(1) + beta.unsqueeze(0)
            - geometry.entries(short.unsqueeze(1), cols.unsqueeze(0)) - score_dropped)
    present = (rows.unsqueeze(0) == short.view(-1, 1, 1)).any(-1)
    gain = gain.masked_fill(present | (problem.b <= 0).unsqueeze(0), -torch.inf)
    support, swapped = rows.clone(), False
    for position, row in enumerate(short.tolist()):
        best = int(torch.argmax(gain[position]))
        if not bool(torch.isfinite(gain[position, best])):
            continue
        support[best, drop[best]] = row
        gain[:, best] = -torch.inf
        swapped = True
    return support if swapped else None
