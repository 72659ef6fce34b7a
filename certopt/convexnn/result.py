"""The result of a convexnn solve: the convex solution (v, w) and its certificate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from certopt.core.result import SolverResult


@dataclass(frozen=True, kw_only=True)
class ConvexNNResult(SolverResult):
    """Solution of the convex ReLU program and the evidence that it is optimal.

    ``objective`` is F at the ReLU network built from (v, w) (exact, math
    note section 1); ``bound`` (alias :attr:`lower_bound`) is a dual lower
    bound by scaling (section 4) on min G, and ``gap = objective - bound``.
    When ``is_global`` the patterns are all patterns, so the bound is a lower
    bound on F over networks of every width; otherwise it bounds the program
    over the sampled patterns only.  In that sampled case a returned network
    whose neurons leave their patterns' cones (an iterate stopped early) can
    have F below the sampled program's optimum, hence a negative ``gap``: it
    then beats every network of the sampled class, and the bound says so.

    Attributes
    ----------
    v, w : (P, d) tensors, the convex solution (on the solver's device).
    convex_objective : G(v, w).
    is_global : the bound certifies the global optimum of F.
    n_patterns : P.
    n_neurons : neurons of the returned network (nonzero v_i and w_i).
    solver : the solver's name.
    dual_scale : the factor s in [0, 1] that made the dual point feasible.
    dual : (n,) the loss's dual point l whose scaled multiple s l gives ``bound``
        (section 4; ``None`` when the solver records none).
    """

    v: torch.Tensor
    w: torch.Tensor
    convex_objective: float
    is_global: bool
    n_patterns: int
    n_neurons: int
    solver: str
    dual_scale: float = float("nan")
    dual: torch.Tensor | None = None

    @property
    def lower_bound(self) -> float:
        """The certified lower bound (same as :attr:`bound`)."""
        return self.bound


def combine_results(results: Sequence[ConvexNNResult]) -> ConvexNNResult:
    """One certificate for independent programs solved side by side (one-vs-rest).

    Objectives, bounds, gaps, neurons, iterations and times add up (the sum
    of lower bounds bounds the sum of optima); the status is OPTIMAL only if
    every part is; v, w and the duals are stacked to (k, P, d) and (k, n);
    residuals take the max.
    """
    first = results[0]
    statuses = [r.status for r in results if not r.converged]
    names = {name for r in results for name in r.residuals}
    return ConvexNNResult(
        objective=sum(r.objective for r in results),
        bound=sum(r.bound for r in results),
        gap=sum(r.gap for r in results),
        status=statuses[0] if statuses else first.status,
        residuals={name: max(r.residuals.get(name, 0.0) for r in results) for name in names},
        n_iter=sum(r.n_iter for r in results),
        solve_time=sum(r.solve_time for r in results),
        v=torch.stack([r.v for r in results]),
        w=torch.stack([r.w for r in results]),
        convex_objective=sum(r.convex_objective for r in results),
        is_global=all(r.is_global for r in results),
        n_patterns=first.n_patterns,
        n_neurons=sum(r.n_neurons for r in results),
        solver=first.solver,
        dual_scale=min(r.dual_scale for r in results),
        dual=(torch.stack([r.dual for r in results])
              if all(r.dual is not None for r in results) else None),
    )
