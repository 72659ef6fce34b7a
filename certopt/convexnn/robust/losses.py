"""Worst-case losses of the robust program (math note section 7): hinge and squared.

With the robust cones every pattern is constant on the ball, so the network
is affine there: f(x_k + delta) = zhat_k + r_k^T delta_f, and over
``||delta||_inf <= eps`` its output ranges over ``zhat_k -+ eps ||r_k||_1``.
The worst-case per-sample losses, as functions of (zhat_k, spread_k =
eps ||r_k||_1), are

    hinge:    max(0, 1 - y_k zhat_k + spread_k)
    squared:  (|y_k - zhat_k| + spread_k)^2 / 2

and the robust loss is their mean.  Each :class:`RobustLoss` gives what the
solvers need in the variables (z, r) of the splitting z = zhat, r (n, d_f):
the value, the certified value for any network (from sound output bounds),
the proximal map (exact, by sorting), the dual bound by scaling and the
smooth piece plus equality rows used by the polish.

Duality (the Lagrangian terms ``a^T z + r_dual^T r`` for the loss):
hinge needs theta = -n y a in [0, 1]^n and ``||r_dual_k||_inf <= eps
theta_k / n`` and gives ``mean(theta)``; squared needs theta_k >=
max(|a_k|, ||r_dual_k||_inf / eps) and gives ``-a^T y - (n/2) ||theta||^2``
(from (1/2n) m^2 >= theta m - n theta^2 / 2).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from certopt.core.errors import UnsupportedError


def soft_threshold(b: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Entrywise ``sign(b) max(|b| - level, 0)``; ``level`` broadcasts against ``b``."""
    return b.sign() * torch.relu(b.abs() - level)


def weighted_threshold_root(values: torch.Tensor, weights: torch.Tensor, start: torch.Tensor,
                            slope: torch.Tensor) -> torch.Tensor:
    """Per row, the root nu >= 0 of ``start + sum_i w_i (|v_i| - w_i nu)_+ = slope nu``.

    ``values``, ``weights`` (rows, m) with weights > 0; ``start``, ``slope``
    (rows,) with slope > 0.  The left side decreases and the right increases,
    so the root is unique (nu = 0 when start + sum w|v| <= 0).  Exact: with the
    breakpoints |v_i| / w_i sorted decreasingly, on the piece where the first
    j entries are active the root is ``(start + S1_j) / (slope + S2_j)``
    (S1, S2 partial sums of w|v| and w^2).
    """
    breaks = values.abs() / weights
    order = breaks.argsort(dim=1, descending=True)
    breaks = breaks.gather(1, order)
    w = weights.gather(1, order)
    zero = torch.zeros_like(start)[:, None]
    first = torch.cat([zero, (w * w * breaks).cumsum(dim=1)], dim=1)
    second = torch.cat([zero, (w * w).cumsum(dim=1)], dim=1)
    candidate = (start[:, None] + first) / (slope[:, None] + second)
    upper = torch.cat([torch.full_like(zero, math.inf), breaks], dim=1)
    lower = torch.cat([breaks, zero], dim=1)
    valid = (candidate >= lower) & (candidate <= upper)
    root = torch.where(valid, candidate, torch.full_like(candidate, -math.inf)).amax(dim=1)
    return root.clamp(min=0.0)


