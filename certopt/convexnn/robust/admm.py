"""ADMM for the robust convex program (section 7), in torch (CPU or CUDA).

Splitting, with u = (v_1..v_P, w_1..w_P) and the maps of
:class:`~certopt.convexnn.robust.GroupOperators`::

    minimize  phi(z, r) + lam sum_j ||s_j||_2 + sum_j 1_C(t_j, q_j)
    s.t.      z = F u,  r = R u,  s = u,  t = G u,  q = Q u

    phi(z, r) = (1/n) sum_k l_wc(y_k, z_k, eps ||r_k||_1)   (worst-case loss, hinge or squared)
    C = {(t, q) in R^n x R^d_f : t_k >= eps ||q||_1 for all k}       (robust cone)

The data are rescaled by sigma = ||X||_2 (X -> X / sigma, lam -> lam / sigma,
eps -> eps / sigma, u -> sigma u), and the constraint blocks are scaled,
(z, c_r r, c_t t, c_q q, c_s s) = C A u (``BLOCK_SCALES``; a change of
variables, see :class:`_RobustMap`): the cone rows S_i X u have small norms
and the loss rows R u large ones (||R|| ~ sqrt(n P)), and c = (1, 0.3, 3,
0.3, 0.3) balanced them (residual balancing of rho slowed every instance;
benchmarks/RESULTS.md).
Per iteration: one product with the explicit inverse of ``A^T C^2 A``
(computed once; rho only scales the duals, so it never changes),
over-relaxation, then batched proximal maps:

* prox of the worst-case loss / rho, per sample, exactly (by sorting; see
  :meth:`RobustLoss.prox`);
* projection onto C, per group (Newton on a convex piecewise-linear
  equation, exact; see :func:`project_robust_cone`);
* group soft-thresholding for s.

The iteration is written, as in :mod:`admm`, as a map p -> T(p) on the
prox inputs p (split variables plus scaled duals; :class:`_RobustMap`), and
Anderson acceleration (``options.anderson_memory`` = m > 0) extrapolates
T^ANDERSON_INTERVAL from its last m pairs (safeguarded,
:mod:`certopt.core.anderson`).

Polish (:mod:`.polish`) at iterations 50, 100, 200, 400, 800, then
every 500 and at the last one, when the iterate is near the cones
(``POLISH_VIOLATION``): Newton on the piece the split variables identify;
its multipliers are one more dual guess.  Once a candidate is
within FIT_BELOW of the best bound, each dual guess also has its cone
multipliers refitted (:func:`fit_cone_duals`), which is what certified the
hinge instances whose polished point was optimal but whose bound lagged.

The dense inverse takes (2 P d)^2 memory: fine up to 2 P d of a few
thousand; larger programs would need the Woodbury or conjugate-gradient
solves of section 5 (not implemented here).

Stopping (every ``CHECK_EVERY`` iterations): the candidates are the
group-sparse iterate s and the polished points; the best one is the one of
lowest certified objective (:meth:`RobustProblem.objective`: the worst-case
loss from the sound output bounds of :func:`certified_margins` plus the weight
decay; an upper bound on the network's true robust objective whether or not
it meets the robust cones).  Status OPTIMAL when its certified objective
minus the best dual bound so far (:meth:`GroupOperators.dual_bound`, a lower
bound on the cone program's optimum) is ``<= tol * |bound|``
(:func:`~certopt.convexnn.certificate.within_tolerance`, the test of every
convexnn solver): the returned network is then certified at least as good as
the cone program's optimum up to the relative gap tol.  The gap may be negative, and
``residuals["robust_cone"]`` may be far from 0: a network outside the cones
(unstable neurons bounded by the triangle relaxation) can be certified far
below the cone program's optimum.  Otherwise status MAX_ITER with a
ConvergenceWarning, returning the best candidate.

Counting candidates outside the cones is what lets the ADMM end: a certified
gap <= tol is reached whenever some network beats the cone program, once the
dual bound passes the best candidate's certified objective (readings in
benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence

import torch

from certopt.convexnn.admm import anderson_accelerator, anderson_advance, group_shrink
from certopt.convexnn.certificate import within_tolerance
from certopt.convexnn.problem import SolverOptions
from certopt.convexnn.robust.losses import RobustLoss, soft_threshold
from certopt.convexnn.robust.polish import polish
from certopt.convexnn.robust.problem import (
    GroupOperators,
    RobustProblem,
    RobustResult,
    make_robust_result,
)
from certopt.core.arrays import check_scalar
from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.progress import progress
from certopt.core.projected_gradient import accelerated_projected_gradient
from certopt.core.result import Status

CHECK_EVERY = 10
"""Iterations between certificate checks."""
BLOCK_SCALES = (1.0, 0.3, 3.0, 0.3, 0.3)
"""Scales (c_z, c_r, c_t, c_q, c_s) of the constraint blocks (see :class:`_RobustMap`)."""
RHO_PER_LAM = {"hinge": 0.7, "squared": 7.0}
"""Initial penalty rho = RHO_PER_LAM[loss] * lam / sigma: per unit of the rescaled lam
(sigma = ||X||_2), within 1.5x of the rho tuned on small instances, and the one that
certified breast cancer where fixed penalties did not (benchmarks/RESULTS.md)."""
RELAXATION = 1.6
"""Over-relaxation factor in (0, 2)."""
NEWTON_STEPS = 100
"""Cap on the Newton steps of the robust-cone projection (they end in a few)."""
FIRST_POLISH = 50
POLISH_SPACING = 500
POLISH_VIOLATION = 1e-2
"""Polish attempts at iterations 50, 100, 200, 400, 800, then every 500, and at the last,
when the iterate violates the robust cones by at most POLISH_VIOLATION relative to
max(1, |objective|) (farther off, the polished piece is a guess and costs more than it
saves)."""
DUAL_FIT_STEPS = 200
FIT_BELOW = 1e-3
"""At each polish, :func:`fit_cone_duals` (DUAL_FIT_STEPS steps) refits the cone
multipliers of each dual guess once a candidate is within a relative
certified gap FIT_BELOW (earlier, a tighter bound would not end the solve)."""


def project_robust_cone(a: torch.Tensor, b: torch.Tensor, eps: float,
                        start: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project columns ``a`` (n, J) and rows ``b`` (J, d_f) onto C, group by group.

    q = soft(b, theta), t = max(a, eps ||q||_1), theta (J,) the root of
    ``g(theta) = sum_k (eps ||soft(b, theta)||_1 - a_k)_+ - theta / eps``,
    which is convex, decreasing and piecewise linear with g(0) >= 0.  Newton's
    method: from any start, one step lands at or left of the root (the tangent
    of a convex function lies below it), and from there it increases
    monotonically and ends on the root's linear piece after finitely many
    steps (exact up to round-off).  ``start`` (e.g. the previous iteration's
    theta; default 0) warm-starts it.  Returns (t, q, theta).
    """
    if eps == 0:
        return a.clamp(min=0.0), b, torch.zeros(b.shape[0], dtype=b.dtype, device=b.device)
    magnitude = b.abs()
    resolution = 4.0 * torch.finfo(b.dtype).eps  # a Newton step this small is round-off
    theta = (torch.zeros(b.shape[0], dtype=b.dtype, device=b.device) if start is None
             else start)
    for _ in range(NEWTON_STEPS):
        shrink = magnitude > theta[:, None]
        count, total = shrink.sum(dim=1).to(b.dtype), (magnitude * shrink).sum(dim=1)
        level = eps * (total - count * theta)
        above = a < level[None, :]
        c_a = above.sum(dim=0).to(b.dtype)
        excess = c_a * level - (a * above).sum(dim=0) - theta / eps
        new = (theta + excess / (c_a * eps * count + 1 / eps)).clamp(min=0.0)
        done = bool((new - theta).abs().max() <= resolution * (1 + new.abs().max()))
        theta = new
        if done:
            break
    q = soft_threshold(b, theta[:, None])
    return torch.maximum(a, eps * q.abs().sum(dim=1)[None, :]), q, theta


