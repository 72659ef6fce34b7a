"""Sampled convex programs (math note, section 6): gated-ReLU group lasso by FISTA.

Step 1, the unconstrained program over the sampled patterns D_1..D_P::

    minimize_u  L(sum_i D_i X u_i) + lam sum_i ||u_i||_2,      u in R^{P x d}

by accelerated proximal gradient (FISTA) with backtracking on the step and
adaptive (gradient) restarts, batched over the (P, d) blocks in torch.  The
hinge loss is not smooth: it is replaced by its Moreau envelope (built from
the loss's own prox) of decreasing widths ``HINGE_SMOOTHING`` in the margin.

Step 1 only has to find a support, so it runs at the loose tolerance
``SCREENING_TOL``.

Step 2, back to a ReLU network: the cone-constrained program of section 2
is solved on the support found (the patterns of the nonzero u_i) by the
ADMM, which is cheap when the support is small.  The gated support can miss
patterns the ReLU optimum needs (measured: F up to 16% above the ADMM's on
all patterns), so step 2 is a working set: after each solve the patterns
off the support whose dual constraint (section 4, NNLS cone multipliers)
the network violates are added and the program re-solved, at
``SCREENING_TOL`` until no pattern is missing, then at ``tol``.  The result
is the optimum over all P patterns whenever no pattern is left violated;
it is faster than the ADMM on all P patterns only when the support is a
small part of P (large lam or many patterns).  ``objective`` of the
result is F of that ReLU network (never the gated objective, which is kept
in ``residuals["gated_objective"]`` for information), and the bound is the
scaled dual bound of section 4 for the program over *all* P sampled
patterns, so the gap compares the network with the full sampled program.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import torch

from certopt.convexnn.admm import group_shrink, solve_admm
from certopt.convexnn.certificate import certify, fit_cone_multipliers
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.result import ConvexNNResult
from certopt.core.errors import ConvergenceWarning
from certopt.core.progress import progress
from certopt.core.result import Status

HINGE_SMOOTHING = (1e-1, 1e-2, 1e-3)
"""Widths (in margin units) of the Moreau smoothing of the hinge loss in step 1,
solved in turn, each warm started from the previous (continuation)."""
CHECK_EVERY = 10
WORKING_SET_ROUNDS = 6
"""Re-solves on the growing support (step 2) before giving up on missing patterns."""
SCREENING_TOL = 1e-3
"""Tolerance of the gated FISTA and of the working-set rounds before the final solve:
they only have to find the support."""
VIOLATION_SLACK = 1e-3


class GatedProgram:
    """The smooth part f(u) = L(sum_i D_i X u_i) and the group-lasso prox."""

    def __init__(self, problem: ConvexReLUProblem, smoothing: float = HINGE_SMOOTHING[-1]):
        self.problem = problem
        self.rho = 1.0 / (problem.n_samples * smoothing)  # Moreau parameter (hinge only)

    def predict(self, u: torch.Tensor) -> torch.Tensor:
        return (self.problem.D * (u @ self.problem.X.T)).sum(dim=0)

    def _smoothed(self, pred: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Loss value at ``pred`` and its gradient in pred (hinge: Moreau envelope)."""
        loss, y = self.problem.loss, self.problem.y
        if loss.name == "hinge":
            nearest = loss.prox(pred, y, self.rho)
            value = float(loss.value(nearest, y)) + 0.5 * self.rho * float(
                (pred - nearest).square().sum())
            return value, self.rho * (pred - nearest)
        return float(loss.value(pred, y)), loss.gradient(pred, y)

    def loss_and_gradient(self, u: torch.Tensor) -> tuple[float, torch.Tensor]:
        """f(u) and its gradient (P, d); hinge through its Moreau envelope."""
        value, dual = self._smoothed(self.predict(u))
        return value, (self.problem.D * dual) @ self.problem.X

    def value(self, u: torch.Tensor) -> float:
        """f(u) alone (no gradient): what the backtracking test needs."""
        return self._smoothed(self.predict(u))[0]

    def prox(self, u: torch.Tensor, step: float) -> torch.Tensor:
        return group_shrink(u, step * self.problem.lam)

    def penalty(self, u: torch.Tensor) -> float:
        return self.problem.lam * float(torch.linalg.vector_norm(u, dim=1).sum())


def fista(program: GatedProgram, options: SolverOptions, start: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, Status, int]:
    """Minimise f + lam sum ||u_i|| by FISTA with backtracking and gradient restarts.

    Stops when the gradient mapping ``||L (y - x+)||`` is below ``tol`` times
    ``max(1, ||grad f(x+)||)`` (a relative first-order optimality measure).
    """
    X = program.problem.X
    P, d = program.problem.n_patterns, program.problem.n_features
    x = torch.zeros(P, d, dtype=X.dtype, device=X.device) if start is None else start
    point, momentum = x, 1.0
    lipschitz = 1.0
    status, n_iter = Status.MAX_ITER, 0
    with progress(options.max_iter, options.verbose, desc="sampled fista") as bar:
        for it in range(1, options.max_iter + 1):
            n_iter = it
            value, grad = program.loss_and_gradient(point)
            while True:
                candidate = program.prox(point - grad / lipschitz, 1.0 / lipschitz)
                step = candidate - point
                model = value + float((grad * step).sum()) + 0.5 * lipschitz * float(
                    step.square().sum())
                if program.value(candidate) <= model + 1e-12 * abs(model):
                    break
                lipschitz *= 2.0
            if float((step * (candidate - x)).sum()) > 0:      # restart: momentum hurts
                momentum = 1.0
            next_momentum = 0.5 * (1 + math.sqrt(1 + 4 * momentum ** 2))
            point = candidate + ((momentum - 1) / next_momentum) * (candidate - x)
            x, momentum = candidate, next_momentum
            lipschitz *= 0.9                                     # let the step grow back
            if it % CHECK_EVERY:
                bar.update(1)
                continue
            mapping = lipschitz * float(torch.linalg.vector_norm(step))
            scale = max(1.0, float(torch.linalg.vector_norm(grad)))
            bar.update(1, mapping=mapping)
            if not math.isfinite(mapping):
                status = Status.NUMERICAL
                break
            if mapping <= options.tol * scale:
                status = Status.OPTIMAL
                break
    return x, status, n_iter


