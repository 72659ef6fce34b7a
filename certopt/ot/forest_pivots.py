"""Network-simplex pivots on a transport forest whose columns hold at most k rows.

A plan whose support is a forest ``F`` (no cycle) is fixed by ``F`` and the
marginals.  Potentials ``u_i + v_j = C_ij`` on the edges of ``F`` (one root
per component at 0) give every pair of a component the reduced cost
``rc_ij = C_ij - u_i - v_j``.  An entering pair ``(i, j)`` closes a cycle
with the path ``j -> ... -> i`` in ``F``; pushing ``theta`` around it (``+``
on ``(i, j)``, then ``-, +, -, ...`` along the path from ``j``) keeps both
marginals and changes ``<C, T>`` by ``theta * rc_ij``; ``theta`` at most the
least flow on the decreasing edges, one of which empties and leaves ``F``.
Two uses:

* :func:`lower_cost` (pivots that keep every column at most ``k`` rows):
  enter the pair of most negative ``rc``; ``j`` gains an edge, so when it
  already holds ``k`` rows only its own path edge may leave, and only if it
  carries the least flow.  The cost falls by ``theta |rc_ij| > 0``
  (degenerate pivots, ``theta = 0``, are not taken: no cycling).
* :func:`cap_degrees` (from a plan with crowded columns, e.g. exact OT's):
  pivots through an edge of a column holding more than ``k`` rows whose
  emptied edge belongs to a crowded column and whose entering column has
  room: the crowding falls by one per pivot, at the least cost rise
  ``theta rc_ij >= 0``.  It can get stuck (every way out would empty an
  edge of an uncrowded column): the caller then builds another plan.

Entering pairs are drawn from candidates (each column's ``CANDIDATES``
cheapest rows and each row's cheapest columns).  The forest is kept rooted
(parents, depths, potentials); a pivot re-hangs only the subtree its leaving
edge cuts off.
"""

from __future__ import annotations

from collections import deque

import numpy as np

CANDIDATES = 8
"""Cheapest rows per column and cheapest columns per row tried as entering pairs."""
TRIES = 16
"""Entering pairs examined per pivot, by increasing reduced cost, before giving up."""


