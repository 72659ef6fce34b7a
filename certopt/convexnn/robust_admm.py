"""ADMM for the robust convex program (section 7), in torch (CPU or CUDA).

Splitting, with u = (v_1..v_P, w_1..w_P) and the maps of
:class:`~certopt.convexnn.robust.GroupOperators`::

    minimize  phi(z, r) + lam sum_j ||s_j||_2 + sum_j 1_C(t_j, q_j)
    s.t.      z = F u,  r = R u,  s = u,  t = G u,  q = Q u

    phi(z, r) = (1/n) sum_k max(0, 1 - y_k z_k + eps ||r_k||_1)   (worst-case hinge)
    C = {(t, q) in R^n x R^d_f : t_k >= eps ||q||_1 for all k}       (robust cone)

The data are rescaled by sigma = ||X||_2 (X -> X / sigma, lam -> lam / sigma,
eps -> eps / sigma, u -> sigma u), the same program with balanced blocks.
Per iteration: one solve with the Cholesky factor of
``a (F^T F + R^T R) + G^T G + Q^T Q + I`` (computed once; block penalties
rho a for (z, r) and rho for the others, fixed), over-relaxation, then
batched proximal maps:

* prox of phi/rho, per sample, exactly (by sorting |b|; see
  :func:`prox_worst_case_hinge`);
* projection onto C, per group (bisection, then the exact root of the final
  linear piece; see :func:`project_robust_cone`);
* group soft-thresholding for s.

The dense factor takes (2 P d)^2 memory: fine up to 2 P d of a few thousand;
larger programs would need the Woodbury or conjugate-gradient solves of
section 5 (not implemented here).

Stopping (every ``CHECK_EVERY`` iterations), measured on the group-sparse
iterate s: its program objective p, its robust-cone violation, and a dual
bound from the multipliers (:meth:`GroupOperators.dual_bound`); the solver
stops when both ``p - bound`` and the violation are ``<= tol * max(1, |p|)``.
Otherwise status MAX_ITER with a ConvergenceWarning.  The result's
``objective`` is the certified worst-case objective of the returned network.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from certopt.convexnn.admm import group_shrink
from certopt.convexnn.problem import SolverOptions
from certopt.convexnn.robust import (
    GroupOperators,
    RobustProblem,
    RobustResult,
    make_robust_result,
)
from certopt.core.errors import ConvergenceWarning
from certopt.core.progress import progress
from certopt.core.result import Status

CHECK_EVERY = 10
"""Iterations between certificate checks."""
LOSS_WEIGHT = 0.01
"""Relative penalty of the loss blocks (z, r); the cone blocks (t, q) and s have 1."""
CONE_WEIGHT = 1.0
DEFAULT_RHO = 0.01
"""Penalty on the rescaled data (fixed; these block weights and rho were the best of a small
grid on test problems; residual balancing made this splitting slower)."""
RELAXATION = 1.6
"""Over-relaxation factor in (0, 2)."""
BISECTION_STEPS = 30


def soft_threshold(b: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Entrywise ``sign(b) max(|b| - level, 0)``; ``level`` (rows,) or scalar-like."""
    return b.sign() * torch.relu(b.abs() - level)


