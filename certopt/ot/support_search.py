"""Constructive support search: k rows per column that admit a plan.

The repair (:mod:`certopt.ot.repair`) needs a support ``S`` (``k`` rows per
column) on which a plan meeting the marginals exists.  Swapping single
entries around the dual's top-k finds one when ``S`` is close; for small
``k`` the feasible supports are rigid: with ``n = m``, ``k = 2`` and generic
weights a 2-sparse plan has at most ``2m = n + m`` nonzeros and its support
must be connected (a component balances its masses only by a subset-sum
coincidence), so it is a spanning tree (``n + m - 1`` edges) or a tree plus
one edge; every column then joins at most two rows.

A *staircase* builds such a plan directly (the north-west corner rule along
an order of the rows and an order of the columns): each column, in its
turn, takes what is left of the current row and then opens new rows in
their order until it holds ``b_j``.  With prefix sums ``A_p`` of the rows
and ``B_q`` of the columns, column ``q`` joins the rows whose intervals
``[A_{p-1}, A_p)`` meet ``[B_{q-1}, B_q)``: the plan meets the marginals by
construction, is a forest, and is k-sparse iff no column interval contains
``k`` or more row breakpoints ``A_p`` inside it.  Two orders are tried:

* paired (``n = m`` positive masses): rows and columns matched one to one
  by a minimum-cost assignment among pairs whose masses differ by at most
  ``delta`` (``scipy.optimize.linear_sum_assignment``), pairs then taken in
  an order that keeps the open remainder ``S = A_p - B_p`` in
  ``[0, 2 delta)`` (a pair with ``a_i >= b_j`` while ``S < delta``, else
  one with ``a_i < b_j``; the cheapest column next to the open row within
  that class).  With ``delta <= min b / 2`` each column then takes
  ``S < b_j`` from the open row and the rest from its partner: at most two
  rows, most of the mass on the assignment's (cheap) pairs.  A wider band
  (``0.7 min b``) pairs cheaper and usually still fits; it is tried first;
* nearest neighbour: the next column is the cheapest for the open row and
  the next row the cheapest for the column being filled.  With uniform
  weights the breakpoints do not depend on the order, so every order gives
  the same column degrees (``ceil`` of the overlap), and this one is cheap.

Before the staircases, exact OT's plan (network simplex, POT's ``emd``: a
spanning forest, the cheapest plan of all) is tried with its crowded columns
emptied by network-simplex pivots
(:func:`certopt.ot.forest_pivots.cap_degrees`); it succeeds when few
columns are crowded (``k = 3``, ties), rarely for ``k = 2`` with generic
weights.  A staircase's rows (columns) of equal mass then exchange places
where cheaper (linear assignments, :func:`exchange_equal_masses`), and the
plan found is improved by pivots that keep at most ``k`` rows per column
(:func:`certopt.ot.forest_pivots.lower_cost`).  Its support is completed to
``k`` rows per column by the rows of highest score
``s_ij = alpha_i + beta_j - C_ij`` (the sparse solve's potentials), which
gives the restricted QP room to lower the cost.  Everything runs on the
CPU in numpy on the dense cost, assembled block by block once per repair
(:class:`HostProblem`; ``O(n m)`` memory, as the returned dense plan).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cached_property

import numpy as np
import torch

from certopt.ot.exact import default_max_iter
from certopt.ot.forest_pivots import TransportForest, cap_degrees, lower_cost
from certopt.ot.problem import TransportProblem
from certopt.ot.streaming import assemble

PAIR_BANDS = (0.7, 0.4)
"""Paired orders tried: partners' masses differ by at most this share of the smallest column
mass (a wider band pairs cheaper, a narrower one keeps the remainder below every column)."""
PIVOTS_PER_NODE = 4
"""Budget of cost-lowering pivots (:mod:`certopt.ot.forest_pivots`) per row and column."""
ZERO_MASS = 1e-12
"""Remainders below this share of the total mass (or a thousandth of the smallest positive
weight, if smaller) are round-off of the prefix sums, not mass."""


def staircase(a: np.ndarray, b: np.ndarray, k: int,
              next_column: Callable[[int | None], int | None],
              next_row: Callable[[int], int | None], zero: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The north-west corner plan along adaptively chosen orders.

    ``next_column(open_row)`` gives the next column to fill (None: all filled),
    ``next_row(column)`` the next row to open (None: none left).  Returns the
    plan's ``(rows, cols, flows)``, or None when a column would join
    more than ``k`` rows or the rows run out.  Masses at most ``zero`` count
    as exhausted.
    """
    rows, cols, flows = [], [], []
    current, left = None, 0.0
    while (j := next_column(current)) is not None:
        need, degree = float(b[j]), 0
        while need > zero:
            if left <= zero:
                current = next_row(j)
                if current is None:
                    return None
                left = float(a[current])
            take = min(left, need)
            rows.append(current)
            cols.append(j)
            flows.append(take)
            degree += 1
            need, left = need - take, left - take
        if degree > k:
            return None
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64), np.asarray(flows)


