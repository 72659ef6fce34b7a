"""Sparsity-constrained optimal transport (Liu, Puigcerver & Blondel, ICLR 2023).

Primal (math note, section 2), with at most ``k`` nonzeros per plan column::

    min_{T in U(a, b)}  <C, T> + sum_j Omega(t_j),
    Omega(t) = (reg/2) ||t||^2 if ||t||_0 <= k else +inf.

It is solved through one of two smooth concave duals, maximised by the
shared loop :func:`certopt.ot.dual_ascent.maximize`:

``method="semi-dual"`` (one potential ``alpha``)::

    max_alpha  <alpha, a> - sum_j F_j(alpha - c_j),
    F_j(s) = max_{t >= 0, 1't = b_j, ||t||_0 <= k} <s, t> - (reg/2)||t||^2,
    t_j*   = projection of s / reg onto the k-sparse simplex of radius b_j.

``method="dual"`` (potentials ``alpha``, ``beta``)::

    max  <alpha, a> + <beta, b> - sum_j (1/(2 reg)) sum_{i in top-k} [alpha_i + beta_j - C_ij]_+^2,
    t_j* = [alpha + beta_j - c_j]_+ / reg on the top-k entries, 0 elsewhere.

Both gradients are marginal residuals (``a - T 1``, ``b - T^T 1``), so the
stopping rule is the L1 marginal error of the recovered plan.  Each
evaluation is one streamed pass over ``C`` (:mod:`certopt.ot.streaming`):
blocks of ``alpha - C^T`` (columns contiguous), a running top-k per column
merged block by block, the k-sparse projection and a scatter of ``k``
values per column.  ``C`` may be a stored matrix or a
:class:`~certopt.ot.geometry.PointCloudCost` computed block by block; no
``(n, m)`` temporary beyond one block exists inside the loop, and nothing
leaves the device there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from certopt.core.arrays import ArrayLike, check_scalar
from certopt.core.errors import InfeasibleSettingsError, InputValueError
from certopt.core.result import Status
from certopt.ot.dual_ascent import METHODS as OPTIMIZERS
from certopt.ot.dual_ascent import maximize
from certopt.ot.geometry import CostGeometry
from certopt.ot.problem import TransportProblem
from certopt.ot.projections import project_sorted
from certopt.ot.result import TransportResult, make_result
from certopt.ot.streaming import assemble, block_entries, column_blocks, column_top_k_pass

DualMethod = Literal["semi-dual", "dual"]
DUAL_METHODS: tuple[str, ...] = ("semi-dual", "dual")


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


def marginal_criterion(x: object, value: float, grad: torch.Tensor | tuple) -> float:
    """L1 marginal error of the plan at a dual point: the L1 norm(s) of the gradient."""
    parts = grad if isinstance(grad, tuple) else (grad,)
    return max(float(part.abs().sum()) for part in parts)


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
                   method=optimizer, lipschitz=lipschitz, verbose=verbose, desc=desc)
    final = evaluate(out.x)
    return DualSolution(final.plan, final.plan.alpha, final.beta, float(final.value),
                        out.status, out.n_iter, out.history)


def check_common_options(reg: float, method: str, max_iter: int, tol: float, optimizer: str
                         ) -> tuple[float, int, float]:
    """Validate the options shared by the smooth-dual solvers; return ``reg, max_iter, tol``."""
    reg = check_scalar(reg, "reg", low=0, low_inclusive=False)
    if method not in DUAL_METHODS:
        raise InputValueError(f"method: expected one of {DUAL_METHODS}, got {method!r}")
    if optimizer not in OPTIMIZERS:
        raise InputValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    max_iter = check_scalar(max_iter, "max_iter", low=1, integer=True)
    tol = check_scalar(tol, "tol", low=0, high=1, low_inclusive=False, high_inclusive=False)
    return reg, max_iter, tol


def check_budget(problem: TransportProblem, k: int) -> None:
    """Refuse a sparsity budget no plan can meet.

    Every source row with positive mass needs a nonzero, and only the ``m+``
    columns with positive mass may hold nonzeros, at most ``k`` each: a
    feasible k-sparse plan needs ``k m+ >= n+`` (rows with positive mass).
    """
    rows = int((problem.a > 0).sum())
    cols = int((problem.b > 0).sum())
    if k * cols < rows:
        raise InfeasibleSettingsError(
            f"k: no plan with at most k={k} nonzeros per column exists: {cols} target(s) with "
            f"positive mass can serve at most {k * cols} of the {rows} sources with positive "
            f"mass; expected k >= {-(-rows // cols)}")


def sparse(
    a: ArrayLike | None,
    b: ArrayLike | None,
    C: ArrayLike,
    k: int,
    reg: float = 1.0,
    method: DualMethod = "semi-dual",
    max_iter: int = 2000,
    tol: float = 1e-6,
    device: str | torch.device | None = None,
    verbose: bool = False,
    repair: bool = False,
    optimizer: str = "lbfgs",
) -> TransportResult:
    """Sparsity-constrained OT: at most ``k`` nonzeros in every column of the plan.

    Solves (math note, section 2)::

        min_{T >= 0, T 1 = a, T^T 1 = b}  <C, T> + (reg/2) ||T||_F^2
        subject to  ||T[:, j]||_0 <= k  for every column j

    through its semi-dual (default; columns carry exactly ``b_j``) or its
    dual (see the module docstring), in torch on ``device``.

    Parameters
    ----------
    a, b : (n,), (m,) arrays or None
        Source and target weights (nonnegative, equal totals); None: uniform.
    C : (n, m) array or :class:`~certopt.ot.geometry.PointCloudCost`
        Cost matrix, numpy or torch, or point clouds whose costs are computed
        block by block (memory ``O((n + m) d)`` plus one block, besides the
        returned plan).  The plan comes back as the same kind, dtype and
        device (a point cloud's: that of ``x``).
    k : int >= 1
        Maximum number of nonzeros per column (``k >= n``: quadratic OT).
    reg : float > 0
        The quadratic regularisation ``gamma`` of the math note.
    method : "semi-dual" or "dual"
    max_iter : int
        Budget of dual evaluations (each is one pass over ``C``).
    tol : float in (0, 1)
        Stop when the L1 marginal error ``max(||T1 - a||_1, ||T^T 1 - b||_1)``
        is at most ``tol * sum(a)`` (relative to the total mass).
    device : "cpu", "cuda", torch.device or None (``C``'s device)
    verbose : bool
        Progress bar with the dual value and the criterion.
    repair : bool
        Afterwards re-solve the convex QP restricted to the support found
        (each column's ``k`` candidate rows), so the marginals hold exactly
        when that support admits them; see :func:`certopt.ot.repair.repair`.
        The residuals then include ``marginal_error_before_repair`` and
        ``repair_converged`` (1.0 or 0.0); the status is OPTIMAL when the
        repaired plan meets ``tol`` (even if the dual ascent stalled).
    optimizer : "lbfgs" or "fista"
        The ascent algorithm of :func:`certopt.ot.dual_ascent.maximize`.

    Returns
    -------
    TransportResult
        ``plan`` (n, m) with at most ``k`` nonzeros per column; ``cost`` =
        <C, plan>; ``objective`` = cost + (reg/2)||plan||_F^2; ``dual_value``
        (the (semi-)dual value at ``potentials``, a lower bound on the
        optimum by weak duality); ``gap``; ``potentials`` = (alpha, beta)
        (for the semi-dual, ``beta`` are the column multipliers);
        ``residuals`` with ``source_marginal``, ``target_marginal``, ``nnz``,
        ``max_column_nnz``; ``status`` OPTIMAL when the tolerance was met.
    """
    k = check_scalar(k, "k", low=1, integer=True)
    reg, max_iter, tol = check_common_options(reg, method, max_iter, tol, optimizer)
    problem = TransportProblem.from_inputs(a, b, C, device)
    check_budget(problem, k)
    return solve_sparse(problem, k, reg, method=method, max_iter=max_iter, tol=tol,
                        verbose=verbose, repair=repair, optimizer=optimizer,
                        desc=f"sparse OT k={k} ({method})")


def solve_sparse(problem: TransportProblem, k: int, reg: float, *, method: str, max_iter: int,
                 tol: float, verbose: bool, repair: bool, optimizer: str, desc: str
                 ) -> TransportResult:
    """Solve a validated problem (shared by :func:`sparse` and :func:`quadratic`)."""
    start = time.perf_counter()
    duals = ColumnDuals(problem, k, reg)
    abs_tol = tol * float(problem.a.sum())
    solution = solve_column_dual(duals, method, tol=abs_tol, max_iter=max_iter,
                                 optimizer=optimizer, verbose=verbose, desc=desc)
    plan = solution.plan.dense()
    extra: dict[str, float] = {}
    n_iter, status = solution.n_iter, solution.status
    if repair:
        from certopt.ot.repair import repair_plan

        outcome = repair_plan(problem, solution, duals, max_iter=max_iter,
                              optimizer=optimizer, verbose=verbose)
        plan = outcome.plan
        n_iter += outcome.n_iter
        extra.update(marginal_error_before_repair=outcome.error_before,
                     repair_converged=float(outcome.converged))
        if outcome.converged and outcome.error_after <= abs_tol:
            status = Status.OPTIMAL          # the tolerance is met by the repaired plan
    column_nnz = (plan != 0).sum(0)
    extra.update(nnz=float(column_nnz.sum()), max_column_nnz=float(column_nnz.max()))
    return make_result(
        problem, plan,
        regulariser=0.5 * reg * float(torch.dot(plan.reshape(-1), plan.reshape(-1))),
        dual_value=solution.dual_value,
        potentials=(solution.alpha, solution.beta),
        status=status,
        n_iter=n_iter,
        solve_time=time.perf_counter() - start,
        history=solution.history,
        extra=extra,
    )
