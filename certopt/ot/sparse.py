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
evaluation is one pass over ``C``: ``alpha - c_j`` for every column, one
``torch.topk`` along the columns, and a scatter of ``k`` values per column.
Columns are stored as rows of ``C^T`` so every reduction runs along
contiguous memory; nothing leaves the device inside the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch

from certopt.core.arrays import ArrayLike, check_scalar
from certopt.core.errors import InputValueError
from certopt.core.result import Status
from certopt.ot.dual_ascent import METHODS as OPTIMIZERS
from certopt.ot.dual_ascent import maximize
from certopt.ot.problem import TransportProblem
from certopt.ot.projections import project_sorted, top_k_last
from certopt.ot.result import TransportResult, make_result

DualMethod = Literal["semi-dual", "dual"]
DUAL_METHODS: tuple[str, ...] = ("semi-dual", "dual")
CPU_BLOCK_SCORES = 2**18


@dataclass(frozen=True)
class ColumnPlan:
    """A plan with at most ``k`` entries per column, in column-sparse form.

    ``rows[j, l]`` is the source index of the ``l``-th entry of column ``j``
    and ``values[j, l]`` its mass (``(m, k)`` each); ``rows is None`` means a
    dense ``(m, n)`` block (``values`` is then ``T^T``).
    """

    values: torch.Tensor
    rows: torch.Tensor | None

    def row_sums(self, n: int) -> torch.Tensor:
        """``T 1`` (length ``n``)."""
        if self.rows is None:
            return self.values.sum(0)
        out = torch.zeros(n, dtype=self.values.dtype, device=self.values.device)
        return out.index_add_(0, self.rows.reshape(-1), self.values.reshape(-1))

    def dense(self, n: int) -> torch.Tensor:
        """The ``(n, m)`` plan."""
        if self.rows is None:
            return self.values.T.contiguous()
        m = self.values.shape[0]
        out = torch.zeros(m, n, dtype=self.values.dtype, device=self.values.device)
        return out.scatter_(1, self.rows, self.values).T.contiguous()


