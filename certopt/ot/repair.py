"""Feasibility repair: solve the convex QP on the support a sparse solve found.

At a kink of the sparsity-constrained dual (ties in the top-k, or an
optimum where no k-sparse plan read off the potentials meets the
marginals) the plan of the dual point keeps a marginal error.  Fixing the
support ``S`` (each column's ``k`` candidate rows at the final potentials,
with rows swapped in while a max flow finds a set of rows whose columns
cannot take their mass, :func:`hall_violator`; if the swaps run out before
``S`` admits a plan, a support built by
:func:`certopt.ot.support_search.constructive_support`, which admits one by
construction whenever it is found) turns the problem into the convex QP::

    min  <C, T> + (reg/2) ||T||_F^2   s.t.  T 1 = a, T^T 1 = b, T >= 0, T_ij = 0 off S,

whose dual is the sparse dual of :class:`certopt.ot.column_duals.ColumnDuals` with
the support fixed (``k`` entries per column: an evaluation costs ``O(k m)``,
no pass over ``C``).  It is solved directly by an interior point
(:mod:`certopt.ot.support_qp`); when its objective is far above the
solve's bound (``LOCAL_SEARCH_GAP``), a support the swaps found competes
with the constructed one (the lower QP objective wins) and the local
search of :mod:`certopt.ot.support_pricing` moves the winner by priced
pivots; the semismooth Newton iteration of
:mod:`certopt.ot.newton` finishes from its potentials (from the first
solve's, if the interior point reports no solution) to the finishing
tolerance.  Its plan has at most ``k`` nonzeros per column and,
when ``S`` admits the marginals, meets them to round-off.  When ``S`` does
not admit them the restricted dual is unbounded: the iteration stops at its
budget, the repair is reported as not converged and the better of the two
plans (by marginal error) is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from certopt.core.result import Status
from certopt.ot.column_duals import ColumnDuals, Evaluation
from certopt.ot.newton import semismooth_newton
from certopt.ot.problem import TransportProblem
from certopt.ot.support_pricing import improve_support, restricted_objective
from certopt.ot.support_qp import restricted_qp_potentials
from certopt.ot.support_search import HostProblem, constructive_support

REPAIR_MAX_EVAL = 2000
MAX_SWAP_ROUNDS = 50
REPAIR_MAX_STEPS = 500
LOCAL_SEARCH_GAP = 1e-2
"""Relative gap between the QP objective on the support and the bound above which the
local search runs (below it, its pivots would cost more than the plan could gain)."""


def _gap_above(objective: float, bound: float) -> bool:
    """``objective`` exceeds ``bound`` by more than ``LOCAL_SEARCH_GAP`` of its size."""
    return objective - bound > LOCAL_SEARCH_GAP * abs(objective)


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


@dataclass(frozen=True)
class RestrictedQP:
    """The QP on a support: its duals, the interior point's potentials (None: no solution)
    and the objective of their plan (inf without potentials)."""

    duals: ColumnDuals
    direct: tuple[torch.Tensor, torch.Tensor] | None
    objective: float

    @classmethod
    def solve(cls, problem: TransportProblem, duals: ColumnDuals, support: torch.Tensor
              ) -> RestrictedQP:
        """Solve the QP of ``problem`` (regularisation ``duals.reg``) on ``support``."""
        restricted = ColumnDuals(problem, duals.k, duals.reg, support=support)
        direct = restricted_qp_potentials(problem.a, problem.b, support,
                                          restricted.support_cost, duals.reg)
        objective = math.inf if direct is None else restricted_objective(
            support, restricted.support_cost, *direct, duals.reg)
        return cls(restricted, direct, objective)


def repair_plan(problem: TransportProblem, duals: ColumnDuals, evaluation: Evaluation, *,
                tol: float, improve_above: float | None = None) -> RepairOutcome:
    """Solve the QP on the support of ``evaluation``'s plan (swapping rows in while it
    admits no plan); keep whichever plan is more feasible.

    ``tol`` is the absolute L1 marginal error the repair aims at (the finishing
    tolerance of the solve).  ``improve_above`` (a lower bound, or None: never):
    when the QP objective on the support exceeds it by more than
    ``LOCAL_SEARCH_GAP`` (relative), the local search of
    :mod:`certopt.ot.support_pricing` moves the support first.
    """
    before = evaluation.plan.dense()
    error_before = problem.marginal_error(before)
    alpha, beta = evaluation.plan.alpha, evaluation.plan.beta
    support = evaluation.plan.rows
    restricted = duals
    if support is not None:
        locked = torch.zeros_like(support, dtype=torch.bool)
        for _ in range(MAX_SWAP_ROUNDS):
            violator = hall_violator(problem, support)
            if violator is None:
                break
            swapped = swap_into_violator(problem, support, locked, alpha, beta, violator)
            if swapped is None:
                break
            support, locked = swapped
        else:                         # the rounds ran out: is the last swap's support fine?
            violator = hall_violator(problem, support)
        host, built = HostProblem(problem), None
        if violator is not None:
            built = constructive_support(host, support.shape[1], alpha, beta)
            if built is not None:
                support = built
        qp = RestrictedQP.solve(problem, duals, support)
        far = improve_above is not None and qp.direct is not None and _gap_above(
            qp.objective, improve_above)
        if far and built is None:     # the swaps' support may be a poor one: the
            built = constructive_support(host, support.shape[1], alpha, beta)  # construction
            if built is not None:                                             # competes
                other = RestrictedQP.solve(problem, duals, built)
                if other.direct is not None and other.objective < qp.objective:
                    qp, support = other, built
                    far = _gap_above(qp.objective, improve_above)
        restricted = qp.duals
        if qp.direct is not None:
            alpha, beta = qp.direct
            if far:
                priced = improve_support(host, support, alpha, beta, duals.reg)
                support, alpha, beta = priced.support, priced.alpha, priced.beta
                restricted = ColumnDuals(problem, duals.k, duals.reg, support=support)
    repaired = semismooth_newton(restricted, alpha, beta, tol=tol, max_eval=REPAIR_MAX_EVAL,
                                 max_steps=REPAIR_MAX_STEPS, stall_steps=None)
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


def hall_violator(problem: TransportProblem, support: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """Rows ``X`` whose columns in ``support`` cannot take their mass, or None if it admits a plan.

    A plan on ``support`` exists iff the max flow source -> rows (capacity
    ``a``) -> columns (along ``support``) -> sink (capacity ``b``) carries the
    whole mass; otherwise the rows left reachable from the source in the
    residual graph form ``X`` with ``a(X) > b(N(X))`` (Hall's condition fails).
    Computed on the CPU by scipy's max flow on ``O(k m)`` edges with masses
    scaled to integers (resolution ``2**-30`` of the total mass).  Returns the
    boolean row mask of ``X``, the column mask of ``N(X)`` and the deficiency.
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    n, m = problem.shape
    rows = support.cpu().numpy()
    a = problem.a.cpu().numpy()
    b = problem.b.cpu().numpy()
    scale = 2.0**30 / float(a.sum())
    cap_a = np.floor(a * scale).astype(np.int32)
    cap_b = np.ceil(b * scale).astype(np.int32)
    source, sink = n + m, n + m + 1
    k = rows.shape[1]
    heads = np.concatenate([np.full(n, source), rows.ravel(), n + np.arange(m)])
    tails = np.concatenate([np.arange(n), n + np.repeat(np.arange(m), k), np.full(m, sink)])
    caps = np.concatenate([cap_a, np.full(m * k, 2**30, dtype=np.int32), cap_b])
    graph = csr_matrix((caps, (heads, tails)), shape=(n + m + 2, n + m + 2))
    graph.sum_duplicates()
    flow = maximum_flow(graph, source, sink)
    deficiency = (int(cap_a.sum()) - int(flow.flow_value)) / scale
    if deficiency <= n / scale:
        return None
    both = graph + graph.T.multiply(0)         # reverse edges present with capacity 0
    residual = (both - flow.flow).tocsr()
    residual.data = np.where(residual.data > 0, 1, 0).astype(np.int32)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, return_predecessors=False)
    mask = np.zeros(n + m + 2, dtype=bool)
    mask[reached] = True
    device = support.device
    return (torch.from_numpy(mask[:n]).to(device), torch.from_numpy(mask[n:n + m]).to(device),
            deficiency)