def candidate_pairs(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the entering candidates (deduplicated)."""
    n, m = cost.shape
    per_column = min(CANDIDATES, n)
    per_row = min(CANDIDATES, m)
    rows_by_column = np.argpartition(cost, per_column - 1, axis=0)[:per_column]
    cols_by_row = np.argpartition(cost, per_row - 1, axis=1)[:, :per_row]
    rows = np.concatenate([rows_by_column.ravel(), np.repeat(np.arange(n), per_row)])
    cols = np.concatenate([np.tile(np.arange(m), per_column), cols_by_row.ravel()])
    unique = np.unique(rows * m + cols)
    return unique // m, unique % m


class TransportForest:
    """A k-sparse plan on a forest: ``flow[(i, j)]`` for each edge, rows 0..n-1 and
    columns as nodes ``n + j``."""

    def __init__(self, n: int, m: int, rows: np.ndarray, cols: np.ndarray, flows: np.ndarray):
        self.n, self.m = n, m
        self.flow = {(int(i), int(j)): float(f) for i, j, f in zip(rows, cols, flows)}
        self.neighbours: list[set[int]] = [set() for _ in range(n + m)]
        for i, j in self.flow:
            self.neighbours[i].add(n + j)
            self.neighbours[n + j].add(i)

    def snapshot(self) -> tuple[dict[tuple[int, int], float], list[set[int]]]:
        """The flows and adjacency, for :meth:`restore`."""
        return dict(self.flow), [set(nodes) for nodes in self.neighbours]

    def restore(self, saved: tuple[dict[tuple[int, int], float], list[set[int]]],
                cost: np.ndarray) -> None:
        """Return to a :meth:`snapshot` (and root the forest again)."""
        self.flow, self.neighbours = dict(saved[0]), [set(nodes) for nodes in saved[1]]
        self.structure(cost)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """The support's ``(rows, cols)``."""
        pairs = np.array(list(self.flow), dtype=np.int64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    def degree(self, j: int) -> int:
        """Rows joined by column ``j``."""
        return len(self.neighbours[self.n + j])

    def _key(self, node: int, other: int) -> tuple[int, int]:
        """The ``(row, column)`` of the edge between two nodes."""
        return (node, other - self.n) if node < self.n else (other, node - self.n)

    def _flow(self, node: int, other: int) -> float:
        return self.flow[self._key(node, other)]

    def structure(self, cost: np.ndarray) -> None:
        """Root every component (breadth first): ``parent``, ``depth``, ``component`` and
        ``potential`` of every node."""
        size = self.n + self.m
        self.parent = np.full(size, -1)
        self.depth = np.zeros(size, dtype=np.int64)
        self.component = np.full(size, -1)
        self.potential = np.zeros(size)
        for root in range(size):
            if self.component[root] < 0:
                self.component[root] = root
                self._hang(root, cost)

    def _hang(self, top: int, cost: np.ndarray) -> None:
        """Set the structure of the subtree below ``top`` from ``top``'s own, breadth first."""
        queue = deque([top])
        while queue:
            node = queue.popleft()
            for other in self.neighbours[node]:
                if other != self.parent[node]:
                    self.parent[other], self.depth[other] = node, self.depth[node] + 1
                    self.component[other] = self.component[node]
                    self.potential[other] = cost[self._key(node, other)] - self.potential[node]
                    queue.append(other)

    def path(self, start: int, end: int) -> tuple[list[int], int]:
        """The nodes of the forest path from ``start`` to ``end`` (same component) and the
        number of edges from ``start`` up to their common ancestor."""
        head, tail = [start], [end]
        while head[-1] != tail[-1]:
            if self.depth[head[-1]] >= self.depth[tail[-1]]:
                head.append(int(self.parent[head[-1]]))
            else:
                tail.append(int(self.parent[tail[-1]]))
        return head + tail[-2::-1], len(head) - 1

    def pivot(self, row: int, col: int, k: int, zero: float, cost: np.ndarray) -> bool:
        """Push flow around the cycle closed by ``(row, col)``; False if not allowed."""
        nodes, up = self.path(self.n + col, row)
        steps = list(zip(nodes[:-1], nodes[1:]))
        theta, leaving = min((self._flow(*steps[p]), p) for p in range(0, len(steps), 2))
        if self.degree(col) >= k:
            if self._flow(*steps[0]) > theta + zero:
                return False
            leaving = 0
        if theta <= zero:
            return False
        self._exchange(row, col, nodes, up, theta, leaving, cost)
        return True

    def _exchange(self, row: int, col: int, nodes: list[int], up: int, theta: float,
                  leaving: int, cost: np.ndarray) -> None:
        """Pivot: ``(row, col)`` enters with ``theta``, pushed around the cycle its forest
        path ``nodes`` (column to row, ``up`` edges to their common ancestor) closes; the
        path's edge number ``leaving`` leaves.  The subtree that edge cut off is hung again
        from the entering edge (its potentials shift), so the rooting stays current."""
        steps = list(zip(nodes[:-1], nodes[1:]))
        for position, step in enumerate(steps):
            self.flow[self._key(*step)] += theta if position % 2 else -theta
        node, other = steps[leaving]
        del self.flow[self._key(node, other)]
        self.neighbours[node].discard(other)
        self.neighbours[other].discard(node)
        self.flow[(row, col)] = theta
        self.neighbours[row].add(self.n + col)
        self.neighbours[self.n + col].add(row)
        # an edge between the column and the common ancestor: the column's end is cut off
        top, new_parent = (self.n + col, row) if leaving < up else (row, self.n + col)
        self.parent[top], self.depth[top] = new_parent, self.depth[new_parent] + 1
        self.potential[top] = cost[row, col] - self.potential[new_parent]
        self._hang(top, cost)

    def _bottlenecks(self, start: int, banned: int, decreasing_from_rows: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least flow on the edges that a push from ``start`` decreases, per node of its side,
        and that edge's two ends.

        Breadth first from ``start`` without crossing to ``banned`` (the other
        end of the removed edge); a step decreases when it goes from a row to a
        column (``decreasing_from_rows``) or from a column to a row (otherwise).
        Nodes off that side get -1; ends are -1 where no edge decreases.
        """
        least = np.full(self.n + self.m, -1.0)
        ends = np.full((2, self.n + self.m), -1)
        least[start] = np.inf
        queue = deque([start])
        while queue:
            node = queue.popleft()
            from_row = node < self.n
            for other in self.neighbours[node]:
                if least[other] < 0 and other != banned:
                    flow = self._flow(node, other)
                    if from_row == decreasing_from_rows and flow < least[node]:
                        least[other], ends[:, other] = flow, (node, other)
                    else:
                        least[other], ends[:, other] = least[node], ends[:, node]
                    queue.append(other)
        least[banned] = -1.0
        return least, ends[0], ends[1]

    def reroute(self, row: int, col: int, k: int, zero: float, rows: np.ndarray,
                cols: np.ndarray, cost: np.ndarray
                ) -> tuple[float, int, int, float, int, int] | None:
        """The cheapest pivot through edge ``(row, col)`` that empties a crowded column's edge.

        Removing the edge leaves ``row``'s side ``P`` with its flow ``x`` to
        send and ``col``'s side ``Q`` with ``x`` to receive.  An entering edge
        ``(u, w)`` from a row of ``P`` to a column ``w`` of ``Q`` with fewer
        than ``k`` rows closes a cycle through ``(row, col)``; pushing
        ``theta`` = the least flow on its decreasing edges (``(row, col)``
        among them) empties one of them.  The pivot qualifies when that edge
        belongs to a column holding more than ``k`` rows (the crowding falls
        by one) and ``theta > zero``.  The cost rises by ``theta rc_uw``
        (potentials of :meth:`structure`).  Returns ``(rise, u, w, theta,
        leaving row, leaving column)`` of the cheapest, entering edges among
        the candidates ``(rows, cols)`` only, or None.
        """
        x = self.flow[(row, col)]
        sends, send_a, send_b = self._bottlenecks(row, self.n + col, decreasing_from_rows=False)
        takes, take_a, take_b = self._bottlenecks(self.n + col, row, decreasing_from_rows=True)
        room = np.array([self.degree(j) < k for j in range(self.m)])
        room[col] = False
        inside = (sends[rows] >= 0) & (takes[self.n + cols] >= 0) & room[cols]
        found = np.flatnonzero(inside)
        u, w = rows[found], cols[found]
        theta = np.minimum(np.minimum(sends[u], takes[self.n + w]), x)
        # the emptied edge: (row, col) itself, or the least on P's or on Q's side
        on_p = (sends[u] < x) & (sends[u] <= takes[self.n + w])
        on_q = ~on_p & (takes[self.n + w] < x)
        leave_a = np.where(on_p, send_a[u], np.where(on_q, take_a[self.n + w], row))
        leave_b = np.where(on_p, send_b[u], np.where(on_q, take_b[self.n + w], self.n + col))
        leave_col = np.maximum(leave_a, leave_b) - self.n
        crowded = np.array([self.degree(j) > k for j in range(self.m)])
        good = crowded[leave_col] & (theta > zero)
        if not good.any():
            return None
        rise = theta * (cost[u, w] - self.potential[u] - self.potential[self.n + w])
        best = np.flatnonzero(good)[np.argmin(rise[good])]
        leave_row = int(np.minimum(leave_a, leave_b)[best])
        return (float(rise[best]), int(u[best]), int(w[best]), float(theta[best]), leave_row,
                int(leave_col[best]))

    def move(self, u: int, w: int, theta: float, leave_row: int, leave_col: int,
             cost: np.ndarray) -> None:
        """Push ``theta`` around the cycle entering edge ``(u, w)`` closes and drop the
        emptied edge ``(leave_row, leave_col)`` (a :meth:`reroute`)."""
        nodes, up = self.path(self.n + w, u)
        leaving = next(p for p, step in enumerate(zip(nodes[:-1], nodes[1:]))
                       if self._key(*step) == (leave_row, leave_col))
        self._exchange(u, w, nodes, up, theta, leaving, cost)


def cap_degrees(forest: TransportForest, cost: np.ndarray, k: int, zero: float,
                candidates: tuple[np.ndarray, np.ndarray] | None = None,
                crowded: list[int] | None = None) -> bool:
    """Empty edges of the columns holding more than ``k`` rows by the cheapest
    :meth:`~TransportForest.reroute` through a crowded column, sweeping over the crowded
    columns while one moves; True when every column holds at most ``k`` rows.

    ``candidates``: the entering pairs (default :func:`candidate_pairs`);
    ``crowded``: the only columns that may hold more than ``k`` rows (default: all
    are checked)."""
    rows, cols = candidate_pairs(cost) if candidates is None else candidates
    columns = range(forest.m) if crowded is None else crowded
    forest.structure(cost)
    moved = True
    while moved:
        moved = False
        for j in columns:
            if forest.degree(j) <= k:
                continue
            moves = [found for i in forest.neighbours[forest.n + j]
                     if (found := forest.reroute(i, j, k, zero, rows, cols, cost)) is not None]
            if moves:
                forest.move(*min(moves)[1:], cost)
                moved = True
    return all(forest.degree(j) <= k for j in columns)


def lower_cost(forest: TransportForest, cost: np.ndarray, k: int, zero: float,
               max_pivots: int) -> int:
    """Pivot ``forest`` while some candidate pair lowers ``<C, T>``; return the pivots made."""
    rows, cols = candidate_pairs(cost)
    scale = float(np.abs(cost).max()) + 1.0
    forest.structure(cost)
    for done in range(max_pivots):
        reduced = cost[rows, cols] - forest.potential[rows] - forest.potential[forest.n + cols]
        usable = ((reduced < -1e-12 * scale)
                  & (forest.component[rows] == forest.component[forest.n + cols]))
        order = np.flatnonzero(usable)
        order = order[np.argsort(reduced[order])[:TRIES]]
        if not any(forest.pivot(int(rows[e]), int(cols[e]), k, zero, cost) for e in order):
            return done
    return max_pivots
