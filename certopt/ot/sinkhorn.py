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
or where the kernel underflows: a whole row or column of zeros in the
stored kernel (``exp(-C/reg)`` at a cold start with small ``reg``) costs one
log-domain iteration, after which every row and column of the plan carries
at least ``min(a) min(b)`` of mass and the kernel is rebuilt; a second
underflow keeps the log domain for the rest of the stage.

*eps-scaling*: ``reg`` is reached through ``eps`` decreasing geometrically
(ratio at most ``EPS_FACTOR = 4``) from ``spread = max C - min C``, each
stage warm-started from the last one's potentials and stopped at a marginal
error of ``STAGE_TOL`` (relative).  On by default when ``reg <
EPS_SCALING_BELOW * spread``: below that, the final stage started from the
previous stage's potentials needs fewer iterations than a cold start (6-10x
fewer in all on the README's costs); above it the extra stages cost more
than they save.  ``reg`` keeps POT's meaning (in the units of ``C``, not relative to it):
the objective is the same as POT's for the same arguments.

Certificate.  The Gibbs plan at the last iterate meets its columns exactly
and its rows to the tolerance; it is rounded onto ``U(a, b)``
(:mod:`certopt.ot.rounding`), so the returned plan is feasible to round-off
and ``objective`` (its entropic objective, summed block by block) is an
upper bound on the optimum; ``dual_value`` (the dual at the potentials) is
a lower bound, and ``gap = objective - dual_value >= 0`` certifies both.
Both are sums of many floating-point terms: ``dual_value`` is lowered by a
bound on the round-off of the two evaluations (``_Measured``), so that the
inequality also holds for the computed numbers (relative slack about
``1e-16 (log2(n m) + number of blocks)``).
The row error before rounding is the residual ``dual_plan_marginal``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from certopt.core.arrays import ArrayLike, check_scalar
from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.progress import Progress, progress
from certopt.core.result import Status
from certopt.ot.gibbs import KernelUnderflow, ScaledKernel, StreamedKernel
from certopt.ot.problem import TransportProblem
from certopt.ot.result import TransportResult, make_result, rounded_plan_tol
from certopt.ot.rounding import rounding
from certopt.ot.streaming import blocks, cost_range

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
    low, high = cost_range(problem.geometry)
    schedule = eps_schedule(high - low, reg, eps_scaling)
    cost_max = max(-low, high)                        # max |C|, for the round-off allowance
    source_mass = float(problem.a.sum())
    abs_tol = tol * source_mass
    history: dict[str, list[float]] = {"marginal_error": []}
    with progress(max_iter, verbose, desc="sinkhorn") as bar:
        f, g = torch.zeros_like(problem.a), torch.zeros_like(problem.b)
        run = _Run(None, Status.MAX_ITER, 0, problem.a, math.inf)
        for stage, eps in enumerate(schedule):
            last = stage == len(schedule) - 1
            if run.kernel is not None:
                f, g = run.kernel.potentials()
            kernel = (ScaledKernel(problem, f, g, eps, _buffer(run.kernel)) if scaling_domain
                      else StreamedKernel(problem, f, g, eps))
            stage_tol = abs_tol if last else max(abs_tol, STAGE_TOL * source_mass)
            run = _iterate(kernel, problem, stage_tol, max_iter - run.n_iter, check_every,
                           history, bar, run.n_iter)
            if run.n_iter >= max_iter and not (last and run.status is Status.OPTIMAL):
                run.status = Status.MAX_ITER
                break
    if run.status is Status.MAX_ITER:
        warnings.warn(f"sinkhorn: marginal error {run.error:.3g} > tol {abs_tol:.3g} after "
                      f"{max_iter} iterations; increase max_iter or reg", ConvergenceWarning,
                      stacklevel=2)
    if run.kernel.eps != reg:                 # the budget ran out before the last stage
        run = _restart_at(reg, run, problem)
    kernel = run.kernel
    f, g = kernel.potentials()
    factors = rounding(lambda w: kernel.product(0, w), lambda w: kernel.product(1, w),
                       problem.a, problem.b, row_mass=run.row_mass)
    if return_plan:                    # each block is rounded and measured while in cache
        plan = kernel.plan_storage()
        measured = _measure(problem, lambda rows, cols, cost_block: factors.correct_(
            kernel.plan_block(rows, cols, cost_block, factors.row_scale, factors.col_scale),
            rows, cols), kernel.eps, cost_max)
    else:
        plan = None
        measured = _measure(problem, lambda rows, cols, cost_block: factors.block(
            kernel.block(rows, cols, cost_block), rows, cols), kernel.eps, cost_max)
    mass = run.row_mass.sum()
    dual_terms = _weighted(f, problem.a, absolute=True) + _weighted(g, problem.b, absolute=True)
    exponent = _finite_max(f) + _finite_max(g) + measured.cost_max
    allowance = torch.finfo(mass.dtype).eps * (
        measured.summands * (dual_terms + kernel.eps * mass + measured.magnitude)
        + mass * exponent)
    dual_value = float(_weighted(f, problem.a) + _weighted(g, problem.b) - kernel.eps * mass
                       - allowance)
    return make_result(problem, plan, regulariser=kernel.eps * measured.entropy,
                       measured=(measured.cost, measured.residuals), dual_value=dual_value,
                       potentials=(f, g), status=run.status, n_iter=run.n_iter,
                       solve_time=time.perf_counter() - start, history=history,
                       extra={"dual_plan_marginal": run.error}, plan_owned=True,
                       marginal_tol=rounded_plan_tol(problem))


