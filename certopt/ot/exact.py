"""Unregularised OT by POT's network simplex, with a checked dual certificate.

    min_{T >= 0, T 1 = a, T^T 1 = b}  <C, T>
    max_{f_i + g_j <= C_ij}           <f, a> + <g, b>

``ot.emd`` stops at ``numItermax`` (default 100000) with only a warning: at
n = 5000 its plan is then 4-5% above optimal (math note, section 1).  We pass
a limit growing with ``n * m``, read its result code, and certify the answer
ourselves: the returned potentials are made dual feasible by a c-transform
(``g_j = min_i C_ij - f_i``), so ``<f, a> + <g, b>`` is a true lower bound and
the gap ``<C, T> - (<f, a> + <g, b>)`` tells how far from optimal the plan
can be.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import ot as pot
import torch

from certopt.core.arrays import ArrayLike, check_scalar
from certopt.core.errors import ConvergenceWarning
from certopt.core.result import Status
from certopt.ot.problem import TransportProblem
from certopt.ot.result import TransportResult, make_result, rounded_plan_tol

_RESULT_CODES = {0: Status.INFEASIBLE, 1: Status.OPTIMAL, 2: Status.UNBOUNDED,
                 3: Status.MAX_ITER}


def default_max_iter(n: int, m: int) -> int:
    """Network-simplex pivot budget: ``max(100000, 50 n m)``."""
    return max(100_000, 50 * n * m)


def exact(
    a: ArrayLike | None,
    b: ArrayLike | None,
    C: ArrayLike,
    max_iter: int | None = None,
) -> TransportResult:
    """Exact OT plan (network simplex, CPU, float64) with potentials and gap.

    Parameters
    ----------
    a, b : (n,), (m,) arrays or None (uniform)
    C : (n, m) array, numpy or torch; the plan comes back alike.  A
        :class:`~certopt.ot.geometry.PointCloudCost` is refused (the network
        simplex reads the whole matrix): pass ``C.dense()``.
    max_iter : int or None
        Pivot budget of ``ot.emd``; None: :func:`default_max_iter`.

    Returns
    -------
    TransportResult
        ``objective = cost = <C, plan>``; ``dual_value = <f, a> + <g, b>``
        for dual-feasible potentials ``(f, g)``; ``gap``; ``status``
        OPTIMAL, or MAX_ITER (with a ConvergenceWarning) when the pivot
        budget ran out; ``residuals`` hold the L1 marginal errors and
        ``dual_infeasibility`` = ``max(f_i + g_j - C_ij)`` of POT's raw
        potentials before the c-transform.
    """
    problem = TransportProblem.from_inputs(a, b, C, device="cpu")
    cost = problem.dense_cost("exact")
    n, m = problem.shape
    max_iter = default_max_iter(n, m) if max_iter is None else check_scalar(
        max_iter, "max_iter", low=1, integer=True)
    start = time.perf_counter()
    a_np = problem.a.numpy()
    b_np = problem.b.numpy() * (a_np.sum() / problem.b.numpy().sum())   # exact equal mass
    cost_np = cost.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # our status reports it
        plan_np, log = pot.emd(a_np, b_np, cost_np, numItermax=max_iter, log=True)
    status = _RESULT_CODES.get(int(log["result_code"]), Status.NUMERICAL)
    if status is not Status.OPTIMAL:
        warnings.warn(f"exact: ot.emd stopped with result code {log['result_code']} "
                      f"({status.value}): {log.get('warning')}", ConvergenceWarning,
                      stacklevel=2)
    f = torch.from_numpy(np.asarray(log["u"], dtype=np.float64))
    g_raw = torch.from_numpy(np.asarray(log["v"], dtype=np.float64))
    dual_infeasibility = float((f[:, None] + g_raw[None, :] - cost).max())
    g = (cost - f[:, None]).min(dim=0).values          # c-transform: feasible
    plan = torch.from_numpy(np.asarray(plan_np, dtype=np.float64))
    return make_result(
        problem, plan,
        regulariser=0.0,
        dual_value=float(f @ problem.a + g @ problem.b),
        potentials=(f, g),
        status=status,
        n_iter=0,
        solve_time=time.perf_counter() - start,
        extra={"dual_infeasibility": max(dual_infeasibility, 0.0)},
        marginal_tol=rounded_plan_tol(problem),
    )
