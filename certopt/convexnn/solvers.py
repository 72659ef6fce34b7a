"""The ``solver=`` names of the estimators, and the choice ``"auto"`` makes.

Every solver returns a certified :class:`~certopt.convexnn.result.ConvexNNResult`
and stops on the same test: a certified relative gap F - bound <= tol |bound|.
``"auto"`` picks by size (benchmarks/convexnn_auto.py; readings in
benchmarks/RESULTS.md):

* the interior point (cvxpy + Clarabel) when n P d <= IP_MAX_SIZE[loss]
  (P d variables per sign times n samples: the nonzeros of the cone
  constraints, which set its cost; below this it was the faster to the same
  certified gap, and the ADMM converges slowest on the nonsmooth hinge loss);
* the sampled convex program (gated ReLU first, :mod:`.sampled`) when n >=
  SAMPLED_MIN_SAMPLES and tol >= SAMPLED_MIN_TOL (a loose gap on many samples,
  where it was several times faster than the ADMM);
* the ADMM otherwise.

When the sampled program or the ADMM ends without certifying tol (MAX_ITER,
INACCURATE, NUMERICAL) on a program with n P d <= IP_FALLBACK_MAX_SIZE, ``"auto"``
solves it again by the interior point and returns that answer when it certifies
tol (or a smaller gap): the ADMM's rate depends on the data's scale relative to
lam (unstandardised features, a weak lam), the interior point's hardly does.

Data that are exactly zero (no intercept) need no solver: every network
predicts 0, and the zero network is certified optimal.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch

from certopt.convexnn.admm import solve_admm, zero_network_result
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.convexnn.result import ConvexNNResult
from certopt.convexnn.sampled import solve_sampled
from certopt.core.result import Status

Solver = Callable[[ConvexReLUProblem, SolverOptions], ConvexNNResult]

IP_MAX_SIZE = {"squared": 50_000, "logistic": 50_000, "hinge": 200_000}
"""Largest n P d (samples x patterns x augmented features) solved by the interior point,
per loss: the measured crossover with the ADMM."""
SAMPLED_MIN_SAMPLES = 2000
"""Fewest samples for which ``"auto"`` tries the sampled program first."""
SAMPLED_MIN_TOL = 1e-2
"""Smallest tol at which ``"auto"`` tries the sampled program first."""
IP_FALLBACK_MAX_SIZE = 2_000_000
"""Largest n P d at which ``"auto"`` re-solves by the interior point when the first solver
did not certify tol: there Clarabel takes at most a few minutes on one core (3 s at
2.7e5, 53-77 s at 1.1e6; benchmarks/RESULTS.md)."""


def prefers_interior_point(problem: ConvexReLUProblem) -> bool:
    """True when the program is small enough for the interior point to be the faster."""
    return problem.size <= IP_MAX_SIZE.get(problem.loss.name, min(IP_MAX_SIZE.values()))


def choose_solver(problem: ConvexReLUProblem, options: SolverOptions) -> str:
    """The solver ``"auto"`` runs on ``problem``: ``"cvxpy"``, ``"sampled"`` or ``"admm"``."""
    if prefers_interior_point(problem):
        return "cvxpy"
    if problem.n_samples >= SAMPLED_MIN_SAMPLES and options.tol >= SAMPLED_MIN_TOL:
        return "sampled"
    return "admm"


def solve_auto(problem: ConvexReLUProblem, options: SolverOptions) -> ConvexNNResult:
    """Solve with the solver :func:`choose_solver` picks (its name is in ``result.solver``),
    then, when that did not certify tol and n P d <= IP_FALLBACK_MAX_SIZE, by the interior
    point: its answer is returned when its certified relative gap is the smaller (with
    ``solve_time`` counting both solves and ``residuals["first_solver_iterations"]`` the
    first solver's iterations); the first solver's warnings are raised only when its
    answer is the one returned."""
    name = choose_solver(problem, options)
    if name == "cvxpy" or problem.size > IP_FALLBACK_MAX_SIZE:
        return SOLVERS[name](problem, options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = SOLVERS[name](problem, options)
    if first.status is not Status.OPTIMAL:
        second = solve_cvxpy(problem, options)
        if _relative_gap(second) < _relative_gap(first):
            return dataclasses.replace(
                second, solve_time=first.solve_time + second.solve_time,
                residuals={**second.residuals, "first_solver_iterations": float(first.n_iter)})
    for record in caught:
        warnings.warn(record.message, record.category, stacklevel=2)
    return first


def _relative_gap(result: ConvexNNResult) -> float:
    """The certified relative gap |F - bound| / |bound| (inf when not finite)."""
    gap = abs(result.gap) / max(abs(result.bound), 1e-300)
    return gap if gap == gap else float("inf")


SOLVERS: dict[str, Solver] = {
    "auto": solve_auto,
    "admm": solve_admm,
    "cvxpy": solve_cvxpy,
    "sampled": solve_sampled,
}
"""Solver name -> function(problem, options) returning a certified result."""


def solve(problem: ConvexReLUProblem, options: SolverOptions, solver: str = "auto"
          ) -> ConvexNNResult:
    """Solve ``problem`` with the solver named ``solver`` (a key of :data:`SOLVERS`);
    zero data (every network predicts 0) are answered without one."""
    if not bool(torch.any(problem.X != 0)):
        return zero_network_result(problem, "none (X = 0)")
    return SOLVERS[solver](problem, options)