def fit_cone_duals(ops: GroupOperators, loss: RobustLoss, y: torch.Tensor, lam: float,
                   eps: float, duals: tuple[torch.Tensor, ...], steps: int = DUAL_FIT_STEPS
                   ) -> tuple[torch.Tensor, ...]:
    """Dual guess (a, r_dual, t_dual, q_dual) with cone multipliers refitted for the bound.

    With the loss's part (a, r_dual) fixed (clipped to its domain), minimises
    ``sum_j dist(gamma_j, lam ball)^2`` over (t_dual, q_dual) in the polar cone
    C° = {t <= 0, ||q_j||_inf <= eps sum_k (-t_kj)} of the robust cones,
    gamma = F^T a + R^T r_dual + G^T t_dual + Q^T q_dual, by accelerated projected
    gradient from the given multipliers (projection onto C°: x - proj_C(x),
    Moreau).  The bound of :meth:`GroupOperators.dual_bound` scales by
    lam / max_j ||gamma_j||, so a smaller excess gives a tighter bound; any
    output is a valid dual guess.
    """
    a, r_dual, _ = loss.clip_dual(duals[0], duals[1], y, eps)

    def polar(t: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_c, q_c, _ = project_robust_cone(t, q, eps)
        return t - t_c, q - q_c

    fixed = ops.adjoint(a, r_dual, torch.zeros_like(duals[2]), torch.zeros_like(duals[3]))
    zero_z, zero_r = torch.zeros_like(a), torch.zeros_like(r_dual)
    step = 1.0 / (float(torch.linalg.matrix_norm(ops.X, ord=2)) ** 2 + 1.0)

    def gradient(blocks: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], None]:
        gamma = fixed + ops.adjoint(zero_z, zero_r, *blocks)
        excess = gamma - group_shrink(gamma, lam)      # gamma minus its projection on the ball
        _, _, g_t, g_q = ops.forward(excess)
        return [g_t, g_q], None

    t, q = accelerated_projected_gradient(gradient, lambda blocks: polar(*blocks),
                                          polar(duals[2], duals[3]), step, steps)
    return a, r_dual, t, q


