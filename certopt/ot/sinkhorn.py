"""Entropic OT by Sinkhorn, with a feasible plan and a certified gap, in torch (CPU or CUDA).

Primal and dual (math note, section 1)::

    min_{T in U(a, b)}  <C, T> + reg * sum_ij T_ij (log T_ij - 1)
    max_{f, g}          <f, a> + <g, b> - reg * sum_ij exp((f_i + g_j - C_ij) / reg)

with ``T_ij = exp((f_i + g_j - C_ij) / reg)`` at the optimum.  Sinkhorn
alternately makes the rows and the columns of this Gibbs plan exact
(:mod:`certopt.ot.gibbs`): in the *scaling domain* (a stored kernel, two
matrix-vector products per iteration, absorption keeping it stable) when
the plan is stored anyway, in the *log domain* (streamed log-sum-exp
passes over ``C``, nothing ``(n, m)``) when it is not (``return_plan=False``)
or when the kernel underflows.  The first iteration is always a log-domain
one, after which no row or column of the kernel can underflow whatever
``reg``.

*eps-scaling*: ``reg`` is reached through ``eps = spread / 4^k`` (``spread
= max C - min C``), each stage warm-started from the last one's potentials
and stopped at a marginal error of ``STAGE_TOL`` (relative).  On by default
when ``reg < EPS_SCALING_BELOW * spread``: below that, the final stage
started from the previous stage's potentials needs fewer iterations than a
cold start (up to 6x fewer in total); above it the extra stages cost more
than they save.
``reg`` keeps POT's meaning (in the units of ``C``, not relative to it):
the objective is the same as POT's for the same arguments.

Certificate.  The Gibbs plan at the last iterate meets its columns exactly
and its rows to the tolerance; it is rounded onto ``U(a, b)``
(:mod:`certopt.ot.rounding`), so the returned plan is feasible to round-off
and ``objective`` (its entropic objective, summed block by block) is an
upper bound on the optimum; ``dual_value`` (the dual at the potentials) is
a lower bound, and ``gap = objective - dual_value >= 0`` certifies both.
The row error before rounding is the residual ``dual_plan_marginal``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from certopt.core.arrays import ArrayLike, check_scalar
from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.progress import Progress, progress
from certopt.core.result import Status
from certopt.ot.gibbs import KernelUnderflow, ScaledKernel, StreamedKernel
from certopt.ot.problem import TransportProblem
from certopt.ot.result import TransportResult, make_result
from certopt.ot.rounding import Rounding, rounding
from certopt.ot.streaming import block_entries, blocks, tile_plan

Method = Literal["auto", "scaling", "log"]
METHODS: tuple[str, ...] = ("auto", "scaling", "log")
EPS_SCALING_BELOW = 0.003
"""eps-scaling is on by default when ``reg < EPS_SCALING_BELOW * (max C - min C)``."""
EPS_FACTOR = 4.0
"""Ratio of successive ``eps`` in eps-scaling."""
STAGE_TOL = 1e-4
"""Relative L1 marginal error at which an eps-scaling stage above ``reg`` stops."""

Kernel = ScaledKernel | StreamedKernel


def sinkhorn(
    a: ArrayLike | None,
    b: ArrayLike | None,
    C: ArrayLike,
    reg: float,
    max_iter: int = 10000,
    tol: float = 1e-6,
    device: str | torch.device | None = None,
    verbose: bool = False,
    check_every: int = 10,
    method: Method = "auto",
    eps_scaling: bool | None = None,
    return_plan: bool = True,
) -> TransportResult:
    """Entropic OT plan (feasible) with potentials, dual value and certified gap.

    Parameters
    ----------
    a, b : (n,), (m,) arrays or None (uniform)
    C : (n, m) array, numpy or torch, or a
        :class:`~certopt.ot.geometry.PointCloudCost`; results come back alike.
    reg : float > 0
        Entropic regularisation ``epsilon`` (in the units of ``C``, as POT).
    max_iter : int
        Maximum number of Sinkhorn iterations (one row and one column
        update), over all eps-scaling stages together.
    tol : float
        Stop when ``||T 1 - a||_1 <= tol * sum(a)`` for the Gibbs plan ``T``
        (its columns are exact), before rounding.
    device : "cpu", "cuda", torch.device or None (``C``'s device)
    check_every : int
        Measure the marginal error every this many iterations.
    method : "auto", "scaling" or "log"
        "scaling": stored kernel with absorption (``n m`` numbers, which
        become the returned plan); "log": streamed log-sum-exp passes, no
        ``(n, m)`` array in the loop; "auto": "scaling" when the plan is
        returned, else "log".  "scaling" falls back to "log" where its
        kernel underflows.
    eps_scaling : bool or None
        Anneal ``eps`` from the cost's spread down to ``reg``; None: when
        ``reg < 0.003 (max C - min C)``.
    return_plan : bool
        False: ``plan`` is None and nothing ``(n, m)`` is ever stored
        (objective, residuals and gap are accumulated block by block).

    Returns
    -------
    TransportResult
        ``plan`` the Gibbs plan rounded onto ``U(a, b)``; ``objective`` its
        entropic objective ``<C,T> + reg sum T (log T - 1)``; ``dual_value``
        the entropic dual at ``(f, g)``; ``gap >= 0``; residuals: L1
        marginal errors of ``plan`` and ``dual_plan_marginal`` (of the
        Gibbs plan, before rounding); ``status`` OPTIMAL or MAX_ITER (with
        a ConvergenceWarning).  Rows or columns of zero weight have
        potential ``-inf``.
    """
    reg = check_scalar(reg, "reg", low=0, low_inclusive=False)
    max_iter = check_scalar(max_iter, "max_iter", low=1, integer=True)
    tol = check_scalar(tol, "tol", low=0, low_inclusive=False)
    check_every = check_scalar(check_every, "check_every", low=1, integer=True)
    if method not in METHODS:
        raise InputValueError(f"method: expected one of {METHODS}, got {method!r}")
    if eps_scaling not in (None, True, False):
        raise InputValueError(f"eps_scaling: expected True, False or None, got {eps_scaling!r}")
    problem = TransportProblem.from_inputs(a, b, C, device)
    start = time.perf_counter()
    scaling_domain = method == "scaling" or (method == "auto" and return_plan)
    schedule = eps_schedule(problem, reg, eps_scaling)
    abs_tol = tol * float(problem.a.sum())
    history: dict[str, list[float]] = {"marginal_error": []}
    with progress(max_iter, verbose, desc="sinkhorn") as bar:
        kernel = _log_iteration(problem, schedule[0])
        run = _Run(kernel, Status.MAX_ITER, 1, problem.a, math.inf)
        for stage, eps in enumerate(schedule):
            last = stage == len(schedule) - 1
            f, g = run.kernel.potentials()
            if scaling_domain:
                buffer = run.kernel.kernel if isinstance(run.kernel, ScaledKernel) else None
                kernel = ScaledKernel(problem, f, g, eps, buffer)
            else:
                kernel = StreamedKernel(problem, f, g, eps)
            stage_tol = abs_tol if last else max(abs_tol, STAGE_TOL * float(problem.a.sum()))
            run = _iterate(kernel, problem, stage_tol, max_iter - run.n_iter, check_every,
                           history, bar, run.n_iter)
            if run.n_iter >= max_iter and not (last and run.status is Status.OPTIMAL):
                run.status = Status.MAX_ITER
                break
    if run.status is Status.MAX_ITER:
        warnings.warn(f"sinkhorn: marginal error {run.error:.3g} > tol {abs_tol:.3g} after "
                      f"{max_iter} iterations; increase max_iter or reg", ConvergenceWarning,
                      stacklevel=2)
    kernel = run.kernel
    f, g = kernel.potentials()
    dual_value = float(_weighted(f, problem.a) + _weighted(g, problem.b)
                       - kernel.eps * run.row_mass.sum())
    factors = rounding(lambda w: kernel.product(0, w), lambda w: kernel.product(1, w),
                       problem.a, problem.b, row_mass=run.row_mass)
    extra = {"dual_plan_marginal": run.error}
    common = {"dual_value": dual_value, "potentials": (f, g), "status": run.status,
              "n_iter": run.n_iter, "history": history, "extra": extra}
    if return_plan:
        plan = factors.apply_(kernel.plan())
        return make_result(problem, plan, regulariser=kernel.eps * _entropy(plan),
                           solve_time=time.perf_counter() - start, **common)
    cost, entropy, residuals = _streamed_objective(problem, kernel, factors)
    return make_result(problem, None, regulariser=kernel.eps * entropy, measured=(cost, residuals),
                       solve_time=time.perf_counter() - start, **common)


def eps_schedule(problem: TransportProblem, reg: float, eps_scaling: bool | None) -> list[float]:
    """The decreasing ``eps`` of the stages, ending at ``reg``.

    When eps-scaling is on: ``K = ceil(log_4(spread / reg))`` stages
    geometrically from ``spread = max C - min C`` (one pass over ``C``) to
    ``reg``, ratio at most 4 between stages; else ``[reg]``.
    """
    if eps_scaling is False:
        return [reg]
    low, high = math.inf, -math.inf
    for _, _, block in blocks(problem.geometry):
        block_low, block_high = torch.aminmax(block)
        low, high = min(low, float(block_low)), max(high, float(block_high))
    spread = high - low
    if spread <= reg or (eps_scaling is None and not reg < EPS_SCALING_BELOW * spread):
        return [reg]
    stages = math.ceil(math.log(spread / reg) / math.log(EPS_FACTOR))
    return [reg * (spread / reg) ** (1.0 - k / stages) for k in range(stages)] + [reg]


@dataclass
class _Run:
    """Where an iteration stopped: the kernel, why, after how many iterations in
    all, the rows' mass of its plan (columns exact) and their L1 error."""

    kernel: Kernel
    status: Status
    n_iter: int
    row_mass: torch.Tensor
    error: float


def _log_iteration(problem: TransportProblem, eps: float) -> StreamedKernel:
    """One log-domain iteration from zero potentials: columns exact, and every
    row and column of the plan carries at least ``min(a) min(b)`` of mass."""
    kernel = StreamedKernel(problem, torch.zeros_like(problem.a), torch.zeros_like(problem.b),
                            eps)
    for side in (0, 1):
        kernel.mass(side)
        kernel.fit(side)
    return kernel


def _iterate(kernel: Kernel, problem: TransportProblem, abs_tol: float, budget: int,
             check_every: int, history: dict[str, list[float]], bar: Progress,
             done: int) -> _Run:
    """Sinkhorn iterations on ``kernel`` until its row error is at most ``abs_tol``
    (checked every ``check_every`` iterations and at the start) or ``budget``
    iterations; a :class:`KernelUnderflow` switches to the log domain."""
    status = Status.MAX_ITER
    it = 0
    while True:
        row_mass = kernel.mass(0)
        if it % check_every == 0 or it == budget:
            error = float((row_mass - problem.a).abs().sum())
            history["marginal_error"].append(error)
            bar.update(0 if it == 0 else check_every, marginal_error=error)
            if error <= abs_tol:
                status = Status.OPTIMAL
                break
            if it >= budget:
                break
        try:
            kernel.fit(0)
            kernel.mass(1)
            kernel.fit(1)
        except KernelUnderflow:
            kernel = kernel.streamed(problem)
            continue
        it += 1
    return _Run(kernel, status, done + it, row_mass, error)


def _entropy(plan: torch.Tensor) -> float:
    """``sum_ij T_ij (log T_ij - 1)`` over row blocks (no ``(n, m)`` temporary)."""
    n, m = plan.shape
    total = torch.zeros((), dtype=plan.dtype, device=plan.device)
    for rows, _ in tile_plan(n, m, block_entries(plan.device)):
        block = plan[rows]
        total += (torch.special.xlogy(block, block) - block).sum()
    return float(total)


def _streamed_objective(problem: TransportProblem, kernel: Kernel, factors: Rounding
                        ) -> tuple[float, float, dict[str, float]]:
    """``<C, T>``, ``sum T (log T - 1)`` and the L1 marginal errors of the rounded
    plan ``T``, one block at a time (one pass over ``C``)."""
    a, b = problem.a, problem.b
    cost = torch.zeros((), dtype=a.dtype, device=a.device)
    entropy = torch.zeros_like(cost)
    row_sums, col_sums = torch.zeros_like(a), torch.zeros_like(b)
    for rows, cols, cost_block in blocks(problem.geometry):
        plan = factors.block(kernel.block(rows, cols, cost_block), rows, cols)
        cost += (cost_block * plan).sum()
        entropy += (torch.special.xlogy(plan, plan) - plan).sum()
        row_sums[rows] += plan.sum(1)
        col_sums[cols] += plan.sum(0)
    residuals = {"source_marginal": float((row_sums - a).abs().sum()),
                 "target_marginal": float((col_sums - b).abs().sum())}
    return float(cost), float(entropy), residuals


def _weighted(potential: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``<potential, weights>`` with ``0 * (-inf) = 0`` for zero-weight entries."""
    return torch.where(weights > 0, potential * weights, torch.zeros_like(weights)).sum()
