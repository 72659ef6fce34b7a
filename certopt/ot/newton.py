"""Semismooth Newton on the quadratic / k-sparse OT dual: finishing a solve to round-off.

The dual of :class:`certopt.ot.column_duals.ColumnDuals` (math note, sections 2 and 4),
potentials ``x = (alpha, beta)``::

    D(alpha, beta) = <alpha, a> + <beta, b>
                     - (1 / 2 reg) sum_j sum_{i in S_j} [alpha_i + beta_j - C_ij]_+^2,

with ``S_j`` the top-k rows of column ``j`` of ``alpha - C`` (every row when
``k >= n``; a fixed support for the repair), is concave and piecewise
quadratic.  Its gradient is ``(a - T 1, b - T^T 1)`` with
``T_ij = [alpha_i + beta_j - C_ij]_+ / reg`` on ``S``.  On the piece where
the active set ``E = {(i, j) : i in S_j, T_ij > 0}`` is fixed, ``D`` is a
quadratic with Hessian ``-H / reg``::

    H = [[diag(r), A], [A^T, diag(c)]],   (u, v)^T H (u, v) = sum_{(i,j) in E} (u_i + v_j)^2,

``A`` the 0/1 incidence matrix of ``E`` and ``r``, ``c`` its row and column
degrees (Lorenz, Manns & Meyer 2019: an element of the generalized Jacobian
of the gradient, valid at the kinks of ``[.]_+`` and at ties of the top-k).
``H`` is singular (``u = 1`` on the rows and ``v = -1`` on the columns of a
connected component of ``E``), so each step solves the regularised system::

    (H / reg + delta I) d = grad D,   delta = ||grad D||_1 / reg,

(Levenberg-Marquardt: the step stays bounded along the null directions and
``delta -> 0`` as the gradient vanishes, so convergence is superlinear once
the active set is right).  A row or column with no active entry gets the
diagonal ``1 / reg`` (as if one entry were active), so its step is
``reg * grad``.  The system is solved matrix-free by Jacobi-preconditioned
conjugate gradients: a product with ``H`` is two ``index_add`` over ``E``,
``O(|E|)`` work in torch on the potentials' device.  The step is accepted
by Armijo backtracking on ``D`` itself, and doubled while ``D`` rises
linearly along it (a component of ``E`` whose marginals do not balance:
a null direction of ``H``, where only the next kink stops the ascent), so
every iterate is a point where the dual was evaluated: its value is a valid
lower bound.

On a fixed support the Newton iteration solves the convex QP restricted to
that support; when that QP is infeasible its dual is unbounded and the
iteration stops at its budget with the marginals unmet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from certopt.core.result import Status
from certopt.ot.column_duals import l1_marginal_error
from certopt.ot.streaming import column_blocks

ARMIJO = 1e-4
MAX_BACKTRACKS = 30
MAX_EXPANSIONS = 30
LINEAR_RATIO = 0.5
"""Expand a full step while the rise is at least this share of its first-order prediction."""
MAX_STEPS = 60
STALL_STEPS = 8
"""Stop (INACCURATE) when the criterion has not halved in this many steps: a kink."""
ROUNDOFF_SLACK = 8.0
CG_FORCING = 1e-2


@dataclass(frozen=True)
class NewtonOutcome:
    """Where the Newton iteration stopped: the last accepted dual point and its evaluation.

    ``evaluation`` is :class:`certopt.ot.column_duals.Evaluation` at ``(alpha, beta)``;
    ``criterion`` its L1 marginal error ``max(||a - T1||_1, ||b - T^T 1||_1)``;
    ``status`` OPTIMAL when ``criterion <= tol``, INACCURATE when no ascent step
    was found, the criterion did not halve in ``STALL_STEPS`` steps or the step
    budget ran out, MAX_ITER when the evaluation budget
    ran out, NUMERICAL if the dual became non-finite; ``n_eval`` the passes over
    ``C``; ``history`` the value and criterion at accepted points.
    """

    alpha: torch.Tensor
    beta: torch.Tensor
    evaluation: object
    criterion: float
    status: Status
    n_eval: int
    history: dict[str, list[float]]


def active_entries(duals, evaluation) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of the plan's positive entries (the active set ``E``)."""
    plan = evaluation.plan
    if plan.rows is not None:
        positive = plan.values > 0
        cols = torch.arange(plan.rows.shape[0], device=plan.rows.device)
        return plan.rows[positive], cols.unsqueeze(1).expand_as(plan.rows)[positive]
    rows_found, cols_found = [], []
    for cols, rows, scores in column_blocks(duals.cost, plan.alpha, duals.entries):
        col_local, row_local = torch.nonzero(scores + plan.beta[cols].unsqueeze(1) > 0,
                                             as_tuple=True)
        rows_found.append(row_local + rows.start)
        cols_found.append(col_local + cols.start)
    return torch.cat(rows_found), torch.cat(cols_found)