class ColumnDuals:
    """The semi-dual and dual of k-sparse quadratic OT, column-parallel on ``C^T``.

    ``support`` (optional, ``(m, k)`` row indices) fixes the entries each
    column may use instead of choosing its top-k: this is the dual of the
    convex QP restricted to that support (used by :mod:`certopt.ot.repair`).
    """

    def __init__(self, problem: TransportProblem, k: int, reg: float,
                 support: torch.Tensor | None = None):
        self.a, self.b = problem.a, problem.b
        self.n, self.m = problem.shape
        self.k = min(int(k), self.n)
        self.reg = float(reg)
        self.cost_t = problem.C.T.contiguous()            # (m, n): plan columns as rows
        self.support = support
        # On CPU, columns are scanned in blocks of about 2**18 scores so the
        # temporary alpha - c_j stays in cache; on CUDA one block (full parallelism).
        cpu = self.cost_t.device.type == "cpu"
        self.block_rows = max(1, CPU_BLOCK_SCORES // self.n) if cpu else self.m
        self.support_cost = None if support is None else torch.gather(self.cost_t, 1, support)

    def scores(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``alpha_i - C_ij`` on each column's candidate entries.

        Returns ``(values, rows)`` of shape ``(m, k)`` (decreasing along each
        row, except on a fixed ``support``, kept in its given order), or the dense
        ``(m, n)`` block and ``None`` when ``k = n`` with no fixed support.
        """
        if self.support is not None:
            return alpha[self.support] - self.support_cost, self.support
        if self.k >= self.n:
            return alpha.unsqueeze(0) - self.cost_t, None
        blocks = [top_k_last(alpha.unsqueeze(0) - block, self.k)
                  for block in self.cost_t.split(self.block_rows)]
        if len(blocks) == 1:
            return blocks[0]
        return torch.cat([v for v, _ in blocks]), torch.cat([r for _, r in blocks])

    def semi_dual(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, ColumnPlan,
                                                     torch.Tensor]:
        """Semi-dual value, gradient ``a - T 1``, plan and column multipliers ``beta``.

        ``beta_j = -reg * tau_j`` is the multiplier of ``1't_j = b_j`` in
        ``F_j``, so ``t_j = [alpha + beta_j - c_j]_+ / reg`` on its support.
        """
        values, rows = self.scores(alpha)
        if rows is None:                                    # k = n: sort whole columns
            values, rows = top_k_last(values, self.n)
        elif self.support is not None:                      # fixed support: sort it
            values, order = torch.sort(values, dim=1, descending=True)
            rows = torch.gather(rows, 1, order)
        masses, tau = project_sorted(values / self.reg, self.b)
        conjugate = (values * masses).sum() - 0.5 * self.reg * (masses * masses).sum()
        plan = ColumnPlan(masses, rows)
        value = alpha @ self.a - conjugate
        return value, self.a - plan.row_sums(self.n), plan, -self.reg * tau

    def dual(self, alpha: torch.Tensor, beta: torch.Tensor
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], ColumnPlan]:
        """Dual value, gradients ``(a - T 1, b - T^T 1)`` and plan."""
        values, rows = self.scores(alpha)
        masses = (values + beta.unsqueeze(1)).clamp_min(0) / self.reg
        conjugate = 0.5 * self.reg * (masses * masses).sum()
        plan = ColumnPlan(masses, rows)
        value = alpha @ self.a + beta @ self.b - conjugate
        grads = (self.a - plan.row_sums(self.n), self.b - masses.sum(1))
        return value, grads, plan


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
        beta0 = duals.semi_dual(alpha0)[3] if method == "dual" else None
    else:
        alpha0, beta0 = start
    lipschitz = max(1.0, duals.k * duals.m / duals.n) / duals.reg
    if method == "semi-dual":
        def value_and_grad(alpha):
            value, grad, _, _ = duals.semi_dual(alpha)
            return value, grad
        x0 = alpha0
    else:
        def value_and_grad(x):
            value, grads, _ = duals.dual(*x)
            return value, grads
        x0 = (alpha0, beta0)
    out = maximize(value_and_grad, x0, marginal_criterion, tol=tol, max_iter=max_iter,
                   method=optimizer, lipschitz=lipschitz, verbose=verbose, desc=desc)
    if method == "semi-dual":
        value, _, plan, beta = duals.semi_dual(out.x)
        alpha = out.x
    else:
        alpha, beta = out.x
        value, _, plan = duals.dual(alpha, beta)
    return DualSolution(plan, alpha, beta, float(value), out.status, out.n_iter,
                        out.history)


def check_common_options(reg: float, method: str, max_iter: int, tol: float, optimizer: str
                         ) -> tuple[float, int, float]:
    """Validate the options shared by the smooth-dual solvers; return ``reg, max_iter, tol``."""
    reg = check_scalar(reg, "reg", low=0, low_inclusive=False)
    if method not in DUAL_METHODS:
        raise InputValueError(f"method: expected one of {DUAL_METHODS}, got {method!r}")
    if optimizer not in OPTIMIZERS:
        raise InputValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    max_iter = check_scalar(max_iter, "max_iter", low=1, integer=True)
    tol = check_scalar(tol, "tol", low=0, low_inclusive=False)
    return reg, max_iter, tol


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
    C : (n, m) array
        Cost matrix; numpy or torch.  The plan comes back as the same kind,
        dtype and device.
    k : int >= 1
        Maximum number of nonzeros per column (``k >= n``: quadratic OT).
    reg : float > 0
        The quadratic regularisation ``gamma`` of the math note.
    method : "semi-dual" or "dual"
    max_iter : int
        Budget of dual evaluations (each is one pass over ``C``).
    tol : float
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
    plan = solution.plan.dense(duals.n)
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
        regulariser=0.5 * reg * float((plan * plan).sum()),
        dual_value=solution.dual_value,
        potentials=(solution.alpha, solution.beta),
        status=status,
        n_iter=n_iter,
        solve_time=time.perf_counter() - start,
        history=solution.history,
        extra=extra,
    )