def solve_gated(problem: ConvexReLUProblem, options: SolverOptions
                ) -> tuple[torch.Tensor, Status, int]:
    """Step 1: (u, status, iterations) of the gated-ReLU group lasso by FISTA.

    The hinge loss is solved through its Moreau envelopes of the decreasing
    widths ``HINGE_SMOOTHING``, each stage warm started from the previous one;
    the status is that of the last stage.
    """
    widths = HINGE_SMOOTHING if problem.loss.name == "hinge" else HINGE_SMOOTHING[-1:]
    u, n_iter, status = None, 0, Status.MAX_ITER
    for width in widths:
        u, status, steps = fista(GatedProgram(problem, width), options, start=u)
        n_iter += steps
    return u, status, n_iter


def violated_patterns(problem: ConvexReLUProblem, support: torch.Tensor,
                      network: ConvexNNResult) -> torch.Tensor:
    """(P,) mask of the patterns off ``support`` whose dual constraint the network violates.

    With l = grad L at the network's prediction and cone multipliers fitted
    by NNLS (:func:`fit_cone_multipliers`), pattern i is violated when
    ``max(||X^T(D_i l - S_i mu_i)||, ||X^T(-D_i l - S_i nu_i)||) > lam (1 +
    VIOLATION_SLACK)``: adding it lets the objective decrease (the network
    is optimal over all P patterns when no pattern is violated).
    """
    outside = (~support).nonzero().flatten()
    missing = torch.zeros_like(support)
    if outside.numel() == 0:
        return missing
    v = torch.zeros(problem.n_patterns, problem.n_features, dtype=problem.X.dtype,
                    device=problem.X.device)
    w = v.clone()
    v[support], w[support] = network.v, network.w
    dual = problem.loss.gradient(problem.predict_convex(v, w), problem.y)
    others = dataclasses.replace(problem, D=problem.D[outside], is_global=False)
    mu, nu = fit_cone_multipliers(others, dual)
    norms = others.dual_constraint_norms(dual, mu, nu).amax(dim=0)
    missing[outside[norms > problem.lam * (1 + VIOLATION_SLACK)]] = True
    return missing


def solve_sampled(problem: ConvexReLUProblem, options: SolverOptions) -> ConvexNNResult:
    """Gated-ReLU group lasso by FISTA, then the ReLU network on its support.

    Returns a :class:`ConvexNNResult` for ``problem`` (all its P patterns):
    ``v, w`` (P, d) are zero outside the support; ``objective`` is F of the
    returned network; ``status`` is the worse of the two steps' statuses
    (MAX_ITER with a ConvergenceWarning when either stopped early), and
    INACCURATE (with the warning) when patterns outside the support still
    violate their dual constraint after WORKING_SET_ROUNDS re-solves
    (``residuals["violated_patterns"]`` counts them).
    """
    start = time.perf_counter()
    screening = dataclasses.replace(options, tol=max(options.tol, SCREENING_TOL))
    u, status, n_iter = solve_gated(problem, screening)
    program = GatedProgram(problem)
    gated_objective = float(problem.loss.value(program.predict(u), problem.y)) + program.penalty(u)
    support = torch.linalg.vector_norm(u, dim=1) > 0
    if not bool(support.any()):
        support[0] = True
    gated_support = int(support.sum())
    screened = options.tol >= SCREENING_TOL
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for round_ in range(WORKING_SET_ROUNDS):
            last = round_ == WORKING_SET_ROUNDS - 1
            restricted = dataclasses.replace(problem, D=problem.D[support], is_global=False)
            network = solve_admm(restricted, options if screened or last else screening)
            n_iter += network.n_iter
            missing = violated_patterns(problem, support, network)
            if bool(missing.any()) and not last:
                support = support | missing
            elif screened or last:
                break
            else:
                screened = True
    if status is Status.OPTIMAL:
        status = network.status
    if status is Status.OPTIMAL and bool(missing.any()):
        # Optimal on the support, but some pattern's dual constraint is still violated:
        # the network need not be optimal over all P patterns.
        status = Status.INACCURATE
    if status is not Status.OPTIMAL:
        reason = (f"{int(missing.sum())} patterns still violated after {WORKING_SET_ROUNDS} "
                  "working-set rounds" if bool(missing.any()) else "FISTA max_iter")
        warnings.warn(f"sampled: stopped with status {status.value} "
                      f"({'; '.join(str(w.message) for w in caught) or reason})",
                      ConvergenceWarning, stacklevel=2)
    v = torch.zeros_like(u).index_put_((support,), network.v)
    w = torch.zeros_like(u).index_put_((support,), network.w)
    dual = problem.loss.gradient(problem.predict_convex(v, w), problem.y)
    return certify(
        problem, v, w, duals=[dual], mu=None, nu=None, status=status,
        n_iter=n_iter, solve_time=time.perf_counter() - start,
        solver="sampled",
        residuals={"gated_objective": gated_objective, "support_size": float(support.sum()),
                   "gated_support_size": float(gated_support),
                   "violated_patterns": float(missing.sum())},
    )