class _RobustMap:
    """The ADMM as a map p -> T(p) on its prox inputs p = (z, r, t, q, s) + duals.

    The constraint blocks are scaled, x = (z, c_r r, c_t t, c_q q, c_s s) =
    C A u (a change of variables: the loss sees eps / c_r, the cone
    eps c_t / c_q, the group penalty lam / c_s).  With x = prox(p) and the
    scaled duals p - x, one iteration is ``u = argmin ||C A u - (2x - p)||^2``,
    ``T(p) = p + relaxation (C A u - x)`` (the usual over-relaxed ADMM in these
    variables).  Tensors are flat: one vector holds the five blocks.
    """

    def __init__(self, problem: RobustProblem, ops: GroupOperators, eps: float, lam: float,
                 rho: float, scales: tuple[float, float, float, float, float]):
        base = problem.base
        self.ops, self.loss, self.y, self.eps, self.lam, self.rho = (
            ops, problem.loss, base.y, eps, lam, rho)
        if scales[0] != 1.0:
            raise InputValueError("scales: the z block's scale c_z must be 1 (the loss prox "
                                  f"assumes it), got {scales[0]}")
        self.scales = scales
        self.theta: torch.Tensor | None = None   # the last cone projection's thresholds
        # explicit inverse: one matrix-vector product per iteration, 5x faster than two
        # triangular solves at 2 P d = 1240 (the matrix is >= c_s^2 I, well conditioned)
        self.inverse = torch.cholesky_inverse(
            torch.linalg.cholesky(ops.gram(tuple(c * c for c in scales))))
        self.u_shape = (2 * base.n_patterns, base.n_features)
        blocks = ops.forward(torch.zeros(self.u_shape, dtype=base.X.dtype, device=base.X.device))
        self.shapes = [b.shape for b in blocks] + [torch.Size(self.u_shape)]

    def split(self, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The five blocks (views) of a flat vector."""
        sizes = [math.prod(shape) for shape in self.shapes]
        return tuple(b.view(shape) for b, shape in zip(p.split(sizes), self.shapes))

    def prox(self, p: torch.Tensor) -> torch.Tensor:
        """x = the blockwise proximal maps at p, flat."""
        c_z, c_r, c_t, c_q, c_s = self.scales
        z, r, t, q, s = self.split(p)
        z, r = self.loss.prox(z, r, self.y, self.eps / c_r, self.rho)
        t, q, self.theta = project_robust_cone(t, q, self.eps * c_t / c_q, self.theta)
        s = group_shrink(s, self.lam / (c_s * self.rho))
        return torch.cat([b.flatten() for b in (z, r, t, q, s)])

    def __call__(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """T(p), given x = prox(p)."""
        target = [c * b for c, b in zip(self.scales, self.split(2 * x - p))]
        rhs = self.ops.adjoint(*target[:4]) + target[4]
        u = (self.inverse @ rhs.flatten()).reshape(self.u_shape)
        mapped = torch.cat([(c * b).flatten()
                            for c, b in zip(self.scales, (*self.ops.forward(u), u))])
        return torch.add(p, mapped - x, alpha=RELAXATION)

    def variables(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The split variables (z, r, t, q, s) of x, unscaled."""
        return [b / c for c, b in zip(self.scales, self.split(x))]

    def multipliers(self, p: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """The multipliers c rho (p - x) of the five unscaled constraints."""
        return [self.rho * c * b for c, b in zip(self.scales, self.split(p - x))]


def robust_admm(problem: RobustProblem, options: SolverOptions) -> RobustResult:
    """Solve the robust program by ADMM on the problem's device; see the module docstring.

    Uses ``options.max_iter``, ``options.tol`` (relative certified gap),
    ``options.rho`` (penalty on the rescaled data; default ``RHO_PER_LAM * lam / sigma``),
    ``options.anderson_memory`` (0: plain ADMM) and ``options.verbose``.
    """
    start = time.perf_counter()
    check_scalar(options.max_iter, "max_iter", low=1, integer=True)
    base, loss = problem.base, problem.loss
    P = base.n_patterns
    sigma = float(torch.linalg.matrix_norm(base.X, ord=2))
    ops = GroupOperators(base.X / sigma, base.D, problem.features)
    eps = problem.eps / sigma
    lam = base.lam / sigma
    rho = (check_scalar(options.rho, "rho", low=0.0, low_inclusive=False)
           if options.rho is not None else RHO_PER_LAM[loss.name] * lam)
    T = _RobustMap(problem, ops, eps, lam, rho, BLOCK_SCALES)
    accelerator = anderson_accelerator(options)
    p = anchor = torch.zeros(sum(math.prod(s) for s in T.shapes), dtype=base.X.dtype,
                             device=base.X.device)
    history: dict[str, list[float]] = {"objective": [], "bound": [], "cone_violation": []}
    status, n_iter, next_polish = Status.MAX_ITER, 0, FIRST_POLISH
    best_bound, best_scale = -math.inf, math.nan
    admm_point = torch.zeros(T.u_shape, dtype=p.dtype, device=p.device)
    best: tuple[float, torch.Tensor] | None = None   # certified objective, its point
    cone_fit: tuple[torch.Tensor, ...] | None = None
    checked: tuple[torch.Tensor, torch.Tensor] | None = None   # (point, its prox) at a check

    def consider(point: torch.Tensor) -> None:
        """Keep ``point`` as the best candidate if its certified objective is lower
        (sound for any network, so the robust cones need not hold; NaN never wins)."""
        nonlocal best
        value = problem.objective(point[:P], point[P:])
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, point)

    with progress(options.max_iter, options.verbose, desc="robust admm") as bar:
        for it in range(1, options.max_iter + 1):
            n_iter = it
            x = checked[1] if checked is not None and checked[0] is p else T.prox(p)
            p_next = T(p, x)
            if it % CHECK_EVERY and it != options.max_iter:
                p, anchor = anderson_advance(accelerator, it, anchor, p_next)
                bar.update(1)
                continue
            x_next = T.prox(p_next)
            checked = (p_next, x_next)   # the next iteration's prox when it starts at p_next
            split = T.variables(x_next)
            multipliers = T.multipliers(p_next, x_next)
            admm_point = split[4] / sigma
            objective = problem.program_objective(admm_point[:P], admm_point[P:])
            violation = problem.cone_violation(admm_point[:P], admm_point[P:])
            bound, scale = ops.dual_bound(loss, base.y, lam, eps, *multipliers[:4])
            if bound > best_bound:
                best_bound, best_scale = bound, scale
            consider(admm_point)
            if it >= next_polish or it == options.max_iter:
                next_polish = min(2 * next_polish, next_polish + POLISH_SPACING)
                guesses = [tuple(multipliers[:4])]
                near_cones = violation <= POLISH_VIOLATION * max(1.0, abs(objective))
                attempt = (polish(ops, loss, base.y, lam, eps, split, tuple(multipliers[2:4]))
                           if near_cones else None)
                if attempt is not None:
                    guesses.append(attempt[1])
                    consider(attempt[0] / sigma)
                if best is not None and best[0] - best_bound <= FIT_BELOW * max(
                        1.0, abs(best[0])):
                    if cone_fit is not None:   # the last fit's cone part, this loss part
                        guesses.append((*guesses[-1][:2], *cone_fit))
                    fitted = [fit_cone_duals(ops, loss, base.y, lam, eps, g, DUAL_FIT_STEPS)
                              for g in guesses]
                    cone_fit = fitted[-1][2:]
                    guesses += fitted
                for guess in guesses:
                    p_bound, p_scale = ops.dual_bound(loss, base.y, lam, eps, *guess)
                    if p_bound > best_bound:
                        best_bound, best_scale = p_bound, p_scale
            gap = (best[0] if best is not None else objective) - best_bound
            history["objective"].append(objective)
            history["bound"].append(bound)
            history["cone_violation"].append(violation)
            bar.update(1, objective=objective, gap=gap)
            if not math.isfinite(objective):
                status = Status.NUMERICAL
                break
            if best is not None and within_tolerance(best[0], best_bound, options.tol):
                status = Status.OPTIMAL
                break
            p, anchor = anderson_advance(accelerator, it, anchor, p_next)
    if status is Status.MAX_ITER:
        warnings.warn(
            f"robust admm: stopped at max_iter={options.max_iter} with relative certified "
            f"gap {gap / max(abs(best_bound), 1e-300):.2e} > tol={options.tol}",
            ConvergenceWarning, stacklevel=2)
    elif status is Status.NUMERICAL:
        warnings.warn("robust admm: the iterates are not finite", ConvergenceWarning,
                      stacklevel=2)
    candidate = best[1] if best is not None else admm_point
    return make_robust_result(problem, candidate[:P], candidate[P:], bound=best_bound,
                              solver="admm", dual_scale=best_scale, status=status,
                              n_iter=n_iter, solve_time=time.perf_counter() - start,
                              history=history)
