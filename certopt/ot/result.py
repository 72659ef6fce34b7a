"""The result every OT solver returns: plan, potentials and certificate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from certopt.core.arrays import ArrayLike
from certopt.core.result import SolverResult, Status, duality_gap
from certopt.ot.problem import TransportProblem


@dataclass(frozen=True, kw_only=True)
class TransportResult(SolverResult):
    """A transport plan and the evidence of its quality.

    ``objective`` is the solver's regularised primal objective at ``plan``
    (``cost`` plus the regulariser); ``bound`` (alias ``dual_value``) is a
    dual value, a lower bound on the optimal objective by weak duality;
    ``gap = objective - bound``.  ``residuals`` holds
    ``source_marginal = ||T 1 - a||_1`` and ``target_marginal = ||T^T 1 - b||_1``.

    Attributes
    ----------
    plan : (n, m) array, same kind, dtype and device as the input ``C``;
        None when the solver was asked not to store it.
    cost : <C, plan>.
    potentials : dual potentials ``(f, g)`` ((n,), (m,)); ``g`` is None for
        semi-dual solvers.
    """

    plan: ArrayLike | None
    cost: float
    potentials: tuple[ArrayLike, ArrayLike | None]
    gap_certified: bool = False
    """True when ``plan`` meets the marginals to the solver's tolerance and the
    bound is finite: ``objective`` is then an upper bound (up to ``max |C|``
    times the marginal error) and ``gap`` brackets the optimum.  False: the gap
    is only indicative (the plan is not feasible enough to bound anything)."""

    @property
    def dual_value(self) -> float:
        """The dual objective value (lower bound on the optimum)."""
        return self.bound

    @property
    def marginal_error(self) -> float:
        """max(||T 1 - a||_1, ||T^T 1 - b||_1)."""
        return max(self.residuals["source_marginal"], self.residuals["target_marginal"])


def rounded_plan_tol(problem: TransportProblem) -> float:
    """Absolute L1 marginal tolerance for a plan put on ``U(a, b)`` by rounding or
    pivoting: ``sqrt(eps)`` of its dtype times the mass, far above that round-off."""
    return math.sqrt(torch.finfo(problem.a.dtype).eps) * float(problem.a.sum())


def make_result(
    problem: TransportProblem,
    plan: torch.Tensor | None,
    *,
    regulariser: float,
    dual_value: float,
    potentials: tuple[torch.Tensor, torch.Tensor | None],
    status: Status,
    n_iter: int,
    solve_time: float,
    history: Mapping[str, list[float]] | None = None,
    extra: Mapping[str, float] | None = None,
    marginal_tol: float | None = None,
    measured: tuple[float, Mapping[str, float]] | None = None,
    plan_owned: bool = False,
) -> TransportResult:
    """Assemble a :class:`TransportResult` from a solver's torch outputs.

    ``regulariser`` is the value of the regularisation term at ``plan``, so
    ``objective = <C, plan> + regulariser``.  Residuals are measured here, on
    the returned plan, never taken from the solver's internal state.
    ``extra`` adds named residuals (e.g. ``max_column_nnz``).  ``marginal_tol``
    (absolute L1): the gap is certified when both marginal errors are at most it.
    A solver that
    measures its plan block by block passes ``measured = (<C, plan>,
    marginal residuals)``; its ``plan`` may then be None (never stored).
    ``plan_owned``: nothing else refers to ``plan``, so a numpy result may
    share its memory instead of copying ``n m`` numbers.
    """
    if measured is None:
        cost, residuals = problem.cost(plan), problem.marginal_errors(plan)
    else:
        cost, residuals = float(measured[0]), dict(measured[1])
    objective = cost + float(regulariser)
    if extra:
        residuals.update({k: float(v) for k, v in extra.items()})
    wrap = problem.spec.wrap
    f, g = potentials
    gap = duality_gap(objective, float(dual_value))
    certified = (marginal_tol is not None and math.isfinite(gap)
                 and max(residuals["source_marginal"], residuals["target_marginal"])
                 <= marginal_tol)
    return TransportResult(
        plan=None if plan is None else _hand_over(problem, plan, plan_owned),
        cost=cost,
        objective=objective,
        bound=float(dual_value),
        gap=gap,
        gap_certified=certified,
        potentials=(wrap(f), None if g is None else wrap(g)),
        status=status,
        residuals=residuals,
        n_iter=int(n_iter),
        solve_time=float(solve_time),
        history=dict(history or {}),
    )


def _hand_over(problem: TransportProblem, plan: torch.Tensor, owned: bool) -> ArrayLike:
    """The plan as the user's kind: without a copy when the solver owns it and the
    user wants a numpy array of its dtype (``Tensor.numpy`` shares the memory)."""
    spec = problem.spec
    if owned and not spec.is_torch and plan.device.type == "cpu" and plan.dtype == spec.dtype:
        return plan.detach().numpy()
    return spec.wrap(plan)