def swap_into_violator(problem: TransportProblem, support: torch.Tensor, locked: torch.Tensor,
                       alpha: torch.Tensor, beta: torch.Tensor,
                       violator: tuple[torch.Tensor, torch.Tensor, float]
                       ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Give the Hall violator ``X`` new columns: the cheapest swaps until they bring its deficiency.

    A column ``j`` outside ``N(X)`` (with mass) gives up its lowest-scored entry
    ``r`` to the row ``x`` of ``X`` maximising ``s_xj - s_rj`` (``s = alpha +
    beta_j - C``, the sparse solve's potentials: the swap that departs least
    from the dual's top-k).  Swaps are taken by decreasing gain, one per
    column, until the columns gained carry the deficiency.  Entries swapped in
    are ``locked``: never swapped out again (no cycling).  Returns the new
    support and locks, or None when no swap is possible.
    """
    rows_x, cols_x, deficiency = violator
    m, k = support.shape
    geometry = problem.geometry
    cols = torch.arange(m, device=support.device)
    scores = alpha[support] + beta.unsqueeze(1) - geometry.entries(support, cols.unsqueeze(1))
    scores = scores.masked_fill(locked, torch.inf)
    weakest = torch.argmin(scores, dim=1)
    weakest_score = scores.gather(1, weakest.unsqueeze(1)).squeeze(1)
    short = torch.nonzero(rows_x).squeeze(1)
    open_cols = torch.nonzero(~cols_x & (problem.b > 0) & ~locked.all(1)).squeeze(1)
    if short.numel() == 0 or open_cols.numel() == 0:
        return None
    gain = (alpha[short].unsqueeze(1) + beta[open_cols].unsqueeze(0)
            - geometry.entries(short.unsqueeze(1), open_cols.unsqueeze(0))
            - weakest_score[open_cols].unsqueeze(0))
    best_gain, best_row = gain.max(dim=0)
    order = torch.argsort(best_gain, descending=True)
    support, locked = support.clone(), locked.clone()
    gained = 0.0
    for position in order.tolist():
        j = int(open_cols[position])
        support[j, weakest[j]] = short[best_row[position]]
        locked[j, weakest[j]] = True
        gained += float(problem.b[j])
        if gained >= deficiency:
            break
    return support, locked
