"""Sampled convex programs (math note, section 6): gated-ReLU group lasso by FISTA.

Step 1, the unconstrained program over the sampled patterns D_1..D_P::

    minimize_u  L(sum_i D_i X u_i) + lam sum_i ||u_i||_2,      u in R^{P x d}

by accelerated proximal gradient (FISTA) with backtracking on the step and
adaptive (gradient) restarts, batched over the (P, d) blocks in torch.  The
hinge loss is not smooth: it is replaced by its Moreau envelope (built from
the loss's own prox) of width ``GATED_HINGE_SMOOTHING`` in the margin.

Step 1 only has to find a support and a warm start, so it runs at the loose
tolerance ``SCREENING_TOL`` and at most ``GATED_MAX_ITER`` steps.

Step 2, back to a ReLU network, first the cheap path: the cone-constrained
program of section 2 on the support found (the patterns of the nonzero
u_i) by an augmented Lagrangian whose subproblems are FISTA runs of the same
kind (smooth part + group-lasso prox).  With multipliers g = (g_v, g_w) >= 0
of the cones S_i X v_i >= 0, S_i X w_i >= 0 and a penalty delta, each round
minimises over x = (v, w)

    L(sum_i D_i X (v_i - w_i)) + lam sum_i (||v_i|| + ||w_i||)
        + (1 / 2 delta) sum (||(g - delta S X x)_+||^2 - ||g||^2)

by FISTA (warm started; the first round from v = u, w = 0) until it meets
``SCREENING_TOL`` or ``AL_INNER_ITER`` steps, then updates
g <- (g - delta S X x)_+ (Rockafellar's augmented Lagrangian for
inequalities; delta = ``AL_PENALTY`` / n).  The hinge loss enters through
its Moreau envelope of width ``AL_HINGE_SMOOTHING``.  Every
``AL_CHECK_ITER`` steps the ReLU network of (v, w) is certified: l = grad L
(of the smoothed loss for the hinge; any l in dom L* gives a valid bound on
the unsmoothed program) at sum_i D_i X (v_i - w_i) and the multipliers the
round would update to (refitted by NNLS, :mod:`certificate`) give the scaled
dual bound of section 4 on min G over all P patterns.  The
cheap path stops, status OPTIMAL, as soon as

    F(network) - bound <= tol |bound|,

which proves F <= (1 + tol) min G (so F <= (1 + tol) times the F of any
network of the sampled program, the ADMM's included).  The network is not
forced into its patterns' cones: F is always evaluated on the real ReLU
network, and a network whose neurons leave the sampled cones can have F
below min G (``residuals["cone_violation"]`` says by how much it leaves
them; the gap is then negative, as is typical when n >> d).

Why not split each gated u_i into its cones (v_i - w_i = u_i, both in the
cone, same predictions)?  With n >> d the cones are narrow: the smallest
split (an SOCP per group) multiplies ||u_i|| many times over, and no bound
certifies the split network.

When the cheap path does not certify within ``AL_ROUNDS`` rounds, or stops
early because ``AL_PATIENCE`` certificates in a row did not shrink the
certified relative gap (F - bound) / |bound| (the bound can creep up by a
few per cent per check while F stays), the accurate path runs:
the ADMM on the support with a working set, at min(tol, ``FALLBACK_MAX_TOL``)
since the ADMM's tol bounds its residuals, not the gap.  The gated support can miss
patterns the ReLU optimum needs, so after each solve the patterns off the support whose dual
constraint (section 4, NNLS cone multipliers) the network violates are
added and the program re-solved, at ``SCREENING_TOL`` until no pattern is
missing, then at ``tol``.  The result is the optimum over all P patterns
whenever no pattern is left violated; it is faster than the ADMM on all P
patterns only when the support is a small part of P (large lam or many
patterns).

``objective`` of the result is F of the returned ReLU network (never the
gated objective, which is kept in ``residuals["gated_objective"]``), and the
bound is the scaled dual bound of section 4 for the program over *all* P
sampled patterns, so the gap compares the network with the full sampled
program.  ``residuals["admm_fallback"]`` is 1 when the accurate path ran,
``residuals["al_checks"]`` counts the cheap path's certificates.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
import warnings
from collections.abc import Iterator

import torch

from certopt.convexnn.admm import group_shrink, solve_admm
from certopt.convexnn.certificate import certify, fit_cone_multipliers, within_tolerance
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.result import ConvexNNResult
from certopt.core.errors import ConvergenceWarning
from certopt.core.progress import progress
from certopt.core.result import Status

GATED_HINGE_SMOOTHING = 0.1
"""Width (in margin units) of the Moreau smoothing of the hinge loss in step 1: it only
proposes a support and a warm start."""
AL_HINGE_SMOOTHING = 0.05
"""Width of the hinge loss's Moreau smoothing in the augmented-Lagrangian rounds; the
smoothed gradient is the certificate's dual l (a narrower smoothing gave bounds too weak
to certify)."""
CHECK_EVERY = 10
"""FISTA steps between two stopping tests."""
WORKING_SET_ROUNDS = 6
"""Re-solves on the growing support (step 2) before giving up on missing patterns."""
SCREENING_TOL = 1e-3
"""Tolerance of the gated FISTA and of the working-set rounds before the final solve:
they only have to find the support."""
GATED_MAX_ITER = 500
"""FISTA steps of step 1 at most (a support and a warm start, not an answer; the smoothed
hinge program can take thousands of steps at n = 2000)."""
VIOLATION_SLACK = 1e-3
"""Relative slack on lam before a pattern off the support counts as violated."""
AL_ROUNDS = 4
"""Multiplier updates of the cheap path at most before the ADMM fallback."""
AL_INNER_ITER = 600
"""FISTA steps at most per round; a round ends earlier when its FISTA meets
``SCREENING_TOL`` (short rounds left the certificate's dual badly scaled)."""
AL_CHECK_ITER = 100
"""FISTA steps between two certificates of the cheap path (within a round)."""
AL_PATIENCE = 3
"""Certificates in a row without a smaller relative gap before the ADMM fallback."""
AL_PENALTY = 10.0
"""The augmented Lagrangian's penalty delta, times n (the loss is a mean over n samples)."""
FALLBACK_MAX_TOL = 1e-3
"""The fallback ADMM runs at min(tol, FALLBACK_MAX_TOL) (it certifies its support only, and
looser runs left gaps of several per cent over all patterns)."""
CHECK_NNLS_STEPS = 100
"""Multiplier-fit steps of each round's certificate (the final certificates use the
default cap, ``certificate.NNLS_STEPS``)."""


class GroupLassoProgram(abc.ABC):
    """f(x) + lam sum_i ||x_i||, with f(x) = h(x X^T) smooth: what :func:`fista` minimises.

    A subclass gives h through ``loss_and_gradient_at(image)`` and
    ``value_at(image)`` on the image x X^T (blocks of x are rows of d
    weights), so that FISTA can extrapolate images as it extrapolates points
    (the map is linear) and pay one product with X and one with X^T per step.
    """

    problem: ConvexReLUProblem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.problem.X.T

    @abc.abstractmethod
    def loss_and_gradient_at(self, image: torch.Tensor) -> tuple[float, torch.Tensor]:
        """f and its gradient in x (the shape of x) at the image x X^T."""

    @abc.abstractmethod
    def value_at(self, image: torch.Tensor) -> float:
        """f alone at the image x X^T (what the backtracking test needs)."""

    def loss_and_gradient(self, x: torch.Tensor) -> tuple[float, torch.Tensor]:
        """f(x) and its gradient, the shape of x."""
        return self.loss_and_gradient_at(self.forward(x))

    def value(self, x: torch.Tensor) -> float:
        return self.value_at(self.forward(x))

    def prox(self, x: torch.Tensor, step: float) -> torch.Tensor:
        return group_shrink(x, step * self.problem.lam)


class GatedProgram(GroupLassoProgram):
    """The gated program's smooth part f(u) = L(sum_i D_i X u_i), u (P, d)."""

    def __init__(self, problem: ConvexReLUProblem, smoothing: float = GATED_HINGE_SMOOTHING):
        self.problem = problem
        self.rho = 1.0 / (problem.n_samples * smoothing)  # Moreau parameter (hinge only)

    def smoothed_loss(self, pred: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Loss value at ``pred`` and its gradient in pred (hinge: Moreau envelope)."""
        loss, y = self.problem.loss, self.problem.y
        if loss.name == "hinge":
            nearest = loss.prox(pred, y, self.rho)
            value = float(loss.value(nearest, y)) + 0.5 * self.rho * float(
                (pred - nearest).square().sum())
            return value, self.rho * (pred - nearest)
        return float(loss.value(pred, y)), loss.gradient(pred, y)

    def smoothed_loss_at(self, image: torch.Tensor) -> tuple[float, torch.Tensor]:
        """:meth:`smoothed_loss` at the prediction sum_i D_i X u_i, from the image u X^T."""
        return self.smoothed_loss((self.problem.D * image).sum(dim=0))

    def loss_and_gradient_at(self, image: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, dual = self.smoothed_loss_at(image)
        return value, (self.problem.D * dual) @ self.problem.X

    def value_at(self, image: torch.Tensor) -> float:
        return self.smoothed_loss_at(image)[0]

    def penalty(self, u: torch.Tensor) -> float:
        return self.problem.lam * float(torch.linalg.vector_norm(u, dim=1).sum())


class ConePenalisedProgram(GroupLassoProgram):
    """Smooth part of one augmented-Lagrangian round over x = (v, w), shape (2, P, d).

    f(x) = L(sum_i D_i X (v_i - w_i)) + (1 / 2 delta) (||(g - delta S X x)_+||^2 - ||g||^2)
    with multipliers g (2, P, n) >= 0; the hinge loss through its Moreau
    envelope as in :class:`GatedProgram`.
    """

    def __init__(self, problem: ConvexReLUProblem, multipliers: torch.Tensor, delta: float,
                 smoothing: float = AL_HINGE_SMOOTHING):
        self.problem = problem
        self.gated = GatedProgram(problem, smoothing)
        self.multipliers = multipliers
        self.delta = delta
        self.signs = problem.signs                              # S, (P, n)
        self.scaled_signs = delta * self.signs
        self.multiplier_energy = float(multipliers.square().sum())

    def terms_at(self, image: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """(f, l = gradient of the (smoothed) loss at the prediction, (g - delta S X x)_+)
        at the image x X^T (2, P, n)."""
        value, dual = self.gated.smoothed_loss_at(image[0] - image[1])
        shifted = (self.multipliers - self.scaled_signs * image).clamp(min=0.0)
        value += (float(shifted.square().sum()) - self.multiplier_energy) / (2.0 * self.delta)
        return value, dual, shifted

    def loss_and_gradient_at(self, image: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, dual, shifted = self.terms_at(image)
        Dl = self.problem.D * dual
        return value, (torch.stack([Dl, -Dl]) - self.signs * shifted) @ self.problem.X

    def value_at(self, image: torch.Tensor) -> float:
        return self.terms_at(image)[0]


def fista(program: GroupLassoProgram, options: SolverOptions,
          start: torch.Tensor) -> tuple[torch.Tensor, Status, int]:
    """Minimise f + lam sum ||u_i|| from ``start`` by FISTA with backtracking and restarts.

    Stops when the gradient mapping ``L ||y - x+||`` at the extrapolated point y
    (L the step's Lipschitz estimate after its decay) is below ``tol`` times
    ``max(1, ||grad f(y)||)`` (a relative first-order optimality measure).
    The images x X^T are carried along (extrapolated with the points), so a
    step costs one product with X for the gradient (``(.) @ X``) and one with
    X^T per backtracking trial (``x @ X.T``).  The sufficient-decrease test
    allows a slack of a few ulps of the dtype (the extrapolated image and a
    recomputed one differ by round-off); a step size that backtracks to
    nothing ends the run with status NUMERICAL.
    """
    x, image = start, program.forward(start)
    point, point_image, momentum = x, image, 1.0
    lipschitz = 1.0
    slack = max(1e-12, 16 * torch.finfo(start.dtype).eps)
    status, n_iter = Status.MAX_ITER, 0
    with progress(options.max_iter, options.verbose, desc="sampled fista") as bar:
        for it in range(1, options.max_iter + 1):
            n_iter = it
            value, grad = program.loss_and_gradient_at(point_image)
            if not math.isfinite(value):
                status = Status.NUMERICAL
                break
            while math.isfinite(lipschitz):
                candidate = program.prox(point - grad / lipschitz, 1.0 / lipschitz)
                candidate_image = program.forward(candidate)
                step = candidate - point
                model = value + float((grad * step).sum()) + 0.5 * lipschitz * float(
                    step.square().sum())
                if program.value_at(candidate_image) <= model + slack * abs(model):
                    break
                lipschitz *= 2.0
            if not math.isfinite(lipschitz):
                status = Status.NUMERICAL
                break
            # gradient restart (O'Donoghue & Candes): the generalised gradient at the
            # extrapolated point, L (point - candidate), points along the last move
            if float((step * (candidate - x)).sum()) < 0:
                momentum = 1.0
            next_momentum = 0.5 * (1 + math.sqrt(1 + 4 * momentum ** 2))
            beta = (momentum - 1) / next_momentum
            point = candidate + beta * (candidate - x)
            point_image = candidate_image + beta * (candidate_image - image)
            x, image, momentum = candidate, candidate_image, next_momentum
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
    """Step 1: (u, status, iterations) of the gated-ReLU group lasso by FISTA from u = 0.

    The hinge loss enters through its Moreau envelope of width ``GATED_HINGE_SMOOTHING``.
    """
    start = problem.X.new_zeros(problem.n_patterns, problem.n_features)
    return fista(GatedProgram(problem), options, start=start)


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
    v = embed(network.v, support, problem.n_patterns)
    w = embed(network.w, support, problem.n_patterns)
    dual = problem.loss.gradient(problem.predict_convex(v, w), problem.y)
    others = dataclasses.replace(problem, D=problem.D[outside], is_global=False)
    mu, nu = fit_cone_multipliers(others, dual, min_progress=0.0)  # every block converged
    norms = others.dual_constraint_norms(dual, mu, nu).amax(dim=0)
    missing[outside[norms > problem.lam * (1 + VIOLATION_SLACK)]] = True
    return missing


def embed(values: torch.Tensor, support: torch.Tensor, P: int) -> torch.Tensor:
    """(..., P, k) tensor with ``values`` (..., |support|, k) on the support, zero elsewhere."""
    out = values.new_zeros(*values.shape[:-2], P, values.shape[-1])
    out[..., support, :] = values
    return out


def augmented_lagrangian_rounds(problem: ConvexReLUProblem, support: torch.Tensor,
                                u: torch.Tensor, options: SolverOptions, budget: int
                                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor, int]]:
    """The cheap path's rounds on the support (module docstring), ``AL_ROUNDS`` at most.

    Starts from v = u, w = 0 on the support and zero multipliers g.  A round
    runs FISTA on the round's augmented Lagrangian until it meets
    ``SCREENING_TOL`` or ``AL_INNER_ITER`` steps, then updates g <- (g - delta S X x)_+.
    Every ``AL_CHECK_ITER`` steps it yields (v, w, l, g', steps): v, w (P, d)
    zero off the support, l the gradient of the (smoothed) loss at the
    prediction, g' (2, P, n) the multipliers the round would update to (zero
    off the support), steps the FISTA steps since the last yield.  The FISTA
    runs between two yields are separate (momentum and step size restart).
    Stops after ``budget`` FISTA steps in all, or when the iterates are not
    finite.  Everything stays on the problem's device.
    """
    restricted = dataclasses.replace(problem, D=problem.D[support], is_global=False)
    P = problem.n_patterns
    x = torch.stack([u[support], torch.zeros_like(u[support])])
    multipliers = x.new_zeros(2, restricted.n_patterns, problem.n_samples)
    penalty = AL_PENALTY / problem.n_samples
    for _ in range(AL_ROUNDS):
        program = ConePenalisedProgram(restricted, multipliers, penalty)
        taken, status = 0, Status.MAX_ITER
        while taken < AL_INNER_ITER and budget > 0 and status is Status.MAX_ITER:
            chunk = dataclasses.replace(
                options, max_iter=min(AL_CHECK_ITER, AL_INNER_ITER - taken, budget),
                tol=SCREENING_TOL, verbose=False)
            x, status, steps = fista(program, chunk, start=x)
            taken, budget = taken + steps, budget - steps
            if status is Status.NUMERICAL:
                return
            _, dual, multipliers_next = program.terms_at(program.forward(x))
            yield (embed(x[0], support, P), embed(x[1], support, P), dual,
                   embed(multipliers_next, support, P), steps)
        if taken == 0:
            return
        multipliers = multipliers_next


@dataclasses.dataclass
class AccuratePath:
    """Outcome of the working-set ADMM: the network, its final support and status."""

    v: torch.Tensor
    w: torch.Tensor
    support: torch.Tensor
    status: Status
    n_iter: int
    violated: int
    messages: list[str]
    network: ConvexNNResult


def working_set_admm(problem: ConvexReLUProblem, support: torch.Tensor, options: SolverOptions
                     ) -> AccuratePath:
    """The accurate path: ADMM on a growing support (see the module docstring).

    v, w are (P, d); ``support`` is the final support; status INACCURATE when
    ``violated`` patterns outside it still violate their dual constraint
    after ``WORKING_SET_ROUNDS`` re-solves.
    """
    screening = dataclasses.replace(options, tol=max(options.tol, SCREENING_TOL))
    screened = options.tol >= SCREENING_TOL
    n_iter = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
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
    status = network.status
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    for other in caught:  # pass on what is not the rounds' own convergence news
        if not issubclass(other.category, ConvergenceWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if status is Status.OPTIMAL and bool(missing.any()):
        # Optimal on the support, but some pattern's dual constraint is still violated:
        # the network need not be optimal over all P patterns.
        status = Status.INACCURATE
        messages.append(f"{int(missing.sum())} patterns still violated after "
                        f"{WORKING_SET_ROUNDS} working-set rounds")
    P = problem.n_patterns
    return AccuratePath(embed(network.v, support, P), embed(network.w, support, P), support,
                        status, n_iter, int(missing.sum()), messages, network)


def solve_sampled(problem: ConvexReLUProblem, options: SolverOptions) -> ConvexNNResult:
    """Gated-ReLU group lasso by FISTA, then a certified ReLU network on its support.

    Returns a :class:`ConvexNNResult` for ``problem`` (all its P patterns):
    ``v, w`` (P, d) are zero outside the support; ``objective`` is F of the
    returned network.  Step 1 runs at most ``GATED_MAX_ITER`` steps
    (``residuals["gated_converged"]`` says whether it reached its tolerance;
    it only proposes the support and the warm start).  Cheap path (module
    docstring): status OPTIMAL when F - bound <= tol |bound| was certified,
    i.e. F <= (1 + tol) min G; the network may leave its patterns' cones
    (``residuals["cone_violation"]``), so ``convex_objective`` (G at (v, w))
    then describes no feasible point, and the gap can be negative.
    Otherwise the working-set ADMM runs at min(tol, ``FALLBACK_MAX_TOL``)
    and its status is returned, OPTIMAL only when the certificate over all P
    patterns proves the gap <= tol as well (MAX_ITER with a ConvergenceWarning
    when it stopped early; INACCURATE, with the warning, when patterns outside
    the support still violate their dual constraint after WORKING_SET_ROUNDS
    re-solves, or when the full certificate falls short of tol).  ``options.max_iter``
    bounds the FISTA steps of steps 1 and 2 together; each of the fallback's
    ADMM solves gets what is left (at least one iteration).
    """
    start = time.perf_counter()
    screening = dataclasses.replace(options, tol=max(options.tol, SCREENING_TOL),
                                    max_iter=min(options.max_iter, GATED_MAX_ITER))
    u, gated_status, n_iter = solve_gated(problem, screening)
    gated_objective = problem.convex_objective(u, torch.zeros_like(u))  # G(u, 0), no cones
    support = torch.linalg.vector_norm(u, dim=1) > 0
    if not bool(support.any()):
        support[0] = True
    residuals = {"gated_objective": gated_objective, "gated_support_size": float(support.sum()),
                 "gated_converged": float(gated_status is Status.OPTIMAL),
                 "support_size": float(support.sum()), "admm_fallback": 0.0,
                 "violated_patterns": 0.0, "al_checks": 0.0}
    rounds = augmented_lagrangian_rounds(problem, support, u, options,
                                         budget=options.max_iter - n_iter)
    best_gap, since_best = math.inf, 0
    checks = AL_ROUNDS * math.ceil(AL_INNER_ITER / AL_CHECK_ITER)
    with progress(checks, options.verbose, desc="sampled augmented Lagrangian") as bar:
        for v, w, dual, multipliers, steps in rounds:
            n_iter += steps
            residuals["al_checks"] += 1.0
            result = certify(problem, v, w, duals=[dual], mu=multipliers[0], nu=multipliers[1],
                             status=Status.OPTIMAL, n_iter=n_iter,
                             solve_time=time.perf_counter() - start, solver="sampled",
                             residuals=residuals, nnls_steps=CHECK_NNLS_STEPS)
            bar.update(1, objective=result.objective, bound=result.bound)
            if within_tolerance(result.objective, result.bound, options.tol):
                return result
            relative_gap = result.gap / abs(result.bound) if result.bound else math.inf
            if relative_gap < best_gap:
                best_gap, since_best = relative_gap, 0
            else:
                since_best += 1
                if since_best >= AL_PATIENCE:  # no progress: go to the ADMM now
                    break
    fallback = dataclasses.replace(options, tol=min(options.tol, FALLBACK_MAX_TOL),
                                   max_iter=max(1, options.max_iter - n_iter))
    accurate = working_set_admm(problem, support, fallback)
    n_iter += accurate.n_iter
    status = accurate.status
    if status is not Status.OPTIMAL:
        reason = "; ".join(accurate.messages) or "working-set ADMM"
        warnings.warn(f"sampled: stopped with status {status.value} ({reason})",
                      ConvergenceWarning, stacklevel=2)
    residuals.update(admm_fallback=1.0, support_size=float(accurate.support.sum()),
                     violated_patterns=float(accurate.violated))
    solve_time = time.perf_counter() - start
    if bool(accurate.support.all()):
        # the ADMM solved this very program: its certificate (with its own multipliers,
        # far tighter than the gradient's for the hinge loss) is the answer's
        return dataclasses.replace(
            accurate.network, status=status, n_iter=n_iter, solver="sampled",
            solve_time=solve_time, is_global=problem.is_global,
            residuals={**accurate.network.residuals, **residuals})
    v, w = accurate.v, accurate.w
    prediction = problem.predict_convex(v, w)
    # the restricted ADMM's own dual (its loss, its n samples) is a dual point of the full
    # program too, and far tighter than the gradients alone for the hinge loss
    duals = [] if accurate.network.dual is None else [accurate.network.dual]
    duals.append(problem.loss.gradient(prediction, problem.y))
    if problem.loss.name == "hinge":  # a smoothed gradient bounds better than a subgradient
        # (the cheap path's width, shared)
        duals.append(GatedProgram(problem, AL_HINGE_SMOOTHING).smoothed_loss(prediction)[1])
    result = certify(problem, v, w, duals=duals, mu=None, nu=None, status=status,
                     n_iter=n_iter, solve_time=solve_time, solver="sampled",
                     residuals=residuals)
    if status is Status.OPTIMAL and not within_tolerance(result.objective, result.bound,
                                                         options.tol):
        warnings.warn(f"sampled: the network over all {problem.n_patterns} patterns is "
                      f"certified only to a relative gap of "
                      f"{result.gap / max(abs(result.bound), 1e-300):.2e}, above "
                      f"tol={options.tol}",
                      ConvergenceWarning, stacklevel=2)
        result = dataclasses.replace(result, status=Status.INACCURATE)
    return result
