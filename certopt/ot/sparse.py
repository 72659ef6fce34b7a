"""Sparsity-constrained optimal transport (Liu, Puigcerver & Blondel, ICLR 2023).

Primal (math note, section 2), with at most ``k`` nonzeros per plan column::

    min_{T in U(a, b)}  <C, T> + sum_j Omega(t_j),
    Omega(t) = (reg/2) ||t||^2 if ||t||_0 <= k else +inf.

It is solved through one of two concave duals (:mod:`certopt.ot.column_duals`):

``method="semi-dual"`` (one potential ``alpha``)::

    max_alpha  <alpha, a> - sum_j F_j(alpha - c_j),
    F_j(s) = max_{t >= 0, 1't = b_j, ||t||_0 <= k} <s, t> - (reg/2)||t||^2,
    t_j*   = projection of s / reg onto the k-sparse simplex of radius b_j.

``method="dual"`` (potentials ``alpha``, ``beta``)::

    max  <alpha, a> + <beta, b> - sum_j (1/(2 reg)) sum_{i in top-k} [alpha_i + beta_j - C_ij]_+^2,
    t_j* = [alpha + beta_j - c_j]_+ / reg on the top-k entries, 0 elsewhere.

Both gradients are marginal residuals (``a - T 1``, ``b - T^T 1``), so the
stopping rule is the L1 marginal error of the recovered plan.  A solve runs
in three phases, all in torch on the problem's device:

1. first order: L-BFGS (or FISTA) on the chosen dual until the marginal
   error is below ``SWITCH_TOL`` (relative) or a quarter of the remaining
   budget is spent;
2. finish: semismooth Newton on the dual (:mod:`certopt.ot.newton`) from
   that point, to ``FINISH_ULPS`` machine epsilons (or ``tol`` if larger);
   quadratic OT (``k >= n``) and sparse OT whose top-k sets settle end here
   with marginal errors near round-off.  If Newton stalls having gained
   (far from the optimum), phases 1 and 2 repeat from its point with a ten
   times tighter switch, up to ``MAX_ROUNDS`` times; if it stalls without
   gaining (``KINK_RATIO``), the dual is at a kink;
3. repair (automatic when phase 2 misses ``tol`` and ``k < n``): the convex
   QP on the support found (:mod:`certopt.ot.repair`), after swapping rows
   into the support until it admits a plan (max flow), or building one
   that does (exact OT with capped columns, or a staircase:
   :mod:`certopt.ot.support_search`), solved directly
   (interior point, :mod:`certopt.ot.support_qp`) and finished by Newton:
   its plan then meets the marginals to round-off.  When that QP's objective
   lies more than ``LOCAL_SEARCH_GAP`` above the bound, a local search
   (:mod:`certopt.ot.support_pricing`) prices the entries off the support
   with the QP's potentials and pivots the profitable ones in while the QP
   objective falls.  If it finds none, the rest of the budget goes to
   the first-order ascent, for a tighter bound;
4. bound (``k < n``, when the gap exceeds ``BOUND_GAP`` and ``tol``): phases 1, 2 on
   the quadratic-OT dual (``k = n``), from the sparse potentials.

Total mass ``s != 1`` is solved as the normalised problem: with
``T = s T'``, ``<C, T> + (reg/2)||T||^2 = s (<C, T'> + (reg s / 2)||T'||^2)``,
so ``T'`` solves the unit-mass problem with regularisation ``reg * s``; the
potentials are the same and the dual value scales by ``s``.

Certificate: ``dual_value`` is the best of the dual values evaluated, each
a lower bound on the sparse optimum:

* the (semi-)dual of sparse OT at any point (weak duality; the primal is
  non-convex, its dual a relaxation: for ``k < n`` a gap may remain at the
  optimum, and at kinks, e.g. rounded costs, the ascent can stop far below);
* the dual of quadratic OT (the same :class:`ColumnDuals` with ``k = n``)
  at any point: quadratic OT is sparse OT without the cardinality
  constraint, so its optimum, and every value of its dual, lies below the
  sparse optimum.  It is computed only when ``objective - bound >
  max(tol, BOUND_GAP) |objective|`` after the sparse phases (a well-converged sparse dual
  needs no help: its top-k sum of ``[.]_+^2`` is at most the full sum, so the
  sparse dual is at least the quadratic dual at every point, and its maximum
  at least quadratic OT's optimum).  Then ``residuals`` carry
  ``sparse_dual_bound``, ``quadratic_dual_bound`` and
  ``bound_from_quadratic`` (1.0 when the quadratic bound won).

``objective`` is an upper bound when the plan meets the marginals;
``gap_certified`` says whether the plan meets them to ``tol``.
Status: OPTIMAL when the marginal error is at most ``tol`` (times the mass):
the plan has at most ``k`` nonzeros per column and meets the marginals, and
``dual_value`` is a valid lower bound; the primal being non-convex, the
plan need not be its optimum (``gap`` bounds how far it is);
INACCURATE when no k-sparse plan on the support found meets the marginals
(the repair did not converge: ``repair_converged`` 0.0, the residuals say
how far) or the ascent stalled; MAX_ITER when the budget of passes ran out
(and no repair met ``tol``);
NUMERICAL (bound NaN) when the dual or the plan is not finite.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace
from typing import Literal

import torch

from certopt.core.arrays import ArrayLike, check_scalar
from certopt.core.errors import ConvergenceWarning, InfeasibleSettingsError, InputValueError
from certopt.core.result import Status
from certopt.ot.column_duals import (  # noqa: F401 (re-exported: the sparse duals' home API)
    ColumnDuals,
    ColumnPlan,
    DualSolution,
    Evaluation,
    solve_column_dual,
)
from certopt.ot.dual_ascent import METHODS as OPTIMIZERS
from certopt.ot.newton import NewtonOutcome, semismooth_newton
from certopt.ot.problem import TransportProblem
from certopt.ot.repair import repair_plan
from certopt.ot.result import TransportResult, make_result

DualMethod = Literal["semi-dual", "dual"]
DUAL_METHODS: tuple[str, ...] = ("semi-dual", "dual")
SWITCH_TOL = 1e-3
"""Relative marginal error at which the first-order phase hands over to Newton."""
FINISH_ULPS = 1e4
"""Newton's target: this many machine epsilons of relative marginal error (or ``tol``)."""
MAX_ROUNDS = 4
"""First-order / Newton rounds: a Newton phase that stalls hands back to the first-order
method with a switch tolerance ten times below where it stalled..."""
KINK_RATIO = 0.9
"""...unless, for k < n, it stalled having cut the marginal error by less than 10%: the
ascent has then reached a kink (no plan of the dual meets the marginals), and the repair
takes over.  Quadratic OT (k >= n) has a C^1 dual without kinks: it always goes on."""
BOUND_GAP = 1e-3
"""Relative gap ``(objective - bound) / |objective|`` above which (and above ``tol``) the
quadratic-OT bound is computed: a solve of quadratic OT costs about as much as the sparse
solve, worth it where the sparse ascent stopped far below (kinks), not for the last
0.1% (n = 2000, d = 50, non-uniform weights end at 3e-4, where it would triple the time)."""


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
    repair: bool | None = None,
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
    repair : bool or None
        Solve the convex QP restricted to the support found (each column's
        ``k`` candidate rows; :func:`certopt.ot.repair.repair_plan`), so the
        marginals hold to round-off when that support admits them.  None
        (default): only when the Newton finish misses ``tol`` and ``k < n``;
        True: always; False: never.  When it ran, the residuals include
        ``marginal_error_before_repair`` and ``repair_converged`` (1.0 or 0.0).
    optimizer : "lbfgs" or "fista"
        The ascent algorithm of :func:`certopt.ot.dual_ascent.maximize`.

    Returns
    -------
    TransportResult
        ``plan`` (n, m) with at most ``k`` nonzeros per column; ``cost`` =
        <C, plan>; ``objective`` = cost + (reg/2)||plan||_F^2; ``dual_value``
        (the best lower bound evaluated: the sparse (semi-)dual, or the
        quadratic-OT dual where that is higher, see the module docstring;
        ``residuals["bound_from_quadratic"]`` says which when both ran);
        ``gap``; ``potentials`` = (alpha, beta) of the sparse solve
        (for the semi-dual, ``beta`` are the column multipliers);
        ``residuals`` with ``source_marginal``, ``target_marginal``, ``nnz``,
        ``max_column_nnz``; ``gap_certified`` True when the plan meets the
        marginals to ``tol`` (then ``objective`` is an upper bound and
        ``gap`` brackets the optimum); ``status`` as in the module docstring
        (OPTIMAL exactly when the marginal error is at most ``tol * sum(a)``).

    Raises
    ------
    InfeasibleSettingsError
        ``k`` times the number of targets with positive mass is below the
        number of sources with positive mass: no plan meets the budget.
    InputValueError, InputTypeError
        Bad marginals, cost, ``reg <= 0``, ``tol`` outside ``(0, 1)``, ...
    """
    k = check_scalar(k, "k", low=1, integer=True)
    reg, max_iter, tol = check_common_options(reg, method, max_iter, tol, optimizer)
    problem = TransportProblem.from_inputs(a, b, C, device)
    check_budget(problem, k)
    return solve_sparse(problem, k, reg, method=method, max_iter=max_iter, tol=tol,
                        verbose=verbose, repair=repair, optimizer=optimizer,
                        desc=f"sparse OT k={k} ({method})")


def _extend(history: dict[str, list[float]], more: dict[str, list[float]], offset: int) -> None:
    """Append a phase's history, its evaluation counts shifted by the passes before it."""
    for name, values in more.items():
        history.setdefault(name, []).extend(
            [v + offset for v in values] if name == "evaluations" else values)


