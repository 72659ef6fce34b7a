"""Losses of the two-layer ReLU training problem, with what the solvers need.

Every loss enters the problem as the *mean* loss over the n samples,

    L(z) = (1/n) sum_k l(z_k, y_k),       z in R^n (the network's outputs),

with l_squared(p, y) = (p - y)^2 / 2, l_logistic(p, y) = log(1 + exp(-y p)) and
l_hinge(p, y) = max(0, 1 - y p) (labels y in {-1, +1} for the last two).

Each :class:`Loss` evaluates L, its gradient, its proximal map
``argmin_z L(z) + (rho/2) ||z - v||^2`` (batched over samples), its convex
conjugate ``L*(lam) = sup_z lam^T z - L(z)`` and the best scaling of a dual
point, which is all the ADMM and the dual certificate use.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from certopt.core.errors import InputValueError

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


class Loss(ABC):
    """Mean loss L(z) = (1/n) sum_k l(z_k, y_k); all tensors are (n,)."""

    name: str
    classification: bool
    """True when labels must be in {-1, +1}."""

    def check_targets(self, y: torch.Tensor) -> None:
        """Raise :class:`InputValueError` if ``y`` is not valid for this loss."""
        if self.classification and not bool(((y == 1) | (y == -1)).all()):
            raise InputValueError(f"y: the {self.name} loss expects labels in {{-1, +1}}")

    @abstractmethod
    def value(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L(pred) as a 0-d tensor."""

    @abstractmethod
    def gradient(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A (sub)gradient of L at ``pred``, shape (n,)."""

    @abstractmethod
    def prox(self, v: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
        """argmin_z L(z) + (rho/2) ||z - v||^2, shape (n,)."""

    @abstractmethod
    def conjugate(self, lam: torch.Tensor, y: torch.Tensor) -> float:
        """L*(lam) = sup_z lam^T z - L(z); ``inf`` outside its domain."""

    def project_dual(self, lam: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The point of dom L* nearest to ``lam`` (removes round-off excursions)."""
        return lam

    def best_scale(self, lam: torch.Tensor, y: torch.Tensor, s_max: float) -> float:
        """argmax over s in [0, s_max] of -L*(s lam), a concave function of s.

        Golden-section search (60 steps, relative precision ~1e-12 of s_max);
        losses with a closed form override it.
        """
        lo, hi = 0.0, float(s_max)
        a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
        fa, fb = -self.conjugate(a * lam, y), -self.conjugate(b * lam, y)
        for _ in range(60):
            if fa >= fb:
                hi, b, fb = b, a, fa
                a = hi - _GOLDEN * (hi - lo)
                fa = -self.conjugate(a * lam, y)
            else:
                lo, a, fa = a, b, fb
                b = lo + _GOLDEN * (hi - lo)
                fb = -self.conjugate(b * lam, y)
        candidates = (0.0, a, b, float(s_max))
        return max(candidates, key=lambda s: -self.conjugate(s * lam, y))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SquaredLoss(Loss):
    """l(p, y) = (p - y)^2 / 2;  L*(lam) = (n/2) ||lam||^2 + lam^T y."""

    name = "squared"
    classification = False

    def value(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((pred - y) ** 2).mean()

    def gradient(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (pred - y) / y.shape[0]

    def prox(self, v: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
        c = 1.0 / (y.shape[0] * rho)
        return (v + c * y) / (1.0 + c)

    def conjugate(self, lam: torch.Tensor, y: torch.Tensor) -> float:
        return float(0.5 * y.shape[0] * (lam @ lam) + lam @ y)

    def best_scale(self, lam: torch.Tensor, y: torch.Tensor, s_max: float) -> float:
        # -L*(s lam) = -(n/2) s^2 ||lam||^2 - s lam^T y: maximiser -lam^T y / (n ||lam||^2).
        curvature = float(y.shape[0] * (lam @ lam))
        if curvature <= 0.0:
            return 0.0
        return min(max(-float(lam @ y) / curvature, 0.0), float(s_max))


class _MarginLoss(Loss):
    """A loss of the margin q = y p; its conjugate lives on n lam_k y_k in [-1, 0]."""

    classification = True

    def project_dual(self, lam: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[0]
        return (n * lam * y).clamp(-1.0, 0.0) * y / n

    def _scaled_margin_dual(self, lam: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """a_k = n lam_k y_k, or None if some a_k leaves [-1, 0] (beyond round-off)."""
        a = y.shape[0] * lam * y
        slack = 1e-12
        if bool((a > slack).any()) or bool((a < -1.0 - slack).any()):
            return None
        return a.clamp(-1.0, 0.0)


class HingeLoss(_MarginLoss):
    """l(p, y) = max(0, 1 - y p);  L*(lam) = lam^T y on n lam_k y_k in [-1, 0]."""

    name = "hinge"

    def value(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.relu(1.0 - y * pred).mean()

    def gradient(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -y * (y * pred < 1.0).to(pred.dtype) / y.shape[0]

    def prox(self, v: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
        # In the margin q = y z: argmin c max(0, 1 - q) + (q - m)^2 / 2, m = y v.
        c = 1.0 / (y.shape[0] * rho)
        m = y * v
        q = torch.where(m >= 1.0, m, torch.where(m <= 1.0 - c, m + c, torch.ones_like(m)))
        return y * q

    def conjugate(self, lam: torch.Tensor, y: torch.Tensor) -> float:
        a = self._scaled_margin_dual(lam, y)
        if a is None:
            return math.inf
        return float(a.sum() / y.shape[0])


class LogisticLoss(_MarginLoss):
    """l(p, y) = log(1 + exp(-y p));  L*(lam) = (1/n) sum (-a) log(-a) + (1 + a) log(1 + a).

    with a_k = n lam_k y_k in [-1, 0].
    """

    name = "logistic"
    newton_steps = 20

    def value(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.softplus(-y * pred).mean()

    def gradient(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -y * torch.sigmoid(-y * pred) / y.shape[0]

    def prox(self, v: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
        # The margin q solves phi(q) = q - m - c sigmoid(-q) = 0, phi increasing, root in
        # [m, m + c]: Newton steps, replaced by bisection when they leave the bracket;
        # the residual is checked every 4 steps (one host sync) to stop early, at 50 units
        # of round-off of the dtype (1.1e-14 in float64, 6e-6 in float32).
        c = 1.0 / (y.shape[0] * rho)
        threshold = 50.0 * torch.finfo(v.dtype).eps * (1.0 + float(c))
        m = y * v
        low, high = m, m + c
        q = m.clone()
        for step in range(self.newton_steps):
            sig = torch.sigmoid(-q)
            phi = q - m - c * sig
            if step % 4 == 3 and float(phi.abs().max()) <= threshold:
                break
            low = torch.where(phi < 0, q, low)
            high = torch.where(phi > 0, q, high)
            newton = q - phi / (1.0 + c * sig * (1.0 - sig))
            q = torch.where((newton >= low) & (newton <= high), newton, 0.5 * (low + high))
        return y * q

    def conjugate(self, lam: torch.Tensor, y: torch.Tensor) -> float:
        a = self._scaled_margin_dual(lam, y)
        if a is None:
            return math.inf
        value = torch.special.xlogy(-a, -a) + torch.special.xlogy(1.0 + a, 1.0 + a)
        return float(value.sum() / y.shape[0])


LOSSES: dict[str, type[Loss]] = {
    "squared": SquaredLoss,
    "hinge": HingeLoss,
    "logistic": LogisticLoss,
}


def get_loss(loss: str | Loss) -> Loss:
    """A :class:`Loss` from its name (``"squared"``, ``"hinge"``, ``"logistic"``)."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str) or loss not in LOSSES:
        raise InputValueError(f"loss: expected one of {sorted(LOSSES)}, got {loss!r}")
    return LOSSES[loss]()
