"""Local search on a repaired support: restricted QP -> pricing -> pivots, while it pays.

The repair (:mod:`certopt.ot.repair`) solves the convex QP on a support ``S``
(``k`` rows per column) that admits a plan; for small ``k`` that support comes
from a construction (:mod:`certopt.ot.support_search`) and its QP optimum can
sit far above the k-sparse optimum.  The QP's potentials price every entry
off ``S``: the KKT conditions of the QP on ``S + {(i, j)}`` read
``reg T_ij = [s_ij]_+`` with the *reduced score*
``s_ij = alpha_i + beta_j - C_ij``, so ``s_ij > 0`` means that letting
``(i, j)`` carry mass lowers the objective.  Column ``j`` already holds
``k`` rows, so ``(i, j)`` can only come in by an exchange that keeps every
column at ``k`` rows at most: a network-simplex pivot
(:meth:`certopt.ot.forest_pivots.TransportForest.pivot`) on a basic plan of
``S`` (exact OT restricted to ``S``, POT's ``emd``: a forest), which pushes
flow around the cycle ``(i, j)`` closes and empties an edge of that cycle
(column ``j``'s own when ``j`` is full).  When ``j`` is full and its own
edge is not the cycle's bottleneck, ``(i, j)`` enters by a free pivot and
``j`` is brought back to ``k`` rows by the cheapest reroutes of
:func:`~certopt.ot.forest_pivots.cap_degrees` (at most ``MAX_REROUTES``
tries a round; the forest is restored when it fails).  The pivoted forest's
edges, completed to ``k`` rows per column by ``S``'s rows of highest score,
form the new support:
it admits a plan (the pivoted one) by construction, and the QP on it
(:func:`certopt.ot.support_qp.restricted_qp_potentials`) decides: the move is
kept when the QP objective falls, otherwise the round is retried with half
as many pivots, down to one.  At most ``MAX_QP_SOLVES`` QP solves; everything
but the QP's potentials runs on the CPU in numpy on the dense cost.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from certopt.ot.exact import default_max_iter
from certopt.ot.forest_pivots import TransportForest, candidate_pairs, cap_degrees
from certopt.ot.support_qp import restricted_qp_potentials
from certopt.ot.support_search import HostProblem

MAX_QP_SOLVES = 12
"""Restricted QP solves per local search (each ``O(k m)`` variables, no pass over ``C``)."""
MAX_PIVOTS = 64
"""Entering pairs pivoted in per round (the best priced, one per column)."""
MAX_REROUTES = 16
"""Free pivots followed by a reroute (:func:`~certopt.ot.forest_pivots.cap_degrees`) tried
per round (each costs a few breadth-first passes over the forest)."""
MIN_DECREASE = 1e-9
"""A new support is kept when its QP objective is lower by this share (round-off of the
interior point's potentials lies below it)."""


class PricedSupport(NamedTuple):
    """The support kept, its QP potentials and objective, and the QP solves spent."""

    support: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    objective: float
    solves: int


def restricted_objective(support: torch.Tensor, support_cost: torch.Tensor, alpha: torch.Tensor,
                         beta: torch.Tensor, reg: float) -> float:
    """``sum C t + (reg/2) t^2`` of the plan ``t = [alpha_i + beta_j - C_ij]_+ / reg`` on
    ``support`` ((m, k) rows, ``support_cost`` their costs)."""
    values = (alpha[support] + beta.unsqueeze(1) - support_cost).clamp_min(0) / reg
    return float((support_cost * values).sum() + 0.5 * reg * (values * values).sum())


def basic_plan(a: np.ndarray, b: np.ndarray, cost: np.ndarray, on_support: np.ndarray,
               zero: float) -> TransportForest | None:
    """Exact OT restricted to ``on_support`` (a boolean ``(n, m)`` mask): a forest, or None
    when the network simplex does not finish on the support."""
    import ot as pot

    n, m = cost.shape
    spread = float(cost.max() - cost.min()) + 1.0
    penalised = np.where(on_support, cost, cost.max() + (n + m) * spread)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # its result code says it
        plan, log = pot.emd(a, b, penalised, numItermax=default_max_iter(n, m), log=True)
    rows, cols = np.nonzero(plan > zero)
    if log["result_code"] != 1 or not on_support[rows, cols].all():
        return None
    return TransportForest(n, m, rows, cols, plan[rows, cols])


def priced_pairs(scores: np.ndarray, on_support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's best-scored row off the support where its score is positive, by
    decreasing score: ``(rows, cols)``."""
    masked = np.where(on_support, -np.inf, scores)
    rows = np.argmax(masked, axis=0)
    best = masked[rows, np.arange(masked.shape[1])]
    cols = np.flatnonzero(best > 0)
    cols = cols[np.argsort(-best[cols])]
    return rows[cols], cols


def pivoted_support(forest: TransportForest, rows: np.ndarray, cols: np.ndarray,
                    scores: np.ndarray, on_support: np.ndarray, k: int, zero: float,
                    cost: np.ndarray, limit: int, candidates: tuple[np.ndarray, np.ndarray]
                    ) -> np.ndarray | None:
    """Pivot up to ``limit`` of the priced pairs into ``forest``; the new ``(m, k)`` support
    (the forest's edges, completed by the old support's best-scored rows), or None if no
    pivot was possible.

    A pair whose column is full and whose own path edge is not the bottleneck
    enters by a free pivot, and the column is then brought back to ``k`` rows by
    :func:`~certopt.ot.forest_pivots.cap_degrees` (entering pairs from
    ``candidates``); if that fails the forest is restored."""
    forest.structure(cost)
    done, rerouted = 0, 0
    for i, j in zip(rows.tolist(), cols.tolist()):
        if done >= limit:
            break
        if forest.component[i] != forest.component[forest.n + j]:
            continue
        if forest.pivot(i, j, k, zero, cost):
            done += 1
        elif forest.degree(j) >= k and rerouted < MAX_REROUTES:
            rerouted += 1
            kept = forest.snapshot()
            if forest.pivot(i, j, forest.n + 1, zero, cost) and cap_degrees(
                    forest, cost, k, zero, candidates, [j]):
                done += 1
            else:
                forest.restore(kept, cost)
    if done == 0:
        return None
    edge_rows, edge_cols = forest.edges()
    key = np.where(on_support, scores, -np.inf)
    key[edge_rows, edge_cols] = np.inf               # the pivoted plan's entries come first
    return np.ascontiguousarray(np.argpartition(-key, k - 1, axis=0)[:k].T)


def improve_support(host: HostProblem, support: torch.Tensor, alpha: torch.Tensor,
                    beta: torch.Tensor, reg: float) -> PricedSupport:
    """Restricted QP -> pricing -> pivots from ``support`` ((m, k) rows, admitting a plan) and
    its QP potentials, while the QP objective falls (see the module docstring).

    ``host`` holds the problem's marginals, dense cost and zero mass in numpy.  Returns
    the best support found (possibly ``support``).
    """
    a, b = host.problem.a, host.problem.b
    a_np, b_np, cost, zero = host.a, host.b, host.cost, host.zero
    m, k = support.shape
    cols_index = torch.arange(m, device=support.device).unsqueeze(1)
    cost_t = torch.as_tensor(cost, dtype=a.dtype, device=a.device)
    support_cost = cost_t[support, cols_index]
    objective = restricted_objective(support, support_cost, alpha, beta, reg)
    solves, limit = 0, MAX_PIVOTS
    candidates = candidate_pairs(cost)
    while solves < MAX_QP_SOLVES:
        on_support = np.zeros(cost.shape, dtype=bool)
        on_support[support.cpu().numpy(), np.arange(m)[:, None]] = True
        scores = (alpha.cpu().double().numpy()[:, None] + beta.cpu().double().numpy()[None, :]
                  - cost)
        rows, cols = priced_pairs(scores, on_support)
        forest = basic_plan(a_np, b_np, cost, on_support, zero) if rows.size else None
        found = None if forest is None else pivoted_support(
            forest, rows, cols, scores, on_support, k, zero, cost, limit, candidates)
        if found is None:
            break
        trial = torch.as_tensor(found, device=support.device)
        trial_cost = cost_t[trial, cols_index]
        direct = restricted_qp_potentials(a, b, trial, trial_cost, reg)
        solves += 1
        value = math.inf if direct is None else restricted_objective(
            trial, trial_cost, *direct, reg)
        if value < objective - MIN_DECREASE * abs(objective):
            support, (alpha, beta), objective = trial, direct, value
            support_cost = trial_cost
            limit = MAX_PIVOTS
        elif limit > 1:
            limit //= 2
        else:
            break
    return PricedSupport(support, alpha, beta, objective, solves)