def newton_direction(rows: torch.Tensor, cols: torch.Tensor, grad: torch.Tensor, n: int,
                     reg: float, delta: float, residual_tol: float) -> torch.Tensor:
    """Solve ``(H' / reg + delta I) d = grad`` (flat ``(n + m,)``) by Jacobi-preconditioned CG.

    ``H'`` is ``H`` of the module docstring with a degree of 1 on nodes that have
    none.  Stops when ``||residual||_2 <= residual_tol`` or after ``2 (n + m)``
    iterations (the best CG can do in floating point on these graphs).
    """
    size = grad.shape[0]
    degree = torch.zeros_like(grad)
    degree.index_add_(0, rows, torch.ones_like(rows, dtype=grad.dtype))
    degree.index_add_(0, cols + n, torch.ones_like(cols, dtype=grad.dtype))
    diagonal = degree.clamp_min(1.0) / reg + delta

    def apply(x: torch.Tensor) -> torch.Tensor:
        out = diagonal * x
        out.index_add_(0, rows, x[cols + n] / reg)
        out.index_add_(0, cols + n, x[rows] / reg)
        return out

    x = torch.zeros_like(grad)
    residual = grad.clone()
    z = residual / diagonal
    p = z.clone()
    rz = residual @ z
    for _ in range(2 * size):
        if float(residual.norm()) <= residual_tol:
            break
        hp = apply(p)
        step = rz / (p @ hp)
        x.add_(p, alpha=float(step))
        residual.sub_(hp, alpha=float(step))
        z = residual / diagonal
        rz_next = residual @ z
        p = z + (rz_next / rz) * p
        rz = rz_next
    return x


@dataclass(frozen=True)
class Step:
    """The step length a line search accepted, its dual evaluations, whether it ran out."""

    length: float
    evaluations: int
    out_of_budget: bool


def line_search(duals, alpha: torch.Tensor, beta: torch.Tensor, direction: torch.Tensor,
                value: float, slope: float, tol: float, budget: int, slack: float):
    """Armijo backtracking from the full step, and doubling while the dual rises linearly.

    Backtracking halves the step until ``D(x + t d) - D(x) >= ARMIJO t slope``
    (``slope = grad . d``, with a round-off slack) or the trial meets ``tol``.
    A full step whose rise is at least ``LINEAR_RATIO`` of ``t slope`` lies
    where ``D`` is nearly linear along ``d`` (a null direction of ``H``: a
    component of the active set whose marginals do not balance, which no
    Hessian step resolves), so the step is doubled while the rise stays that
    linear and the max-norm stays below ``duals.step_limit``: the next kink is
    reached in logarithmically many evaluations.  Returns the :class:`Step`
    and the accepted evaluation (None when no step was accepted).
    """
    n = duals.n

    def evaluate(length: float):
        trial = duals.dual(alpha + length * direction[:n], beta + length * direction[n:])
        rise = float(trial.value) - value
        finite = math.isfinite(float(trial.value))
        met = finite and l1_marginal_error(trial.grad) <= tol
        tolerance = slack * max(abs(value), abs(float(trial.value))) if finite else 0.0
        return trial, finite, met, rise + tolerance

    length, count = 1.0, 0
    for _ in range(MAX_BACKTRACKS):
        if count >= budget:
            return Step(length, count, True), None
        trial, finite, met, rise = evaluate(length)
        count += 1
        if finite and (met or rise >= ARMIJO * length * slope):
            break
        length *= 0.5
    else:
        return Step(length, count, False), None          # no ascent step: a kink or round-off
    if length < 1.0 or met:
        return Step(length, count, False), trial
    longest = float(direction.abs().max())
    for _ in range(MAX_EXPANSIONS):
        if (rise < LINEAR_RATIO * length * slope or count >= budget
                or 2 * length * longest > duals.step_limit):
            break
        bigger, finite, met, bigger_rise = evaluate(2 * length)
        count += 1
        if not finite or bigger_rise <= rise:
            break
        length, trial, rise = 2 * length, bigger, bigger_rise
        if met:
            break
    return Step(length, count, False), trial


