"""Cost-lowering pivots on a transport forest whose columns hold at most k rows.

A plan whose support is a forest ``F`` (no cycle) is fixed by ``F`` and the
marginals.  The network simplex pivot improves it without leaving the
k-sparse plans: potentials ``u_i + v_j = C_ij`` on the edges of ``F`` (one
root per component at 0) give every pair of a component the reduced cost
``rc_ij = C_ij - u_i - v_j``.  A pair with ``rc_ij < 0`` closes a cycle with
the path ``j -> ... -> i`` in ``F``; pushing ``theta`` around it (``+`` on
``(i, j)``, then ``-, +, -, ...`` along the path from ``j``) keeps both
marginals and changes ``<C, T>`` by ``theta * rc_ij``.  ``theta`` is the least
flow on the decreasing edges and one edge carrying it leaves ``F``.  The
column cap: ``j`` gains an edge, so when it already holds ``k`` rows only
its own path edge (a decreasing one) may leave, and only if it carries the
least flow.  Every pivot keeps the marginals, nonnegativity and the cap,
and lowers the cost by ``theta |rc_ij| > 0`` (degenerate pivots,
``theta = 0``, are not taken: no cycling).

Entering pairs are drawn from candidates (each column's ``CANDIDATES``
cheapest rows and each row's cheapest columns), the most negative reduced
cost first.  Each pivot recomputes the forest's potentials, ``O(n + m)``.
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

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """The support's ``(rows, cols)``."""
        pairs = np.array(list(self.flow), dtype=np.int64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]

    def degree(self, j: int) -> int:
        """Rows joined by column ``j``."""
        return len(self.neighbours[self.n + j])

    def _flow(self, node: int, other: int) -> float:
        return self.flow[(node, other - self.n) if node < self.n else (other, node - self.n)]

    def structure(self, cost: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Parent, depth, component and potential of every node (breadth first)."""
        size = self.n + self.m
        parent = np.full(size, -1)
        depth = np.zeros(size, dtype=np.int64)
        component = np.full(size, -1)
        potential = np.zeros(size)
        for root in range(size):
            if component[root] >= 0:
                continue
            component[root] = root
            queue = deque([root])
            while queue:
                node = queue.popleft()
                for other in self.neighbours[node]:
                    if component[other] < 0:
                        component[other], parent[other] = root, node
                        depth[other] = depth[node] + 1
                        row, col = (node, other) if node < self.n else (other, node)
                        potential[other] = cost[row, col - self.n] - potential[node]
                        queue.append(other)
        return parent, depth, component, potential

    def path(self, start: int, end: int, parent: np.ndarray, depth: np.ndarray) -> list[int]:
        """The nodes of the forest path from ``start`` to ``end`` (same component)."""
        head, tail = [start], [end]
        while head[-1] != tail[-1]:
            if depth[head[-1]] >= depth[tail[-1]]:
                head.append(int(parent[head[-1]]))
            else:
                tail.append(int(parent[tail[-1]]))
        return head + tail[-2::-1]

    def pivot(self, row: int, col: int, k: int, zero: float, parent: np.ndarray,
              depth: np.ndarray) -> bool:
        """Push flow around the cycle closed by ``(row, col)``; False if not allowed."""
        nodes = self.path(self.n + col, row, parent, depth)
        steps = list(zip(nodes[:-1], nodes[1:]))
        decreasing = steps[0::2]
        theta, leaving = min((self._flow(*step), step) for step in decreasing)
        if self.degree(col) >= k:
            leaving = decreasing[0]
            if self._flow(*leaving) > theta + zero:
                return False
        if theta <= zero:
            return False
        for position, (node, other) in enumerate(steps):
            key = (node, other - self.n) if node < self.n else (other, node - self.n)
            self.flow[key] += theta if position % 2 else -theta
        node, other = leaving
        del self.flow[(node, other - self.n) if node < self.n else (other, node - self.n)]
        self.neighbours[node].discard(other)
        self.neighbours[other].discard(node)
        self.flow[(row, col)] = theta
        self.neighbours[row].add(self.n + col)
        self.neighbours[self.n + col].add(row)
        return True


def lower_cost(forest: TransportForest, cost: np.ndarray, k: int, zero: float,
               max_pivots: int) -> int:
    """Pivot ``forest`` while some candidate pair lowers ``<C, T>``; return the pivots made."""
    rows, cols = candidate_pairs(cost)
    scale = float(np.abs(cost).max()) + 1.0
    for done in range(max_pivots):
        parent, depth, component, potential = forest.structure(cost)
        reduced = cost[rows, cols] - potential[rows] - potential[forest.n + cols]
        usable = (reduced < -1e-12 * scale) & (component[rows] == component[forest.n + cols])
        order = np.flatnonzero(usable)
        order = order[np.argsort(reduced[order])[:TRIES]]
        if not any(forest.pivot(int(rows[e]), int(cols[e]), k, zero, parent, depth)
                   for e in order):
            return done
    return max_pivots