class RobustLoss(ABC):
    """A worst-case loss of (zhat, spread); all per-sample tensors are (n,)."""

    name: str

    @abstractmethod
    def worst_case(self, y: torch.Tensor, zhat: torch.Tensor, spread: torch.Tensor
                   ) -> torch.Tensor:
        """Per-sample worst-case loss for outputs zhat -+ spread over the ball."""

    @abstractmethod
    def certified(self, y: torch.Tensor, low: torch.Tensor, high: torch.Tensor
                  ) -> torch.Tensor:
        """Per-sample upper bound of the loss when f ranges in [low, high] on the ball."""

    @abstractmethod
    def prox(self, a: torch.Tensor, b: torch.Tensor, y: torch.Tensor, eps: float, rho: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """argmin over (z, r) of mean worst_case(y, z, eps ||r||_1) + (rho/2)||(z - a, r - b)||^2.

        a (n,), b (n, d_f); batched over samples, exact."""

    @abstractmethod
    def clip_dual(self, a: torch.Tensor, r_dual: torch.Tensor, y: torch.Tensor, eps: float
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(a, r_dual, s_cap): the guess moved into the loss's dual domain; scales
        s <= s_cap keep it there."""

    @abstractmethod
    def scaled_bound(self, a: torch.Tensor, r_dual: torch.Tensor, y: torch.Tensor, eps: float,
                     s_max: float) -> tuple[float, float]:
        """(bound, s): the best lower bound ``-L*(s a, s r_dual)`` over s in [0, s_max]."""

    @abstractmethod
    def smooth_piece(self, z: torch.Tensor, r: torch.Tensor, y: torch.Tensor, eps: float,
                     state: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The loss on the piece of (z, r) (an exact prox output) as ``c^T w + w^T Q w / 2``.

        Returns (c, Q or None, rows B, rhs b) on w = (z, r.flatten()), where
        ``B w = b`` are the kinks the point lies on (hinge margins equal to 1,
        zero coordinates of r, zero residuals); up to a constant the loss
        equals that smooth function on the affine set.  ``state`` (hinge
        only; :meth:`sample_state` by default) says per sample which side of
        the kink it is on.
        """

    def sample_state(self, z: torch.Tensor, r: torch.Tensor, y: torch.Tensor, eps: float
                     ) -> torch.Tensor | None:
        """(n,) -1 / 0 / +1 for samples off / on / beyond a loss kink, or None."""
        return None


def _zero_rows(r: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Rows e_{r_kl} of w = (z, r.flatten()) for the zero entries of r in the given samples."""
    mask = (r == 0) & rows[:, None]
    index = n + mask.flatten().nonzero().flatten()
    out = torch.zeros(index.shape[0], n + r.numel(), dtype=r.dtype, device=r.device)
    out[torch.arange(index.shape[0], device=r.device), index] = 1.0
    return out


class RobustHinge(RobustLoss):
    """max(0, 1 - y zhat + spread)."""

    name = "hinge"

    def worst_case(self, y, zhat, spread):
        return torch.relu(1 - y * zhat + spread)

    def certified(self, y, low, high):
        return torch.relu(1 - torch.where(y > 0, low, -high))

    def prox(self, a, b, y, eps, rho):
        # z = a + mu y, r = soft(b, eps mu), mu in [0, 1/(n rho)] the root of
        # 1 - y a - mu + eps ||soft(b, eps mu)||_1 = 0 (in nu = eps mu when eps > 0).
        n = a.shape[0]
        cap = 1.0 / (n * rho)
        start = 1 - y * a
        if eps == 0:
            return a + start.clamp(min=0.0, max=cap) * y, b
        # nu = eps mu solves start / eps + sum (|b| - nu)_+ = nu / eps^2
        nu = weighted_threshold_root(b, torch.ones_like(b), start / eps,
                                     torch.full_like(a, eps ** -2)).clamp(max=eps * cap)
        return a + (nu / eps) * y, soft_threshold(b, nu[:, None])

    def clip_dual(self, a, r_dual, y, eps):
        n = y.shape[0]
        theta = (-n * y * a).clamp(0, 1)
        cap = eps * theta[:, None] / n
        return -theta * y / n, torch.maximum(torch.minimum(r_dual, cap), -cap), 1.0

    def scaled_bound(self, a, r_dual, y, eps, s_max):
        theta_mean = float((-y * a).sum())
        return s_max * theta_mean, s_max

    def sample_state(self, z, r, y, eps):
        """-1 where the margin exceeds 1 (zero loss), 0 on the kink, +1 below."""
        margin = y * z - eps * r.abs().sum(dim=1)
        kink = (margin - 1).abs() <= 1e-9 * torch.clamp(margin.abs(), min=1.0)
        return torch.where(kink, 0, torch.where(margin < 1, 1, -1))

    def smooth_piece(self, z, r, y, eps, state=None):
        n = y.shape[0]
        sign = r.sign() if eps > 0 else torch.zeros_like(r)
        state = self.sample_state(z, r, y, eps) if state is None else state
        kink, active = state == 0, state == 1
        gradient = torch.cat([-y[:, None], eps * sign], dim=1)          # of 1 - y z + eps s^T r
        c = torch.cat([gradient[:, 0] * active, (gradient[:, 1:] * active[:, None]).flatten()]) / n
        kinks = kink.nonzero().flatten()
        count = kinks.shape[0]
        kink_rows = torch.zeros(count, n + r.numel(), dtype=z.dtype, device=z.device)
        kink_rows[torch.arange(count, device=z.device), kinks] = gradient[kinks, 0]
        r_part = torch.zeros(count, *r.shape, dtype=z.dtype, device=z.device)
        r_part[torch.arange(count, device=z.device), kinks] = gradient[kinks, 1:]
        kink_rows[:, n:] = r_part.reshape(count, r.numel())
        rows = [kink_rows]
        rhs = [-torch.ones(kinks.shape[0], dtype=z.dtype, device=z.device)]
        if eps > 0:
            zeros = _zero_rows(r, active | kink, n)
            rows.append(zeros)
            rhs.append(torch.zeros(zeros.shape[0], dtype=z.dtype, device=z.device))
        return c, None, torch.cat(rows), torch.cat(rhs)


class RobustSquared(RobustLoss):
    """(|y - zhat| + spread)^2 / 2."""

    name = "squared"

    def worst_case(self, y, zhat, spread):
        return 0.5 * ((y - zhat).abs() + spread) ** 2

    def certified(self, y, low, high):
        return 0.5 * torch.maximum(y - low, high - y) ** 2

    def prox(self, a, b, y, eps, rho):
        # With m = |z - y| + eps ||r||_1 and nu = m / (n rho): z - y = soft(a - y, nu),
        # r = soft(b, eps nu), nu the root of
        # n rho nu = |soft(a - y, nu)| + eps ||soft(b, eps nu)||_1.
        n = a.shape[0]
        residual = a - y
        if eps == 0:
            return y + residual / (1 + 1 / (n * rho)), b
        values = torch.cat([residual[:, None], b], dim=1)
        weights = torch.cat([torch.ones_like(residual)[:, None], eps * torch.ones_like(b)], dim=1)
        nu = weighted_threshold_root(values, weights, torch.zeros_like(a),
                                     torch.full_like(a, n * rho))
        return y + soft_threshold(residual, nu), soft_threshold(b, eps * nu[:, None])

    def clip_dual(self, a, r_dual, y, eps):
        if eps == 0:
            r_dual = torch.zeros_like(r_dual)
        return a, r_dual, math.inf

    def _theta(self, a, r_dual, eps):
        spread = r_dual.abs().amax(dim=1) / eps if eps > 0 and r_dual.numel() else 0 * a
        return torch.maximum(a.abs(), spread)

    def scaled_bound(self, a, r_dual, y, eps, s_max):
        n = y.shape[0]
        linear = -float(a @ y)
        curvature = n * float(self._theta(a, r_dual, eps).square().sum())
        s = min(max(linear / curvature, 0.0), s_max) if curvature > 0 else 0.0
        return s * linear - 0.5 * s * s * curvature, s

    def smooth_piece(self, z, r, y, eps, state=None):
        n = y.shape[0]
        residual_sign = (y - z).sign()
        sign = r.sign() if eps > 0 else torch.zeros_like(r)
        # m_k = g_k^T w + s_k y_k with g_k = (-s_k at z_k, eps sign(r_k) at r_k)
        g = torch.zeros(n, n + r.numel(), dtype=z.dtype, device=z.device)
        diagonal = torch.arange(n, device=z.device)
        g[diagonal, diagonal] = -residual_sign
        g[:, n:] = (torch.eye(n, dtype=z.dtype, device=z.device)[:, :, None]
                    * (eps * sign)[None]).reshape(n, -1)
        offset = residual_sign * y
        Q = g.T @ g / n
        c = g.T @ offset / n
        zero_residual = (residual_sign == 0).nonzero().flatten()
        rows = [torch.zeros(zero_residual.shape[0], n + r.numel(), dtype=z.dtype, device=z.device)]
        rows[0][torch.arange(zero_residual.shape[0], device=z.device), zero_residual] = 1.0
        rhs = [y[zero_residual]]
        if eps > 0:
            zeros = _zero_rows(r, torch.ones_like(y, dtype=torch.bool), n)
            rows.append(zeros)
            rhs.append(torch.zeros(zeros.shape[0], dtype=z.dtype, device=z.device))
        return c, Q, torch.cat(rows), torch.cat(rhs)


ROBUST_LOSSES: dict[str, type[RobustLoss]] = {"hinge": RobustHinge, "squared": RobustSquared}


def get_robust_loss(name: str) -> RobustLoss:
    """The worst-case version of the loss ``name``; UnsupportedError for other losses."""
    if name not in ROBUST_LOSSES:
        raise UnsupportedError(
            f"loss: adversarial training supports loss in {sorted(ROBUST_LOSSES)}, got {name!r}"
        )
    return ROBUST_LOSSES[name]()
