"""Polishing of a robust-ADMM iterate: Newton on the identified pieces (as OSQP polishes).

The robust program is smooth on each piece of its nonsmooth terms.  The
ADMM's split variables are exact proximal outputs, so they lie exactly on
the kinks of the optimum's piece once the iterates are close: the group
support (nonzero s_j), the loss's kinks and smooth piece (hinge margins
equal to / below 1, zero coordinates of r, signs; see
:meth:`RobustLoss.smooth_piece`), and the robust cones that are tight
(t_kj = eps ||q_j||_1) with the signs and zeros of q_j.  On that piece the
program reads

    min_x  c^T x + x^T H_0 x / 2 + lam sum_{j in support} ||x_j||_2   s.t.  A x = b

over the support groups' coordinates x; its KKT system is solved by
Newton's method (regularised KKT solves with iterative refinement, Boyd &
Vandenberghe section 10.2).  The equality multipliers give a dual point
(a, r_dual, t_dual, q_dual) for :meth:`GroupOperators.dual_bound` on the
support groups; the other groups keep the ADMM's cone multipliers.

Each Newton solve is followed by a primal-dual active-set step (kinks whose
multipliers have the wrong sign leave the piece, cones the new point
violates join it), up to ``PIECE_ROUNDS`` solves.  The caller keeps a
polished point only if its certified objective is below every other
candidate's: a wrong piece guess costs a few dense solves and nothing else.
The dense system has (support coordinates + active rows) unknowns; above
``MAX_UNKNOWNS`` the polish is skipped.
"""

from __future__ import annotations

import torch

from certopt.convexnn.robust.losses import RobustLoss
from certopt.convexnn.robust.problem import GroupOperators

MAX_UNKNOWNS = 3000
NEWTON_STEPS = 30
REFINEMENT_STEPS = 3
REGULARISATION = 1e-10
KINK_TOLERANCE = 1e-9
PIECE_ROUNDS = 6
"""Newton solves, each followed by moving the piece where its multipliers have the
wrong sign or the new point left it (a primal-dual active-set step)."""
DUAL_SLACK = 1e-9


