"""The convex QP of OT restricted to a fixed support, solved directly by an interior point.

With each column ``j``'s support ``S_j`` (``k`` row indices) fixed, the
variables are the ``k m`` entries ``t_jl = T_{S_jl, j}``::

    min  sum_jl C_{S_jl j} t_jl + (reg/2) t_jl^2
    s.t. sum_{(j,l): S_jl = i} t_jl = a_i,   sum_l t_jl = b_j,   t >= 0.

This is a small sparse QP (``k m`` variables, ``n + m`` equalities, one of
them redundant and dropped: the last column's), solved by Clarabel's
interior point on the CPU.  Its KKT conditions read
``reg t_jl = [alpha_i + beta_j - C_ij]_+`` with ``alpha = -z_rows``,
``beta = -z_cols`` (``z`` the equality multipliers; the dropped column has
``beta = 0``): the potentials of the restricted dual, accurate to the
interior point's tolerance.  The semismooth Newton iteration, which can need
hundreds of steps across the kinks of that dual from a far start, finishes
from them in a few steps (the active set is then the optimal one).
"""

from __future__ import annotations

import numpy as np
import torch

SOLVER_TOL = 1e-10


def restricted_qp_potentials(a: torch.Tensor, b: torch.Tensor, support: torch.Tensor,
                             support_cost: torch.Tensor, reg: float
                             ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Potentials ``(alpha (n,), beta (m,))`` of the QP on ``support`` ((m, k) row indices).

    ``support_cost`` is ``(m, k)``: ``C[support[j, l], j]``.  Returns them on
    ``a``'s device and dtype, or None when the interior point does not report
    a solution (an infeasible support, or a numerical failure).
    """
    import clarabel
    from scipy.sparse import csc_matrix, identity, vstack

    n, (m, k) = a.shape[0], support.shape
    rows = support.cpu().numpy().ravel()
    cols = np.repeat(np.arange(m), k)
    size = m * k
    entries = np.arange(size)
    row_sums = csc_matrix((np.ones(size), (rows, entries)), shape=(n, size))
    col_sums = csc_matrix((np.ones(size), (cols, entries)), shape=(m, size))[: m - 1]
    constraints = vstack([row_sums, col_sums, -identity(size)]).tocsc()
    rhs = np.concatenate([a.cpu().double().numpy(), b[: m - 1].cpu().double().numpy(),
                          np.zeros(size)])
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = SOLVER_TOL
    solver = clarabel.DefaultSolver(
        csc_matrix(reg * identity(size)), support_cost.cpu().double().numpy().ravel(),
        constraints, rhs, [clarabel.ZeroConeT(n + m - 1), clarabel.NonnegativeConeT(size)],
        settings)
    solution = solver.solve()
    if str(solution.status) not in ("Solved", "AlmostSolved"):
        return None
    multipliers = -np.asarray(solution.z[: n + m - 1])
    alpha = torch.as_tensor(multipliers[:n], dtype=a.dtype, device=a.device)
    beta = torch.as_tensor(np.append(multipliers[n:], 0.0), dtype=b.dtype, device=b.device)
    return alpha, beta
