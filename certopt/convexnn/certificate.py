"""Dual lower bound by scaling (math note, section 4) and the certified result.

For any l in R^n and cone multipliers mu_i, nu_i >= 0 with

    ||X^T(D_i l - S_i mu_i)|| <= lam  and  ||X^T(-D_i l - S_i nu_i)|| <= lam  for all i,

weak duality gives min G >= -L*(l).  From a candidate (l, mu, nu) we scale
by the largest s in [0, 1] keeping the norms <= lam and take the best
-L*(s' l) over s' in [0, s].  Before scaling, the multipliers are improved
per pattern by nonnegative least squares,

    mu_i = argmin_{mu >= 0} ||X^T(D_i l - S_i mu)||^2,

solved for all patterns at once by accelerated projected gradient
(:mod:`certopt.core.projected_gradient`), warm started from the solver's
multipliers (the bound with mu = nu = 0 is weak).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from certopt.convexnn.result import ConvexNNResult
from certopt.core.projected_gradient import accelerated_projected_gradient
from certopt.core.result import Status, duality_gap

if TYPE_CHECKING:
    from certopt.convexnn.problem import ConvexReLUProblem

NNLS_STEPS = 300
"""Default cap on projected-gradient steps of the multiplier fit."""

NNLS_MIN_PROGRESS = 0.01
"""The multiplier fit stops when, over ``check_every`` steps, the largest block norm's
excess over lam shrank by less than this fraction (from a solver's warm start, more
steps barely raise the bound; benchmarks/RESULTS.md)."""


def within_tolerance(objective: float, bound: float, tol: float) -> bool:
    """The stopping test of every solver: F - bound <= tol |bound| (bound finite).

    It proves F <= (1 + tol) min G for bound > 0: ``tol`` is a certified relative gap.
    """
    return math.isfinite(bound) and objective - bound <= tol * abs(bound)


def scaled_dual_bound(problem: ConvexReLUProblem, dual: torch.Tensor, mu: torch.Tensor,
                      nu: torch.Tensor) -> tuple[float, float]:
    """(bound, s): the lower bound -L*(s l) of the scaled point and its scale s.

    ``dual`` (n,) is first moved into dom L* (round-off only), ``mu`` and
    ``nu`` (P, n) are clipped at zero, so any input yields a valid bound.
    """
    dual = problem.loss.project_dual(dual, problem.y)
    mu, nu = mu.clamp(min=0.0), nu.clamp(min=0.0)
    worst = float(problem.dual_constraint_norms(dual, mu, nu).max())
    s_max = 1.0 if worst <= problem.lam else problem.lam / worst
    scale = problem.loss.best_scale(dual, problem.y, s_max)
    return -problem.loss.conjugate(scale * dual, problem.y), scale


def fit_cone_multipliers(problem: ConvexReLUProblem, dual: torch.Tensor,
                         mu: torch.Tensor | None = None, nu: torch.Tensor | None = None,
                         max_steps: int = NNLS_STEPS, check_every: int = 10,
                         min_progress: float = NNLS_MIN_PROGRESS
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pattern NNLS for (mu, nu) given l, by FISTA with projection on >= 0.

    Minimises (1/2) ||X^T(T_i - S_i m_i)||^2 over m_i >= 0 for the (2, P, n)
    targets T = (D l, -D l), all blocks at once; step 1/||X||_2^2 (S_i is
    diagonal with entries +-1).  Stops early once every block norm is
    <= lam (the scaling is then 1 and cannot improve), or once the largest
    norm's excess over lam shrinks by less than ``min_progress`` of itself
    over ``check_every`` steps (0: only the cap stops it; every block then gets
    its full fit, as a per-pattern test needs).  Returns (mu, nu).
    """
    X, signs = problem.X, problem.signs
    target = torch.stack([problem.D * dual, -problem.D * dual])
    start = torch.zeros_like(target) if mu is None else torch.stack([mu, nu]).clamp(min=0.0)
    norm = float(torch.linalg.matrix_norm(X, ord=2))
    if norm == 0.0 or max_steps == 0:  # X = 0: every multiplier is as good as any other
        return start[0], start[1]
    step = 1.0 / norm ** 2
    last_excess = float("inf")

    def gradient(blocks: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        residual = (target - signs * blocks[0]) @ X              # (2, P, d)
        return [-signs * (residual @ X.T)], residual

    def stop(step_index: int, residual: torch.Tensor) -> bool:
        nonlocal last_excess
        if step_index % check_every:
            return False
        excess = float(torch.linalg.vector_norm(residual, dim=2).max()) - problem.lam
        stalled = min_progress > 0.0 and last_excess - excess < min_progress * last_excess
        last_excess = excess
        return excess <= 0.0 or stalled

    (fitted,) = accelerated_projected_gradient(
        gradient, lambda blocks: [blocks[0].clamp(min=0.0)], [start], step, max_steps, stop)
    return fitted[0], fitted[1]


def certify(
    problem: ConvexReLUProblem,
    v: torch.Tensor,
    w: torch.Tensor,
    *,
    duals: Sequence[torch.Tensor],
    mu: torch.Tensor | None,
    nu: torch.Tensor | None,
    status: Status,
    n_iter: int,
    solve_time: float,
    solver: str,
    residuals: Mapping[str, float] | None = None,
    history: Mapping[str, list[float]] | None = None,
    nnls_steps: int = NNLS_STEPS,
) -> ConvexNNResult:
    """The result for (v, w): F of its network, the best scaled dual bound, the gap.

    Each candidate l in ``duals`` (e.g. the solver's multiplier of z = F u
    and the gradient of L at the prediction) gets its multipliers fitted
    (warm started from ``mu``, ``nu``) and is scaled; the best bound is kept.
    The time spent certifying is added to ``solve_time``; ``nnls_steps`` caps
    the multiplier fit (fewer steps: a cheaper, possibly lower, bound).
    """
    start = time.perf_counter()
    U, alpha = problem.network(v, w)
    objective = problem.nonconvex_objective(U, alpha)
    best_bound, best_scale, best_dual = float("-inf"), float("nan"), None
    for dual in duals:
        dual = problem.loss.project_dual(dual, problem.y)
        fitted_mu, fitted_nu = fit_cone_multipliers(problem, dual, mu, nu, max_steps=nnls_steps)
        bound, scale = scaled_dual_bound(problem, dual, fitted_mu, fitted_nu)
        if bound > best_bound:
            best_bound, best_scale, best_dual = bound, scale, dual
    all_residuals = {"cone_violation": problem.cone_violation(v, w)}
    all_residuals.update(residuals or {})
    return ConvexNNResult(
        objective=objective,
        bound=best_bound,
        gap=duality_gap(objective, best_bound),
        status=status,
        residuals=all_residuals,
        n_iter=n_iter,
        solve_time=solve_time + time.perf_counter() - start,
        history=dict(history or {}),
        v=v,
        w=w,
        convex_objective=problem.convex_objective(v, w),
        is_global=problem.is_global,
        n_patterns=problem.n_patterns,
        n_neurons=int(alpha.shape[0]),
        solver=solver,
        dual_scale=best_scale,
        dual=best_dual,
    )
