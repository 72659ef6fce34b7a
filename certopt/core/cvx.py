"""Choosing an installed cvxpy solver and mapping its status to ours.

The reference models (``reference.py`` in each module) solve through
:func:`solve`, so solver choice, status mapping and timing live in one place.
"""

from __future__ import annotations

import time
import warnings
from typing import Literal

import cvxpy as cp

from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.result import Status

Cone = Literal["lp", "qp", "socp", "sdp"]

_PREFERENCE: dict[str, tuple[str, ...]] = {
    "lp": ("MOSEK", "CLARABEL", "HIGHS", "ECOS", "SCS"),
    "qp": ("MOSEK", "CLARABEL", "OSQP", "ECOS", "SCS"),
    "socp": ("MOSEK", "CLARABEL", "ECOS", "SCS"),
    "sdp": ("MOSEK", "CLARABEL", "SCS"),
}

_STATUS = {
    cp.OPTIMAL: Status.OPTIMAL,
    cp.OPTIMAL_INACCURATE: Status.INACCURATE,
    cp.INFEASIBLE: Status.INFEASIBLE,
    cp.INFEASIBLE_INACCURATE: Status.INFEASIBLE,
    cp.UNBOUNDED: Status.UNBOUNDED,
    cp.UNBOUNDED_INACCURATE: Status.UNBOUNDED,
    cp.USER_LIMIT: Status.MAX_ITER,
    cp.SOLVER_ERROR: Status.NUMERICAL,
}


def choose_solver(cone: Cone, solver: str | None = None) -> str:
    """Name of the cvxpy solver to use for a problem of this cone type.

    ``solver`` (case-insensitive) is checked to be installed and able to
    handle the cone; ``None`` picks the first installed of MOSEK, Clarabel,
    then the cone's open-source fallbacks (HiGHS/OSQP/ECOS/SCS).
    """
    if cone not in _PREFERENCE:
        raise InputValueError(f"cone: expected one of {sorted(_PREFERENCE)}, got {cone!r}")
    installed = set(cp.installed_solvers())
    if solver is not None:
        name = solver.upper()
        if name not in installed:
            raise InputValueError(
                f"solver: {solver!r} is not installed; installed: {sorted(installed)}"
            )
        if cone == "sdp" and name not in _PREFERENCE["sdp"]:
            raise InputValueError(
                f"solver: {solver!r} cannot solve semidefinite programs; "
                f"use one of {[s for s in _PREFERENCE['sdp'] if s in installed]}"
            )
        return name
    for name in _PREFERENCE[cone]:
        if name in installed:
            return name
    raise InputValueError(f"no installed cvxpy solver handles {cone!r} problems")


def map_status(cvxpy_status: str | None) -> Status:
    """Map a cvxpy status string to :class:`Status` (unknown -> NUMERICAL)."""
    return _STATUS.get(cvxpy_status, Status.NUMERICAL)


def solve(
    problem: cp.Problem,
    cone: Cone,
    solver: str | None = None,
    *,
    verbose: bool = False,
    **options: object,
) -> tuple[Status, float]:
    """Solve ``problem`` with a suitable solver; return ``(status, seconds)``.

    Solver failures become ``Status.NUMERICAL`` (with a
    :class:`ConvergenceWarning`) rather than exceptions, so callers always
    get a status to report.
    """
    name = choose_solver(cone, solver)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # our status says it instead
            problem.solve(solver=name, verbose=verbose, **options)
        status = map_status(problem.status)
    except cp.error.SolverError as exc:
        warnings.warn(f"{name} failed: {exc}", ConvergenceWarning, stacklevel=2)
        status = Status.NUMERICAL
    elapsed = time.perf_counter() - start
    if status in (Status.INACCURATE, Status.MAX_ITER):
        warnings.warn(f"{name} stopped with status {problem.status!r}", ConvergenceWarning,
                      stacklevel=2)
    return status, elapsed