def _ordered(order: list[int]) -> Callable[..., int | None]:
    """A chooser that hands out ``order`` one by one, then None."""
    items = iter(order)
    return lambda *_: next(items, None)


def paired_orders(a: np.ndarray, b: np.ndarray, cost: np.ndarray, band: float
                  ) -> tuple[list[int], list[int]] | None:
    """Row and column orders of the paired staircase with ``delta = band min b`` (see the
    module docstring).

    Only for as many positive rows as positive columns; None otherwise.
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = np.flatnonzero(a > 0), np.flatnonzero(b > 0)
    if rows.size != cols.size:
        return None
    delta = band * float(b[cols].min())
    sub = cost[np.ix_(rows, cols)]
    spread = float(sub.max() - sub.min()) + 1.0
    far = np.abs(a[rows][:, None] - b[cols][None, :]) > delta
    partner_rows, partner_cols = linear_sum_assignment(sub + far * (2 * rows.size * spread))
    pair_rows, pair_cols = rows[partner_rows], cols[partner_cols]
    surplus = a[pair_rows] - b[pair_cols]
    remaining = np.ones(rows.size, dtype=bool)
    row_order, col_order, open_rest, open_row = [], [], 0.0, None
    for _ in range(rows.size):
        gaining = remaining & (surplus >= 0)
        losing = remaining & (surplus < 0)
        pool = losing if (open_rest >= delta and losing.any()) or not gaining.any() else gaining
        choices = np.flatnonzero(pool)
        if open_row is None:
            pick = choices[0]
        else:
            pick = choices[np.argmin(cost[open_row, pair_cols[choices]])]
        remaining[pick] = False
        row_order.append(int(pair_rows[pick]))
        col_order.append(int(pair_cols[pick]))
        open_rest += float(surplus[pick])
        open_row = int(pair_rows[pick])
    return row_order, col_order


def _nearest_neighbour(a: np.ndarray, b: np.ndarray, cost: np.ndarray, zero: float
                       ) -> tuple[Callable[[int | None], int | None], Callable[[int], int | None]]:
    """Choosers of the nearest-neighbour staircase: cheapest column for the open row, cheapest
    row for the column being filled."""
    free_rows, free_cols = a > zero, b > zero

    def next_column(open_row: int | None) -> int | None:
        if not free_cols.any():
            return None
        key = cost[open_row] if open_row is not None else cost.min(0)
        j = int(np.argmin(np.where(free_cols, key, np.inf)))
        free_cols[j] = False
        return j

    def next_row(column: int) -> int | None:
        if not free_rows.any():
            return None
        i = int(np.argmin(np.where(free_rows, cost[:, column], np.inf)))
        free_rows[i] = False
        return i

    return next_column, next_row


def _reassign(owner: np.ndarray, partner: np.ndarray, flows: np.ndarray, mass: np.ndarray,
              cost: np.ndarray, zero: float) -> tuple[np.ndarray, bool]:
    """One assignment step of :func:`exchange_equal_masses` on the ``owner`` side.

    ``cost`` is oriented ``(owner side, partner side)``.  Returns the new
    owners of the edges and whether the cost fell.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import csr_matrix

    size = mass.size
    # load[s, i]: cost of the slot of owner s when owner i takes it
    incidence = csr_matrix((flows, (owner, np.arange(owner.size))), shape=(size, owner.size))
    load = np.asarray(incidence @ cost[:, partner].T)
    unequal = np.abs(mass[:, None] - mass[None, :]) > zero
    spread = float(np.abs(load).max()) + 1.0
    slots, owners = linear_sum_assignment(load + unequal * (2 * size * spread))
    taken = np.empty(size, dtype=np.int64)
    taken[slots] = owners
    if unequal[slots, owners].any():
        return owner, False
    before, after = load[slots, slots].sum(), load[slots, owners].sum()
    if after >= before - 1e-12 * (abs(before) + 1.0):
        return owner, False
    return taken[owner], True