@dataclass(frozen=True)
class Ascent:
    """Phases 1 and 2 of a solve: the last Newton outcome, the passes and history spent, and
    the dual values of every phase's end point (each a valid lower bound)."""

    finish: NewtonOutcome
    n_iter: int
    history: dict[str, list[float]]
    candidates: list[float]


def ascend(duals: ColumnDuals, method: str, *, tol: float, finish_tol: float, max_iter: int,
           optimizer: str, verbose: bool, desc: str,
           start: tuple[torch.Tensor, torch.Tensor] | None = None) -> Ascent:
    """First-order ascent and Newton finish, repeated while Newton stalls having gained
    (phases 1 and 2 of the module docstring), within ``max_iter`` passes, from ``start``
    (potentials; None: :func:`solve_column_dual`'s default)."""
    n_iter, history, candidates = 0, {}, []
    point, switch_tol = start, SWITCH_TOL
    for _ in range(MAX_ROUNDS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)   # the final status says it
            first = solve_column_dual(duals, method, tol=max(tol, switch_tol),
                                      max_iter=max(1, (max_iter - n_iter) // 4),
                                      optimizer=optimizer, verbose=verbose, desc=desc,
                                      start=point)
        _extend(history, first.history, n_iter)
        n_iter += first.n_iter
        candidates.append(first.dual_value)
        finish = semismooth_newton(duals, first.alpha, first.beta, tol=finish_tol,
                                   max_eval=max(1, max_iter - n_iter))
        _extend(history, finish.history, n_iter)
        n_iter += finish.n_eval
        candidates.append(float(finish.evaluation.value))
        point = (finish.alpha, finish.beta)
        at_kink = (duals.k < duals.n      # quadratic OT's dual is C^1: it has no kinks
                   and finish.criterion > KINK_RATIO * finish.history["criterion"][0])
        if finish.status is not Status.INACCURATE or n_iter >= max_iter or at_kink:
            break          # done, out of budget, or stalled at a kink: over to the repair
        switch_tol = min(switch_tol, finish.criterion) / 10   # Newton stalled: ascend further
    return Ascent(finish, n_iter, history, candidates)


def solve_sparse(problem: TransportProblem, k: int, reg: float, *, method: str, max_iter: int,
                 tol: float, verbose: bool, repair: bool | None, optimizer: str, desc: str
                 ) -> TransportResult:
    """Solve a validated problem (shared by :func:`sparse` and :func:`quadratic`)."""
    start = time.perf_counter()
    mass = float(problem.a.sum())
    unit = replace(problem, a=problem.a / mass, b=problem.b / mass)
    duals = ColumnDuals(unit, k, reg * mass)
    finish_tol = min(tol, FINISH_ULPS * torch.finfo(unit.a.dtype).eps)
    ascent = ascend(duals, method, tol=tol, finish_tol=finish_tol, max_iter=max_iter,
                    optimizer=optimizer, verbose=verbose, desc=desc)
    finish, n_iter, history, candidates = (ascent.finish, ascent.n_iter, ascent.history,
                                           ascent.candidates)
    point = (finish.alpha, finish.beta)
    alpha, beta, evaluation = finish.alpha, finish.beta, finish.evaluation
    plan, status = evaluation.plan.dense(), finish.status
    if method == "semi-dual":      # its plan meets b exactly; its value bounds the dual's
        semi = duals.semi_dual(alpha)
        n_iter += 1
        candidates.append(float(semi.value))
        semi_plan = semi.plan.dense()
        if unit.marginal_error(semi_plan) <= unit.marginal_error(plan):
            plan, beta = semi_plan, semi.beta
    extra: dict[str, float] = {}
    error = unit.marginal_error(plan)
    run_repair = repair if repair is not None else (error > tol and duals.k < duals.n)
    if run_repair:
        outcome = repair_plan(unit, duals, duals.dual(alpha, beta), tol=finish_tol,
                              improve_above=max(candidates))
        n_iter += 2          # the repair works on the support: no pass over C
        candidates.append(float(duals.dual(outcome.alpha, outcome.beta).value))
        extra.update(marginal_error_before_repair=outcome.error_before * mass,
                     repair_converged=float(outcome.converged))
        plan, error = outcome.plan, outcome.error_after
        if not outcome.converged and error > tol:
            if status is not Status.MAX_ITER:
                status = Status.INACCURATE
            if n_iter < max_iter:      # no plan: the rest of the budget tightens the bound
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    more = solve_column_dual(duals, method, tol=finish_tol,
                                             max_iter=max_iter - n_iter, optimizer=optimizer,
                                             verbose=verbose, desc=desc, start=point)
                _extend(history, more.history, n_iter)
                n_iter += more.n_iter
                candidates.append(more.dual_value)
            warnings.warn(
                f"{desc}: the repair found no plan with at most k={k} nonzeros per column on "
                f"the support found that meets the marginals (L1 error {error * mass:.3g} > "
                f"tol {tol * mass:.3g}); status {status.value}", ConvergenceWarning,
                stacklevel=3)
    bound = max(candidates)
    if duals.k < duals.n and n_iter < max_iter:
        objective = unit.cost(plan) + 0.5 * duals.reg * float(torch.dot(plan.reshape(-1),
                                                                       plan.reshape(-1)))
        if objective - bound > max(tol, BOUND_GAP) * abs(objective):
            quadratic = ascend(ColumnDuals(unit, unit.shape[0], duals.reg), "dual", tol=tol,
                               finish_tol=finish_tol, max_iter=max_iter - n_iter,
                               optimizer=optimizer, verbose=verbose,
                               desc=f"{desc}: quadratic OT bound", start=(alpha, beta))
            n_iter += quadratic.n_iter
            quadratic_bound = max(quadratic.candidates)
            extra.update(sparse_dual_bound=bound * mass,
                         quadratic_dual_bound=quadratic_bound * mass,
                         bound_from_quadratic=float(quadratic_bound > bound))
            bound = max(bound, quadratic_bound)
    if error <= tol:
        status = Status.OPTIMAL
    elif status is Status.OPTIMAL:
        status = Status.INACCURATE
    if not (math.isfinite(bound) and bool(torch.isfinite(plan).all())):
        bound, status = math.nan, Status.NUMERICAL
    if status is not Status.OPTIMAL and not run_repair:
        warnings.warn(f"{desc}: stopped with status {status.value}, L1 marginal error "
                      f"{error * mass:.3g} > tol {tol * mass:.3g}", ConvergenceWarning,
                      stacklevel=3)
    plan = plan * mass
    column_nnz = (plan != 0).sum(0)
    extra.update(nnz=float(column_nnz.sum()), max_column_nnz=float(column_nnz.max()))
    return make_result(
        problem, plan,
        regulariser=0.5 * reg * float(torch.dot(plan.reshape(-1), plan.reshape(-1))),
        dual_value=bound * mass,
        potentials=(alpha, beta),
        status=status,
        n_iter=n_iter,
        solve_time=time.perf_counter() - start,
        history=history,
        extra=extra,
        marginal_tol=tol * mass,
    )