def eps_schedule(spread: float, reg: float, eps_scaling: bool | None) -> list[float]:
    """The decreasing ``eps`` of the stages, ending at ``reg``.

    When eps-scaling is on: ``K = ceil(log_4(spread / reg))`` stages
    geometrically from ``spread = max C - min C`` to ``reg``, ratio at most
    4 between stages; else ``[reg]``.
    """
    if eps_scaling is False:
        return [reg]
    if spread <= reg or (eps_scaling is None and not reg < EPS_SCALING_BELOW * spread):
        return [reg]
    stages = math.ceil(math.log(spread / reg) / math.log(EPS_FACTOR))
    return [reg * (spread / reg) ** (1.0 - k / stages) for k in range(stages)] + [reg]


@dataclass
class _Run:
    """Where an iteration stopped: the kernel, why, after how many iterations in
    all, the rows' mass of its plan (columns exact) and their L1 error."""

    kernel: Kernel | None
    status: Status
    n_iter: int
    row_mass: torch.Tensor
    error: float


def _buffer(kernel: Kernel | None) -> torch.Tensor | None:
    """The ``(n, m)`` storage of a spent :class:`ScaledKernel`, for the next one."""
    return kernel.kernel if isinstance(kernel, ScaledKernel) else None


def _iterate(kernel: Kernel, problem: TransportProblem, abs_tol: float, budget: int,
             check_every: int, history: dict[str, list[float]], bar: Progress,
             done: int) -> _Run:
    """Sinkhorn iterations on ``kernel`` until its row error is at most ``abs_tol``
    (checked every ``check_every`` iterations and at the start) or ``budget``
    iterations; a :class:`KernelUnderflow` switches to the log domain."""
    retry_scaling = True
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
            kernel = _log_domain_step(kernel, problem, retry_scaling)
            retry_scaling = False
        it += 1
    return _Run(kernel, status, done + it, row_mass, error)


def _restart_at(reg: float, run: _Run, problem: TransportProblem) -> _Run:
    """The Gibbs plan at ``reg`` from an earlier stage's potentials with its columns
    made exact (log domain: nothing can underflow), to certify a run that stopped early."""
    kernel = StreamedKernel(problem, *run.kernel.potentials(), reg)
    kernel.mass(1)
    kernel.fit(1)
    row_mass = kernel.mass(0)
    return _Run(kernel, run.status, run.n_iter, row_mass,
                float((row_mass - problem.a).abs().sum()))


def _log_domain_step(kernel: ScaledKernel, problem: TransportProblem, retry_scaling: bool
                     ) -> Kernel:
    """One log-domain iteration from ``kernel``'s potentials, after its kernel underflowed.

    The plan it leaves has exact columns and no row or column of it can
    underflow in a kernel rebuilt there, so a first underflow (a cold start
    at small ``eps``) returns to the scaling domain; a second one stays in the
    log domain.
    """
    streamed = kernel.streamed(problem)
    for side in (0, 1):
        streamed.mass(side)
        streamed.fit(side)
    if not retry_scaling:
        return streamed
    return ScaledKernel(problem, *streamed.potentials(), kernel.eps, kernel.kernel)


