"""The k-sparse quadratic OT duals, one streamed pass over ``C`` per evaluation.

:class:`ColumnDuals` evaluates the semi-dual and the dual of sparsity-constrained
OT (math note, section 2; formulas in :mod:`certopt.ot.sparse`) and recovers
the plan of a dual point; :func:`solve_column_dual` maximises either with the
first-order loop of :func:`certopt.ot.dual_ascent.maximize`.  Each evaluation
reads ``C`` once through :mod:`certopt.ot.streaming`: blocks of
``alpha - C^T`` (columns contiguous), a running top-k per column merged block
by block, the k-sparse projection and a scatter of ``k`` values per column.
``C`` may be a stored matrix or a :class:`~certopt.ot.geometry.PointCloudCost`
computed block by block; no ``(n, m)`` temporary beyond one block exists
inside the loop, and nothing leaves the device there.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from certopt.core.result import Status
from certopt.ot.dual_ascent import maximize
from certopt.ot.geometry import CostGeometry
from certopt.ot.problem import TransportProblem
from certopt.ot.projections import project_sorted
from certopt.ot.streaming import (
    assemble,
    block_entries,
    column_blocks,
    column_top_k_pass,
    cost_range,
)


@dataclass(frozen=True)
class ColumnPlan:
    """A plan ``T_ij = [alpha_i + beta_j - C_ij]_+ / reg`` on each column's support.

    ``rows[j, l]`` is the source index of the ``l``-th entry of column ``j``
    and ``values[j, l]`` its mass (``(m, k)`` each); ``rows is None`` means
    every row is in the support (``k >= n``): the plan is then rebuilt from
    the potentials block by block, never kept as an ``(n, m)`` array.
    """

    values: torch.Tensor | None
    rows: torch.Tensor | None
    alpha: torch.Tensor
    beta: torch.Tensor
    reg: float
    cost: CostGeometry

    def dense(self) -> torch.Tensor:
        """The ``(n, m)`` plan."""
        n, m = self.cost.shape
        if self.rows is None:
            alpha, beta = self.alpha, self.beta
            return assemble(self.cost, lambda block, rows, cols: (
                alpha[rows].unsqueeze(1) + beta[cols].unsqueeze(0) - block
            ).clamp_min(0) / self.reg)
        out = torch.zeros(n, m, dtype=self.values.dtype, device=self.values.device)
        cols = torch.arange(m, device=self.rows.device).unsqueeze(1).expand_as(self.rows)
        return out.index_put_((self.rows, cols), self.values)


class Evaluation(NamedTuple):
    """One (semi-)dual evaluation: value, gradient, plan and column multipliers ``beta``.

    ``grad`` is ``a - T 1`` (semi-dual) or ``(a - T 1, b - T^T 1)`` (dual).
    """

    value: torch.Tensor
    grad: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    plan: ColumnPlan
    beta: torch.Tensor


class ColumnDuals:
    """The semi-dual and dual of k-sparse quadratic OT, one streamed pass over ``C``.

    Each evaluation reads ``C`` once through :mod:`certopt.ot.streaming`
    (blocks of at most ``entries`` costs, as ``C^T`` so plan columns are
    contiguous): a running top-k of every column of ``alpha - C``, then the
    column's projection, its share of the value and of ``T 1``.  The memory
    beyond one block is the ``(m, k)`` candidates (the sparse plan itself);
    for ``k >= n`` nothing of size ``n m`` is kept (the plan is rebuilt from
    the potentials).

    ``support`` (optional, ``(m, k)`` row indices) fixes the entries each
    column may use instead of choosing its top-k: this is the dual of the
    convex QP restricted to that support (used by :mod:`certopt.ot.repair`);
    its ``m k`` costs are gathered once.
    """

    def __init__(self, problem: TransportProblem, k: int, reg: float,
                 support: torch.Tensor | None = None, entries: int | None = None):
        self.a, self.b = problem.a, problem.b
        self.n, self.m = problem.shape
        self.k = min(int(k), self.n)
        self.reg = float(reg)
        self.cost = problem.geometry
        self.entries = block_entries(self.a.device) if entries is None else int(entries)
        self.support = support
        self.support_cost = None if support is None else self.cost.entries(
            support, torch.arange(self.m, device=support.device).unsqueeze(1))

    @functools.cached_property
    def step_limit(self) -> float:
        """Largest sensible max-norm of a step in the potentials: ``4 (max C - min C + reg)``.

        At a dual optimum ``alpha_i + beta_j - C_ij <= reg T_ij <= reg`` on the
        support, so the potentials span about the range of ``C`` (one streamed
        pass, cached).
        """
        if self.support_cost is not None:
            low, high = self.support_cost.min(), self.support_cost.max()
        else:
            low, high = cost_range(self.cost, self.entries)
        return 4.0 * (float(high) - float(low) + self.reg)

    @property
    def every_row(self) -> bool:
        """Every row is in every column's support (``k >= n``, no fixed support)."""
        return self.support is None and self.k >= self.n

    def candidates(self, alpha: torch.Tensor
                   ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """``(cols, values, rows)``: each column's ``k`` largest ``alpha_i - C_ij``, decreasing.

        On a fixed support: that support's scores, sorted, in one chunk.
        """
        if self.support is None:
            yield from column_top_k_pass(self.cost, alpha, self.k, self.entries)
            return
        values, order = torch.sort(alpha[self.support] - self.support_cost, dim=1,
                                   descending=True)
        yield slice(0, self.m), values, torch.gather(self.support, 1, order)

    def _plan(self, alpha: torch.Tensor, beta: torch.Tensor, masses: torch.Tensor | None,
              rows: torch.Tensor | None) -> ColumnPlan:
        if self.every_row:
            return ColumnPlan(None, None, alpha, beta, self.reg, self.cost)
        return ColumnPlan(masses, rows, alpha, beta, self.reg, self.cost)

    def semi_dual(self, alpha: torch.Tensor) -> Evaluation:
        """Semi-dual value, gradient ``a - T 1``, plan and column multipliers ``beta``.

        Column ``j``: ``t_j = P(s / reg)`` with ``s = alpha - c_j`` on its top-k
        entries and ``P`` the projection onto the simplex of radius ``b_j``
        (threshold ``tau_j``); ``F_j = <s, t_j> - (reg/2)||t_j||^2``.
        ``beta_j = -reg * tau_j`` is the multiplier of ``1't_j = b_j``, so
        ``t_j = [alpha + beta_j - c_j]_+ / reg`` on its support.
        """
        row_sums = torch.zeros_like(self.a)
        beta = torch.empty_like(self.b)
        keep = not self.every_row
        masses_all = alpha.new_empty(self.m, self.k) if keep else None
        rows_all = torch.empty(self.m, self.k, dtype=torch.long, device=alpha.device) \
            if keep else None
        conjugate = alpha.new_zeros(())
        for cols, values, rows in self.candidates(alpha):
            masses, tau = project_sorted(values / self.reg, self.b[cols])
            conjugate = conjugate + (values * masses).sum() \
                - 0.5 * self.reg * (masses * masses).sum()
            row_sums.index_add_(0, rows.reshape(-1), masses.reshape(-1))
            beta[cols] = -self.reg * tau
            if keep:
                masses_all[cols], rows_all[cols] = masses, rows
        value = alpha @ self.a - conjugate
        return Evaluation(value, self.a - row_sums,
                          self._plan(alpha, beta, masses_all, rows_all), beta)

    def dual(self, alpha: torch.Tensor, beta: torch.Tensor) -> Evaluation:
        """Dual value, gradients ``(a - T 1, b - T^T 1)`` and plan.

        ``t_j = [alpha + beta_j - c_j]_+ / reg`` on the top-k entries of
        ``alpha - c_j`` (all entries when ``k >= n``: then no top-k, every
        block contributes directly); conjugate ``(reg/2) sum ||t_j||^2``.
        """
        row_sums = torch.zeros_like(self.a)
        col_sums = torch.zeros_like(self.b)
        squares = alpha.new_zeros(())
        if self.every_row:
            masses_all = rows_all = None
            for cols, rows, scores in column_blocks(self.cost, alpha, self.entries):
                masses = (scores + beta[cols].unsqueeze(1)).clamp_min(0) / self.reg
                squares = squares + (masses * masses).sum()
                row_sums[rows] += masses.sum(0)
                col_sums[cols] += masses.sum(1)
        else:
            masses_all = alpha.new_empty(self.m, self.k)
            rows_all = torch.empty(self.m, self.k, dtype=torch.long, device=alpha.device)
            for cols, values, rows in self.candidates(alpha):
                masses = (values + beta[cols].unsqueeze(1)).clamp_min(0) / self.reg
                squares = squares + (masses * masses).sum()
                row_sums.index_add_(0, rows.reshape(-1), masses.reshape(-1))
                col_sums[cols] = masses.sum(1)
                masses_all[cols], rows_all[cols] = masses, rows
        value = alpha @ self.a + beta @ self.b - 0.5 * self.reg * squares
        return Evaluation(value, (self.a - row_sums, self.b - col_sums),
                          self._plan(alpha, beta, masses_all, rows_all), beta)


def l1_marginal_error(grad: torch.Tensor | tuple[torch.Tensor, ...]) -> float:
    """L1 marginal error of the plan at a dual point: the largest L1 norm of the
    gradient's parts (``a - T 1`` and, for the dual, ``b - T^T 1``)."""
    parts = grad if isinstance(grad, tuple) else (grad,)
    return max(float(part.abs().sum()) for part in parts)


def marginal_criterion(x: object, value: float, grad: torch.Tensor | tuple) -> float:
    """:func:`l1_marginal_error` as a stopping criterion of :func:`maximize`."""
    return l1_marginal_error(grad)


@dataclass(frozen=True)
class DualSolution:
    """What a sparse dual solve hands to the result: plan, potentials, evidence."""

    plan: ColumnPlan
    alpha: torch.Tensor
    beta: torch.Tensor
    dual_value: float
    status: Status
    n_iter: int
    history: dict[str, list[float]]


def solve_column_dual(
    duals: ColumnDuals,
    method: str,
    *,
    tol: float,
    max_iter: int,
    optimizer: str,
    verbose: bool,
    desc: str,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DualSolution:
    """Maximise the (semi-)dual of ``duals`` and recover its plan.

    ``tol`` is the absolute L1 marginal error at which to stop.  ``start``
    optionally gives initial potentials ``(alpha, beta)``; by default
    ``alpha = 0`` and (dual method) ``beta`` the column multipliers of the
    semi-dual at ``alpha = 0``, so every column starts with its exact mass.
    """
    dtype, device = duals.a.dtype, duals.a.device
    if start is None:
        alpha0 = torch.zeros(duals.n, dtype=dtype, device=device)
        beta0 = duals.semi_dual(alpha0).beta if method == "dual" else None
    else:
        alpha0, beta0 = start
    lipschitz = max(1.0, duals.k * duals.m / duals.n) / duals.reg
    if method == "semi-dual":
        def evaluate(x):
            return duals.semi_dual(x)
        x0 = alpha0
    else:
        def evaluate(x):
            return duals.dual(*x)
        x0 = (alpha0, beta0)

    def value_and_grad(x):
        evaluation = evaluate(x)
        return evaluation.value, evaluation.grad

    out = maximize(value_and_grad, x0, marginal_criterion, tol=tol, max_iter=max_iter,
                   method=optimizer, lipschitz=lipschitz, verbose=verbose, desc=desc,
                   max_step=duals.step_limit)
    final = evaluate(out.x)
    return DualSolution(final.plan, final.plan.alpha, final.beta, float(final.value),
                        out.status, out.n_iter, out.history)
