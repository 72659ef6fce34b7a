"""Entropic OT by log-domain Sinkhorn, in torch (CPU or CUDA).

Primal and dual (math note, section 1)::

    min_{T in U(a, b)}  <C, T> + reg * sum_ij T_ij (log T_ij - 1)
    max_{f, g}          <f, a> + <g, b> - reg * sum_ij exp((f_i + g_j - C_ij) / reg)

with ``T_ij = exp((f_i + g_j - C_ij) / reg)`` at the optimum.  Alternate
exact maximisation in ``f`` and ``g`` (log-sum-exp passes, stable for small
``reg``)::

    f_i = reg * (log a_i - log sum_j exp((g_j - C_ij) / reg))
    g_j = reg * (log b_j - log sum_i exp((f_i - C_ij) / reg))

Each log-sum-exp is one streamed pass over ``C``
(:func:`certopt.ot.streaming.logsumexp_pass`: blocks of ``C``, an online
running maximum and sum), so ``C`` may be a
:class:`~certopt.ot.geometry.PointCloudCost` and no ``(n, m)`` temporary
beyond one block exists in the loop.  After each ``g`` update the columns
are exact; the row error is read off the next ``f`` update's log-sum-exp at
no extra pass, every ``check_every`` iterations (the only host
synchronisation).
"""

from __future__ import annotations

import time
import warnings

import torch

from certopt.core.arrays import ArrayLike, check_scalar
from certopt.core.errors import ConvergenceWarning
from certopt.core.progress import progress
from certopt.core.result import Status
from certopt.ot.problem import TransportProblem
from certopt.ot.result import TransportResult, make_result
from certopt.ot.streaming import assemble, logsumexp_pass


def sinkhorn(
    a: ArrayLike | None,
    b: ArrayLike | None,
    C: ArrayLike,
    reg: float,
    max_iter: int = 10000,
    tol: float = 1e-6,
    device: str | torch.device | None = None,
    verbose: bool = False,
    check_every: int = 10,
) -> TransportResult:
    """Entropic OT plan with potentials, dual value and gap.

    Parameters
    ----------
    a, b : (n,), (m,) arrays or None (uniform)
    C : (n, m) array, numpy or torch, or a
        :class:`~certopt.ot.geometry.PointCloudCost`; results come back alike.
    reg : float > 0
        Entropic regularisation ``epsilon`` (in the units of ``C``).
    max_iter : int
        Maximum number of Sinkhorn iterations (one ``f`` and one ``g`` update).
    tol : float
        Stop when ``||T 1 - a||_1 <= tol * sum(a)`` (columns are exact).
    device : "cpu", "cuda", torch.device or None (``C``'s device)
    check_every : int
        Measure the marginal error every this many iterations.

    Returns
    -------
    TransportResult
        ``objective = <C,T> + reg sum T (log T - 1)``, ``dual_value`` the
        entropic dual at ``(f, g)``, ``gap``, L1 marginal errors, ``status``
        OPTIMAL or MAX_ITER (with a ConvergenceWarning).  Rows or columns of
        zero weight have potential ``-inf``.
    """
    reg = check_scalar(reg, "reg", low=0, low_inclusive=False)
    max_iter = check_scalar(max_iter, "max_iter", low=1, integer=True)
    tol = check_scalar(tol, "tol", low=0, low_inclusive=False)
    check_every = check_scalar(check_every, "check_every", low=1, integer=True)
    problem = TransportProblem.from_inputs(a, b, C, device)
    start = time.perf_counter()
    cost = problem.geometry
    log_a, log_b = problem.a.log(), problem.b.log()
    f = torch.zeros_like(problem.a)
    g = torch.zeros_like(problem.b)
    abs_tol = tol * float(problem.a.sum())
    history: dict[str, list[float]] = {"marginal_error": []}
    status, n_iter = Status.MAX_ITER, max_iter
    with progress(max_iter, verbose, desc="sinkhorn") as bar:
        row_lse = logsumexp_pass(cost, g, reg, dim=1)
        for it in range(1, max_iter + 1):
            f = reg * (log_a - row_lse)
            g = reg * (log_b - logsumexp_pass(cost, f, reg, dim=0))
            row_lse = logsumexp_pass(cost, g, reg, dim=1)
            if it % check_every == 0 or it == max_iter:
                row_mass = torch.exp(f / reg + row_lse)
                error = float((row_mass - problem.a).abs().sum())
                history["marginal_error"].append(error)
                bar.update(check_every, marginal_error=error)
                if error <= abs_tol:
                    status, n_iter = Status.OPTIMAL, it
                    break
    if status is Status.MAX_ITER:
        warnings.warn(f"sinkhorn: marginal error {error:.3g} > tol {abs_tol:.3g} after "
                      f"{max_iter} iterations; increase max_iter or reg", ConvergenceWarning,
                      stacklevel=2)
    plan = assemble(cost, lambda block, rows, cols: torch.exp(
        (f[rows].unsqueeze(1) + g[cols].unsqueeze(0) - block) / reg))
    entropy_term = reg * float((torch.special.xlogy(plan, plan) - plan).sum())
    dual_value = float(_weighted(f, problem.a) + _weighted(g, problem.b)) - reg * float(plan.sum())
    return make_result(problem, plan, regulariser=entropy_term, dual_value=dual_value,
                       potentials=(f, g), status=status, n_iter=n_iter,
                       solve_time=time.perf_counter() - start, history=history)


def _weighted(potential: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``<potential, weights>`` with ``0 * (-inf) = 0`` for zero-weight entries."""
    return torch.where(weights > 0, potential * weights, torch.zeros_like(weights)).sum()