def jacobians(ops: GroupOperators, groups: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense Jacobians of (z, r) and of (t, q) in the coordinates of ``groups``.

    Returns J_loss (n + n d_f, m d) and J_cone (n m + m d_f, m d), m = len(groups),
    rows ordered as z, r.flatten() and t[:, groups].flatten(), q[groups].flatten().
    """
    X, features = ops.X, ops.features
    n, d = X.shape
    m = groups.shape[0]
    signed = ops.D[:, groups] * ops.sign[groups]                                 # (n, m)
    pick = torch.eye(d, dtype=X.dtype, device=X.device)[features]              # (d_f, d)
    eye_m = torch.eye(m, dtype=X.dtype, device=X.device)
    J_z = (signed[:, :, None] * X[:, None, :]).reshape(n, m * d)
    J_r = (signed[:, None, :, None] * pick[None, :, None, :]).reshape(-1, m * d)
    J_t = (ops.S[:, groups][:, :, None, None] * eye_m[None, :, :, None]
           * X[:, None, None, :]).reshape(n * m, m * d)
    J_q = (eye_m[:, None, :, None] * pick[None, :, None, :]).reshape(-1, m * d)
    return torch.cat([J_z, J_r]), torch.cat([J_t, J_q])


def cone_piece(t: torch.Tensor, q: torch.Tensor, eps: float, tight: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows B (and rhs 0) on (t.flatten(), q.flatten()) of the tight robust cones.

    t (n, m), q (m, d_f): a projection output; a tight cone (k, j) (mask
    ``tight``, :func:`tight_cones`) gives the row t_kj - eps sign(q_j)^T q_j
    = 0; with eps > 0 every zero q_jl gives the row q_jl = 0.
    """
    n, m = t.shape
    k, j = tight.nonzero(as_tuple=True)
    size = t.numel() + q.numel()
    rows = torch.zeros(k.shape[0], size, dtype=t.dtype, device=t.device)
    count = torch.arange(k.shape[0], device=t.device)
    rows[count, k * m + j] = 1.0
    q_part = torch.zeros(k.shape[0], *q.shape, dtype=t.dtype, device=t.device)
    q_part[count, j] = -eps * q.sign()[j]
    rows[:, t.numel():] = q_part.reshape(k.shape[0], q.numel())
    if eps > 0:
        zeros = (q == 0).flatten().nonzero().flatten()
        zero_rows = torch.zeros(zeros.shape[0], size, dtype=t.dtype, device=t.device)
        zero_rows[torch.arange(zeros.shape[0], device=t.device), t.numel() + zeros] = 1.0
        rows = torch.cat([rows, zero_rows])
    return rows, torch.zeros(rows.shape[0], dtype=t.dtype, device=t.device)


def cone_slack(t: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:
    """(n, m) slack t_kj - eps ||q_j||_1 of the robust cones."""
    return t - eps * q.abs().sum(dim=1)[None, :]


def tight_cones(t: torch.Tensor, q: torch.Tensor, eps: float) -> torch.Tensor:
    """(n, m) mask of the cones a projection output lies on (zero slack up to round-off)."""
    return cone_slack(t, q, eps).abs() <= KINK_TOLERANCE * torch.clamp(t.abs(), min=1.0)


def solve_kkt(K: torch.Tensor, rhs: torch.Tensor, primal: int) -> torch.Tensor | None:
    """Solve the KKT system K sol = rhs by a regularised solve plus iterative refinement
    (one LU factorisation of the regularised matrix serves every refinement step);
    None when the regularised matrix is singular in K's precision."""
    scale = float(K.abs().max())
    relative = max(REGULARISATION, 10.0 * torch.finfo(K.dtype).eps)
    shift = torch.full((K.shape[0],), relative * scale, dtype=K.dtype, device=K.device)
    shift[primal:] *= -1
    factor, pivots, info = torch.linalg.lu_factor_ex(K + torch.diag(shift))
    if int(info) != 0:
        return None

    def solve(b: torch.Tensor) -> torch.Tensor:
        return torch.linalg.lu_solve(factor, pivots, b.unsqueeze(-1)).squeeze(-1)

    sol = solve(rhs)
    for _ in range(REFINEMENT_STEPS):
        sol = sol + solve(rhs - K @ sol)
    return sol


def newton(x: torch.Tensor, groups: int, c: torch.Tensor, H0: torch.Tensor | None,
           A: torch.Tensor, b: torch.Tensor, lam: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton's method for min c^T x + x^T H0 x / 2 + lam sum ||x_j|| s.t. A x = b.

    Starts from x (need not satisfy A x = b); steps are shortened so that no
    group's norm drops below a tenth of its value.  Returns (x, multipliers); x is
    NaN when a KKT matrix was singular (the caller then gives up the polish).
    """
    N, M = x.shape[0], A.shape[0]
    d = N // groups
    multipliers = torch.zeros(M, dtype=x.dtype, device=x.device)
    for _ in range(NEWTON_STEPS):
        blocks = x.reshape(groups, d)
        norms = torch.linalg.vector_norm(blocks, dim=1)
        unit = blocks / norms[:, None]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        curvature = lam * (eye[None] - unit[:, :, None] * unit[:, None, :]) / norms[:, None, None]
        H = torch.block_diag(*curvature)
        gradient = c + lam * unit.flatten()
        if H0 is not None:
            H = H + H0
            gradient = gradient + H0 @ x
        K = torch.cat([torch.cat([H, A.T], dim=1),
                       torch.cat([A, torch.zeros(M, M, dtype=x.dtype, device=x.device)], dim=1)])
        sol = solve_kkt(K, torch.cat([-gradient, b - A @ x]), N)
        if sol is None:
            return torch.full_like(x, float("nan")), multipliers
        step, multipliers = sol[:N], sol[N:]
        new_norms = torch.linalg.vector_norm((x + step).reshape(groups, d), dim=1)
        length = 1.0
        while bool((new_norms < 0.1 * norms).any()) and length > 1e-3:
            length *= 0.5
            new_norms = torch.linalg.vector_norm((x + length * step).reshape(groups, d), dim=1)
        x = x + length * step
        size = 1 + float(torch.linalg.vector_norm(x))
        if float(torch.linalg.vector_norm(step)) <= 1e-13 * size:
            break
    return x, multipliers


def polish(ops: GroupOperators, loss: RobustLoss, y: torch.Tensor, lam: float, eps: float,
           split: tuple[torch.Tensor, ...], cone_duals: tuple[torch.Tensor, torch.Tensor]
           ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None:
    """(u, dual) polished from the ADMM split (z, r, t, q, s), or None when skipped.

    ``cone_duals`` = the ADMM's (t_dual, q_dual), kept for the groups off the
    support.  ``dual`` = (a, r_dual, t_dual, q_dual) for
    :meth:`GroupOperators.dual_bound`.  Everything on the ADMM's (rescaled) data.
    """
    z, r, t, q, s = split
    groups = (torch.linalg.vector_norm(s, dim=1) > 0).nonzero().flatten()
    m, d = groups.shape[0], s.shape[1]
    n, d_f = r.shape
    if m == 0 or m * d + n * (1 + d_f) + n * m > MAX_UNKNOWNS:
        return None
    J_loss, J_cone = jacobians(ops, groups)
    state = loss.sample_state(z, r, y, eps)
    tight = tight_cones(t[:, groups], q[groups], eps)
    x = s[groups].flatten()
    for _ in range(PIECE_ROUNDS):
        c_loss, H_loss, B_loss, b_loss = loss.smooth_piece(z, r, y, eps, state)
        B_cone, b_cone = cone_piece(t[:, groups], q[groups], eps, tight)
        if m * d + B_loss.shape[0] + B_cone.shape[0] > MAX_UNKNOWNS:
            return None
        A = torch.cat([B_loss @ J_loss, B_cone @ J_cone])
        H0 = None if H_loss is None else J_loss.T @ H_loss @ J_loss
        x, multipliers = newton(x, m, J_loss.T @ c_loss, H0, A, torch.cat([b_loss, b_cone]),
                                lam)
        if not bool(torch.isfinite(x).all()):
            return None
        # move the piece where the multipliers or the new point disagree with it
        changed = False
        if state is not None:
            new_z = J_loss[:n] @ x
            new_r = (J_loss[n:] @ x).reshape(n, d_f)
            kink_theta = n * multipliers[:int((state == 0).sum())]
            kinks = (state == 0).nonzero().flatten()
            now = loss.sample_state(new_z, new_r, y, eps)
            update = state.clone()
            update[kinks[kink_theta > 1 + DUAL_SLACK]] = 1
            update[kinks[kink_theta < -DUAL_SLACK]] = -1
            update[(state != 0) & (now != state)] = 0
            changed = bool((update != state).any())
            state = update
        cone_values = (J_cone @ x)
        new_t, new_q = cone_values[:n * m].reshape(n, m), cone_values[n * m:].reshape(m, d_f)
        cone_multipliers = multipliers[B_loss.shape[0]:B_loss.shape[0] + int(tight.sum())]
        update = tight.clone()
        rows = tight.flatten().nonzero().flatten()
        update.view(-1)[rows[cone_multipliers > DUAL_SLACK]] = False
        update |= cone_slack(new_t, new_q, eps) < -KINK_TOLERANCE
        changed = changed or bool((update != tight).any())
        tight = update
        if not changed:
            break
    loss_dual = c_loss + B_loss.T @ multipliers[:B_loss.shape[0]]
    if H_loss is not None:
        loss_dual = loss_dual + H_loss @ (J_loss @ x)
    cone_dual = B_cone.T @ multipliers[B_loss.shape[0]:]
    t_dual, q_dual = (part.clone() for part in cone_duals)
    t_dual[:, groups] = cone_dual[:n * m].reshape(n, m)
    q_dual[groups] = cone_dual[n * m:].reshape(m, d_f)
    u = torch.zeros_like(s)
    u[groups] = x.reshape(m, d)
    return u, (loss_dual[:n], loss_dual[n:].reshape(n, d_f), t_dual, q_dual)
