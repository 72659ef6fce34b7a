"""Quadratically regularised OT (Blondel, Seguy & Rolet 2018): sparse OT with k = n.

    min_{T >= 0, T 1 = a, T^T 1 = b}  <C, T> + (reg/2) ||T||_F^2

Its dual and semi-dual are those of :mod:`certopt.ot.sparse` without the
cardinality constraint, so this is :func:`certopt.ot.sparse.solve_sparse`
with ``k = n``: the dual needs no top-k (``T = [alpha + beta^T - C]_+ / reg``),
the semi-dual sorts each column once per evaluation.  The problem is convex
and its dual differentiable, so the semismooth Newton finish
(:mod:`certopt.ot.newton`) ends every ordinary solve with marginal errors near
round-off, a dual value equal to the objective up to round-off, and no repair.
Total mass ``s != 1`` is the unit-mass problem with ``reg * s``, scaled back.
"""

from __future__ import annotations

import torch

from certopt.core.arrays import ArrayLike
from certopt.ot.problem import TransportProblem
from certopt.ot.result import TransportResult
from certopt.ot.sparse import DualMethod, check_common_options, solve_sparse


def quadratic(
    a: ArrayLike | None,
    b: ArrayLike | None,
    C: ArrayLike,
    reg: float = 1.0,
    method: DualMethod = "dual",
    max_iter: int = 2000,
    tol: float = 1e-6,
    device: str | torch.device | None = None,
    verbose: bool = False,
    optimizer: str = "lbfgs",
) -> TransportResult:
    """Quadratically regularised OT through its smooth dual (convex; plans are sparse).

    Parameters are those of :func:`certopt.ot.sparse` without ``k`` (``C``
    may be a :class:`~certopt.ot.geometry.PointCloudCost`)
    (``method`` defaults to ``"dual"``, the cheaper pass).  The result's
    ``objective`` is ``<C, plan> + (reg/2)||plan||_F^2``, ``dual_value`` the
    (semi-)dual value (a lower bound on the optimum), ``gap_certified`` whether
    the plan meets the marginals to ``tol``, ``residuals`` the L1 marginal
    errors and ``nnz``/``max_column_nnz``.
    """
    reg, max_iter, tol = check_common_options(reg, method, max_iter, tol, optimizer)
    problem = TransportProblem.from_inputs(a, b, C, device)
    return solve_sparse(problem, problem.shape[0], reg, method=method, max_iter=max_iter,
                        tol=tol, verbose=verbose, repair=False, optimizer=optimizer,
                        desc=f"quadratic OT ({method})")