def semismooth_newton(duals, alpha: torch.Tensor, beta: torch.Tensor, *, tol: float,
                      max_eval: int, max_steps: int = MAX_STEPS,
                      stall_steps: int | None = STALL_STEPS) -> NewtonOutcome:
    """Maximise the dual of ``duals`` from ``(alpha, beta)`` until the marginal error is ``<= tol``.

    ``tol`` is absolute (L1 marginal error); ``max_eval`` bounds the passes over
    ``C``, ``max_steps`` the Newton steps; ``stall_steps`` (None: never) stops
    when the criterion has not halved in that many steps.  Every returned point
    was evaluated; see :class:`NewtonOutcome`.
    """
    n = duals.n
    evaluation = duals.dual(alpha, beta)
    value, crit, count = float(evaluation.value), l1_marginal_error(evaluation.grad), 1
    history: dict[str, list[float]] = {"value": [value], "criterion": [crit],
                                       "evaluations": [count]}
    status = Status.OPTIMAL
    if not math.isfinite(value):
        return NewtonOutcome(alpha, beta, evaluation, math.inf, Status.NUMERICAL, count, history)
    slack = ROUNDOFF_SLACK * torch.finfo(alpha.dtype).eps
    for _ in range(max_steps):
        if crit <= tol:
            break
        grad = torch.cat(evaluation.grad)
        rows, cols = active_entries(duals, evaluation)
        residual_tol = CG_FORCING * min(float(grad.norm()), tol / math.sqrt(grad.shape[0]))
        direction = newton_direction(rows, cols, grad, n, duals.reg, crit / duals.reg,
                                     residual_tol)
        longest = float(direction.abs().max())
        if longest > duals.step_limit:
            direction = direction * (duals.step_limit / longest)
        slope = float(grad @ direction)
        step, trial = line_search(duals, alpha, beta, direction, value, slope, tol,
                                  max_eval - count, slack)
        count += step.evaluations
        if trial is None:
            status = Status.MAX_ITER if step.out_of_budget else Status.INACCURATE
            break
        alpha, beta = alpha + step.length * direction[:n], beta + step.length * direction[n:]
        evaluation, value, crit = trial, float(trial.value), l1_marginal_error(trial.grad)
        history["value"].append(value)
        history["criterion"].append(crit)
        history["evaluations"].append(count)
        recent = history["criterion"][-(stall_steps or 0) - 1:]
        if (stall_steps is not None and len(recent) > stall_steps
                and min(recent[1:]) > 0.5 * recent[0] and crit > tol):
            status = Status.INACCURATE
            break
    else:
        status = Status.INACCURATE if crit > tol else Status.OPTIMAL
    if crit > tol and status is Status.OPTIMAL:
        status = Status.INACCURATE
    return NewtonOutcome(alpha, beta, evaluation, crit, status, count, history)