def prox_worst_case_hinge(a: torch.Tensor, b: torch.Tensor, y: torch.Tensor, eps: float,
                          rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin over (z, r) of phi(z, r) + (rho/2)(||z - a||^2 + ||r - b||^2), exactly.

    a (n,), b (n, d_f).  Per row z = a + mu y and r = soft(b, eps mu), where
    mu in [0, 1/(n rho)] is the root of the decreasing piecewise-linear
    ``1 - y a - mu + eps ||soft(b, eps mu)||_1``: with nu = eps mu and |b|
    sorted decreasingly (partial sums S_m), the root on the m-th piece is
    ``nu = (1 - y a + eps S_m) / (1/eps + eps m)``.
    """
    n = a.shape[0]
    cap = 1.0 / (n * rho)
    start = 1 - y * a
    if eps == 0:
        mu = start.clamp(min=0.0, max=cap)
        return a + mu * y, b
    magnitudes = b.abs().sort(dim=1, descending=True).values                # (n, d_f)
    zero = torch.zeros_like(a)[:, None]
    partial = torch.cat([zero, magnitudes.cumsum(dim=1)], dim=1)            # S_m, m = 0..d_f
    count = torch.arange(partial.shape[1], dtype=a.dtype, device=a.device)
    candidate = (start[:, None] + eps * partial) / (1 / eps + eps * count)
    upper = torch.cat([torch.full_like(zero, math.inf), magnitudes], dim=1)
    lower = torch.cat([magnitudes, zero], dim=1)
    valid = (candidate >= lower) & (candidate <= upper)
    nu = torch.where(valid, candidate, torch.full_like(candidate, -math.inf)).amax(dim=1)
    nu = nu.clamp(min=0.0, max=eps * cap)
    return a + (nu / eps) * y, soft_threshold(b, nu[:, None])


def project_robust_cone(a: torch.Tensor, b: torch.Tensor, eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project columns ``a`` (n, J) and rows ``b`` (J, d_f) onto C, group by group.

    q = soft(b, theta), t = max(a, eps ||q||_1), theta the root of the
    decreasing ``sum_k (eps ||soft(b, theta)||_1 - a_k)_+ - theta / eps``.
    """
    if eps == 0:
        return a.clamp(min=0.0), b

    def excess(theta: torch.Tensor) -> torch.Tensor:
        level = eps * soft_threshold(b, theta[:, None]).abs().sum(dim=1)
        return torch.relu(level[None, :] - a).sum(dim=0) - theta / eps

    low = torch.zeros(b.shape[0], dtype=b.dtype, device=b.device)
    high = torch.maximum(b.abs().amax(dim=1) if b.shape[1] else low,
                         eps * torch.relu(-a).sum(dim=0))
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (low + high)
        positive = excess(mid) > 0
        low, high = torch.where(positive, mid, low), torch.where(positive, high, mid)
    # On the bracket's linear piece: c_a eps (S_m - m theta) - A = theta / eps.
    mid = 0.5 * (low + high)
    shrink = b.abs() > mid[:, None]
    m, S_m = shrink.sum(dim=1).to(b.dtype), (b.abs() * shrink).sum(dim=1)
    level = eps * soft_threshold(b, mid[:, None]).abs().sum(dim=1)
    below = a < level[None, :]
    c_a, A = below.sum(dim=0).to(b.dtype), (a * below).sum(dim=0)
    exact = (c_a * eps * S_m - A) / (1 / eps + c_a * eps * m)
    theta = torch.where((exact >= low) & (exact <= high), exact, mid)
    q = soft_threshold(b, theta[:, None])
    return torch.maximum(a, eps * q.abs().sum(dim=1)[None, :]), q


def robust_admm(problem: RobustProblem, options: SolverOptions) -> RobustResult:
    """Solve the robust program by ADMM on the problem's device; see the module docstring.

    Uses ``options.max_iter``, ``options.tol`` (relative certified gap),
    ``options.rho`` (penalty on the rescaled data; default ``DEFAULT_RHO``) and
    ``options.verbose``.
    """
    start = time.perf_counter()
    base = problem.base
    n, d = base.X.shape
    P = base.n_patterns
    sigma = float(torch.linalg.matrix_norm(base.X, ord=2))
    ops = GroupOperators(base.X / sigma, base.D, problem.features)
    eps = problem.eps / sigma
    lam = base.lam / sigma
    weights = (LOSS_WEIGHT, LOSS_WEIGHT, CONE_WEIGHT, CONE_WEIGHT, 1.0)   # blocks z, r, t, q, s
    factor = torch.linalg.cholesky(ops.gram(LOSS_WEIGHT, CONE_WEIGHT, 1.0))
    rho = float(options.rho) if options.rho is not None else DEFAULT_RHO

    u = torch.zeros(2 * P, d, dtype=base.X.dtype, device=base.X.device)
    split = (*ops.forward(u), u)                                   # (z, r, t, q, s)
    duals = tuple(torch.zeros_like(x) for x in split)
    history: dict[str, list[float]] = {"objective": [], "bound": [], "cone_violation": [],
                                       "rho": []}
    status, n_iter = Status.MAX_ITER, 0
    best_bound, best_scale, candidate = -math.inf, math.nan, u
    with progress(options.max_iter, options.verbose, desc="robust admm") as bar:
        for it in range(1, options.max_iter + 1):
            n_iter = it
            z, r, t, q, s = (x - lam_ for x, lam_ in zip(split, duals))
            rhs = ops.adjoint(*(wb * x for wb, x in zip(weights, (z, r, t, q)))) + s
            u = torch.cholesky_solve(rhs.reshape(-1, 1), factor).reshape(2 * P, d)
            mapped = (*ops.forward(u), u)
            relaxed = tuple(RELAXATION * m + (1 - RELAXATION) * x for m, x in zip(mapped, split))
            shifted = tuple(m + lam_ for m, lam_ in zip(relaxed, duals))
            z_new, r_new = prox_worst_case_hinge(shifted[0], shifted[1], base.y, eps,
                                                 rho * LOSS_WEIGHT)
            t_new, q_new = project_robust_cone(shifted[2], shifted[3], eps)
            s_new = group_shrink(shifted[4], lam / rho)
            new_split = (z_new, r_new, t_new, q_new, s_new)
            duals = tuple(lam_ + m - x for lam_, m, x in zip(duals, relaxed, new_split))
            split = new_split
            if it % CHECK_EVERY and it != options.max_iter:
                bar.update(1)
                continue
            candidate = split[4] / sigma
            objective = problem.program_objective(candidate[:P], candidate[P:])
            violation = problem.cone_violation(candidate[:P], candidate[P:])
            multipliers = [rho * wb * x for wb, x in zip(weights, duals)]
            bound, scale = ops.dual_bound(base.y, lam, eps, -n * base.y * multipliers[0],
                                          *multipliers[1:4])
            if bound > best_bound:
                best_bound, best_scale = bound, scale
            gap = objective - best_bound
            history["objective"].append(objective)
            history["bound"].append(bound)
            history["cone_violation"].append(violation)
            history["rho"].append(rho)
            bar.update(1, objective=objective, gap=gap, rho=rho)
            if not math.isfinite(objective):
                status = Status.NUMERICAL
                break
            if max(gap, violation) <= options.tol * max(1.0, abs(objective)):
                status = Status.OPTIMAL
                break
    if status is Status.MAX_ITER:
        warnings.warn(
            f"robust admm: stopped at max_iter={options.max_iter} with relative gap "
            f"{gap / max(1.0, abs(objective)):.2e} and robust-cone violation {violation:.2e} "
            f"> tol={options.tol}", ConvergenceWarning, stacklevel=2)
    elif status is Status.NUMERICAL:
        warnings.warn("robust admm: the iterates are not finite", ConvergenceWarning,
                      stacklevel=2)
    return make_robust_result(problem, candidate[:P], candidate[P:], bound=best_bound,
                              solver="admm",
                              dual_scale=best_scale, status=status, n_iter=n_iter,
                              solve_time=time.perf_counter() - start, history=history)