def exchange_equal_masses(rows: np.ndarray, cols: np.ndarray, flows: np.ndarray, a: np.ndarray,
                          b: np.ndarray, cost: np.ndarray, zero: float, rounds: int = 10
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Give the staircase's places to other rows (columns) of equal mass where it is cheaper.

    Rows of equal mass are interchangeable: any one of them can take the
    place of another (its edges and flows) and the plan still meets the
    marginals with the same column degrees.  With the columns fixed, the
    cheapest placement of the rows is a linear assignment (place ``s`` taken
    by row ``i`` costs ``sum_{(s, j) in F} T_sj C_ij``); then the same for
    the columns, alternately, while the cost falls (at most ``rounds``
    times).  It matters for uniform weights, whose staircase is fixed by the
    order alone; with distinct masses nothing moves.
    """
    for _ in range(rounds):
        rows, moved_rows = _reassign(rows, cols, flows, a, cost, zero)
        cols, moved_cols = _reassign(cols, rows, flows, b, cost.T, zero)
        if not (moved_rows or moved_cols):
            break
    return rows, cols


def capped_exact_plan(a: np.ndarray, b: np.ndarray, cost: np.ndarray, k: int, zero: float
                      ) -> TransportForest | None:
    """Exact OT's plan (network simplex, a forest) with its crowded columns rerouted
    (:func:`~certopt.ot.forest_pivots.cap_degrees`), or None if some column stays above
    ``k`` rows (or the network simplex did not finish)."""
    import ot as pot

    n, m = cost.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # its result code says it
        plan, log = pot.emd(a, b, cost, numItermax=default_max_iter(n, m), log=True)
    if log["result_code"] != 1:
        return None
    rows, cols = np.nonzero(plan > zero)
    forest = TransportForest(n, m, rows, cols, plan[rows, cols])
    return forest if cap_degrees(forest, cost, k, zero) else None


def staircase_plan(a: np.ndarray, b: np.ndarray, cost: np.ndarray, k: int, zero: float
                   ) -> TransportForest | None:
    """The first staircase (paired in each of ``PAIR_BANDS``, then nearest neighbour)
    whose columns hold at most ``k`` rows, its equal masses exchanged where cheaper; None
    if none fits."""
    n, m = cost.shape
    found = None
    for band in PAIR_BANDS:
        orders = paired_orders(a, b, cost, band)
        if orders is None:
            break
        found = staircase(a, b, k, _ordered(orders[1]), _ordered(orders[0]), zero)
        if found is not None:
            break
    if found is None:
        found = staircase(a, b, k, *_nearest_neighbour(a, b, cost, zero), zero)
    if found is None:
        return None
    rows, cols, flows = found
    if np.unique(a).size < n or np.unique(b).size < m:
        rows, cols = exchange_equal_masses(rows, cols, flows, a, b, cost, zero)
    return TransportForest(n, m, rows, cols, flows)


class HostProblem:
    """A problem's marginals as float64 numpy on the CPU, the mass below which a remainder or
    a flow counts as empty (``ZERO_MASS``), and, on first use, its dense cost: made once per
    repair and shared by the constructions and the local search
    (:mod:`certopt.ot.support_pricing`)."""

    def __init__(self, problem: TransportProblem):
        self.problem = problem
        self.a = problem.a.cpu().double().numpy()
        self.b = problem.b.cpu().double().numpy()
        positive = np.concatenate([self.a[self.a > 0], self.b[self.b > 0]])
        self.zero = min(ZERO_MASS * float(self.a.sum()), 1e-3 * float(positive.min()))

    @cached_property
    def cost(self) -> np.ndarray:
        """The ``(n, m)`` cost, assembled block by block (``n m`` entries, as the returned
        plan, but no block of ``C`` larger than the streaming passes read)."""
        geometry = self.problem.geometry
        return assemble(geometry, lambda block, rows, cols: block).cpu().double().numpy()


def constructive_support(host: HostProblem, k: int, alpha: torch.Tensor,
                         beta: torch.Tensor) -> torch.Tensor | None:
    """An ``(m, k)`` support (row indices per column) that admits a plan, or None if no
    construction tried holds at most ``k`` rows per column.

    Exact OT with capped columns first, then the staircases; the plan found
    is made cheaper by cost-lowering pivots.  ``alpha``, ``beta`` are the
    sparse solve's potentials: the rows added to complete each column to
    ``k`` are those of highest score ``alpha_i + beta_j - C_ij``.  Needs
    ``k <= n``.
    """
    a, b, cost, zero = host.a, host.b, host.cost, host.zero
    n, m = cost.shape
    forest = capped_exact_plan(a, b, cost, k, zero) or staircase_plan(a, b, cost, k, zero)
    if forest is None:
        return None
    lower_cost(forest, cost, k, zero, max_pivots=PIVOTS_PER_NODE * (n + m))
    rows, cols = forest.edges()
    scores = (alpha.cpu().double().numpy()[:, None] + beta.cpu().double().numpy()[None, :]
              - cost)
    scores[rows, cols] = np.inf                 # the plan's entries come first
    support = np.argpartition(-scores, k - 1, axis=0)[:k].T
    return torch.as_tensor(np.ascontiguousarray(support), device=host.problem.a.device)