@dataclass
class _Measured:
    """The rounded plan's ``<C, T>``, ``sum h(T)`` (``h(t) = t log t - t``) and
    L1 marginal errors, with what bounds their round-off: ``magnitude >=
    sum |C T| + eps sum |h(T)|`` and ``summands``, a bound on the error growth
    of the sums in units of the machine epsilon (pairwise within a block,
    sequential across blocks, a few flops per term); ``cost_max = max |C|``."""

    cost: float
    entropy: float
    residuals: dict[str, float]
    magnitude: torch.Tensor
    cost_max: float
    summands: float


def _measure(problem: TransportProblem,
             plan_block: Callable[[slice, slice, torch.Tensor], torch.Tensor],
             eps: float, cost_max: float) -> _Measured:
    """One pass over ``C`` and the rounded plan, block by block (``plan_block(rows,
    cols, C[rows, cols])``): nothing ``(n, m)`` beyond the plan if it is stored
    and one block of scratch for ``log T``; ``cost_max = max |C|``.

    ``|h(t)| = -h(t)`` for ``0 <= t <= e``, which holds for every entry when
    ``max a <= 2`` (entries of a row sum to ``a_i``); otherwise ``sum |h|`` is
    accumulated too.
    """
    a, b = problem.a, problem.b
    small_entries = float(a.max()) <= 2.0
    cost = torch.zeros((), dtype=a.dtype, device=a.device)
    plan_log_plan, log_magnitude = torch.zeros_like(cost), torch.zeros_like(cost)
    row_sums, col_sums = torch.zeros_like(a), torch.zeros_like(b)
    scratch: torch.Tensor | None = None       # the first block is the largest
    n_blocks = 0
    for rows, cols, cost_block in blocks(problem.geometry):
        plan = plan_block(rows, cols, cost_block)
        if scratch is None:
            scratch = torch.empty(plan.numel(), dtype=plan.dtype, device=plan.device)
        logs, block_plan_log_plan = _plan_log_plan(plan, scratch[:plan.numel()].view(plan.shape))
        plan_log_plan += block_plan_log_plan
        if not small_entries:
            log_magnitude += _inner(plan, logs.abs_())
        cost += _inner(cost_block, plan)
        row_sums[rows] += plan.sum(1)
        col_sums[cols] += plan.sum(0)
        n_blocks += 1
    mass = row_sums.sum()
    entropy = plan_log_plan - mass
    entropy_magnitude = -entropy if small_entries else log_magnitude + mass
    n, m = problem.shape
    residuals = {"source_marginal": float((row_sums - a).abs().sum()),
                 "target_marginal": float((col_sums - b).abs().sum())}
    magnitude = cost_max * mass + eps * entropy_magnitude
    return _Measured(float(cost), float(entropy), residuals, magnitude, cost_max,
                     math.log2(n * m) + n_blocks + 8)


def _plan_log_plan(plan: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log T`` of a block (written into ``out``) and ``sum T log T``, with ``0 log 0
    = 0``: ``log 0`` is replaced by ``log(tiny)``, a pass done only for blocks that
    hold a zero (their first sum is not finite)."""
    logs = torch.log(plan, out=out)
    total = _inner(plan, logs)
    if not math.isfinite(float(total)):
        logs = torch.clamp_min(plan, torch.finfo(plan.dtype).tiny, out=out).log_()
        total = _inner(plan, logs)
    return logs, total


def _inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_ij x_ij y_ij`` of two blocks (a dot product, no temporary when contiguous)."""
    return torch.dot(x.reshape(-1), y.reshape(-1))


def _weighted(potential: torch.Tensor, weights: torch.Tensor, absolute: bool = False
              ) -> torch.Tensor:
    """``<potential, weights>`` (or ``<|potential|, weights>``) with ``0 * (-inf) = 0``."""
    values = potential.abs() if absolute else potential
    return torch.where(weights > 0, values * weights, torch.zeros_like(weights)).sum()


def _finite_max(potential: torch.Tensor) -> torch.Tensor:
    """``max |potential_i|`` over finite entries (zero weights have ``-inf``)."""
    finite = torch.isfinite(potential)
    return torch.where(finite, potential.abs(), torch.zeros_like(potential)).max()
