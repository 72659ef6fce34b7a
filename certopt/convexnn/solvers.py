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

Data that are exactly zero (no intercept) need no solver: every network
predicts 0, and the zero network is certified optimal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from certopt.convexnn.admm import solve_admm, zero_network_result
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.convexnn.result import ConvexNNResult
from certopt.convexnn.sampled import solve_sampled

Solver = Callable[[ConvexReLUProblem, SolverOptions], ConvexNNResult]

IP_MAX_SIZE = {"squared": 50_000, "logistic": 50_000, "hinge": 200_000}
"""Largest n P d (samples x patterns x augmented features) solved by the interior point,
per loss: the measured crossover with the ADMM."""
SAMPLED_MIN_SAMPLES = 2000
"""Fewest samples for which ``"auto"`` tries the sampled program first."""
SAMPLED_MIN_TOL = 1e-2
"""Smallest tol at which ``"auto"`` tries the sampled program first."""


def prefers_interior_point(problem: ConvexReLUProblem) -> bool:
    """True when the program is small enough for the interior point to be the faster."""
    size = problem.n_samples * problem.n_patterns * problem.n_features
    return size <= IP_MAX_SIZE.get(problem.loss.name, min(IP_MAX_SIZE.values()))


def choose_solver(problem: ConvexReLUProblem, options: SolverOptions) -> str:
    """The solver ``"auto"`` runs on ``problem``: ``"cvxpy"``, ``"sampled"`` or ``"admm"``."""
    if prefers_interior_point(problem):
        return "cvxpy"
    if problem.n_samples >= SAMPLED_MIN_SAMPLES and options.tol >= SAMPLED_MIN_TOL:
        return "sampled"
    return "admm"


def solve_auto(problem: ConvexReLUProblem, options: SolverOptions) -> ConvexNNResult:
    """Solve with the solver :func:`choose_solver` picks (its name is in ``result.solver``)."""
    return SOLVERS[choose_solver(problem, options)](problem, options)


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
