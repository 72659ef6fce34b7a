"""L-BFGS curvature memory and the two-loop recursion, shared by the solvers' loops.

For a function ``h`` being *minimised*, each accepted step contributes a pair
``s = x_new - x``, ``y = grad h(x_new) - grad h(x)``.  :meth:`LBFGSMemory.apply`
returns ``H v``, with ``H`` the L-BFGS approximation of the inverse Hessian
of ``h`` (Nocedal & Wright, Algorithm 7.4), so ``-apply(grad h)`` is a descent
direction.  To *maximise* ``f``, store pairs of ``h = -f``
(``y = grad f(x) - grad f(x_new)``) and step along ``+apply(grad f)``.

Scalars stay 0-d tensors, so the recursion never waits on the device.
"""

from __future__ import annotations

import torch

CURVATURE_RTOL = 1e-12
"""A pair is kept only if ``<s, y> > CURVATURE_RTOL * |s| |y|`` (positive curvature)."""


class LBFGSMemory:
    """The last ``size`` curvature pairs ``(s, y)`` with positive curvature."""

    def __init__(self, size: int = 10):
        self.size = size
        self._pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (s, y, 1/<s,y>)

    def __len__(self) -> int:
        return len(self._pairs)

    def clear(self) -> None:
        """Forget every pair (restart from the initial scaling)."""
        self._pairs.clear()

    def push(self, step: torch.Tensor, grad_change: torch.Tensor) -> None:
        """Store ``(s, y)`` if ``<s, y>`` is safely positive; keep the last ``size`` pairs."""
        sy = step @ grad_change
        norms = torch.linalg.vector_norm(step) * torch.linalg.vector_norm(grad_change)
        if float(sy) > CURVATURE_RTOL * float(norms):
            self._pairs.append((step, grad_change, 1.0 / sy))
            if len(self._pairs) > self.size:
                self._pairs.pop(0)

    def apply(self, vector: torch.Tensor, first_scale: float = 1.0) -> torch.Tensor:
        """``H vector`` by the two-loop recursion.

        The initial inverse Hessian is ``<s, y> / <y, y>`` times the identity
        for the newest pair, or ``first_scale`` times the identity when the
        memory is empty.
        """
        q = vector.clone()
        alphas = []
        for s, y, rho in reversed(self._pairs):
            alpha = rho * (s @ q)
            q -= alpha * y
            alphas.append(alpha)
        if self._pairs:
            _, y, rho = self._pairs[-1]
            q *= 1.0 / (rho * (y @ y))
        else:
            q *= first_scale
        for (s, y, rho), alpha in zip(self._pairs, reversed(alphas)):
            q += (alpha - rho * (y @ q)) * s
        return q
