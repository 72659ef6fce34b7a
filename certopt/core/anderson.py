"""Safeguarded type-II Anderson acceleration of a fixed-point iteration x <- T(x).

Anderson acceleration (AA) extrapolates from the last few iterates of a
fixed-point map.  With the residual g(x) = T(x) - x and the differences of
the last m pairs,

    dG = [g_{j+1} - g_j],   dT = [T(x_{j+1}) - T(x_j)]     (dim x m),

the type-II step (Walker & Ni 2011; Zhang, O'Donoghue & Boyd 2020) is

    gamma = argmin_gamma ||g_k - dG gamma||^2 + eta ||dG||_F^2 ||gamma||^2,
    x_{k+1} = T(x_k) - dT gamma,

a regularised least-squares problem in m unknowns (eta = ``regularization``).
With m = 0 (empty memory) this is the plain step x_{k+1} = T(x_k).

Safeguard (as in SCS 3): an extrapolated point is kept only if its own
residual satisfies ||g(x_{k+1})|| <= safeguard ||g(x_k)||; otherwise the
memory is cleared and the iteration goes on from the plain point T(x_k)
(the evaluation of T at the rejected point is lost).  Steps whose weights
are not finite or exceed ``max_weight`` in norm are replaced by the plain
step as well.  So the accelerated sequence never does much worse than the
plain iteration, and on linearly converging maps (ADMM, Douglas-Rachford,
gradient steps) it usually needs far fewer evaluations of T.

Usage, for a map T on flat tensors (any device and floating dtype)::

    accelerator = AndersonAccelerator(memory=10)
    x = x0
    for it in range(max_iter):
        fx = T(x)
        if converged(x, fx): break
        x = accelerator.step(x, fx)

Callers with structured iterates flatten them into one vector (and may
weight the parts: AA minimises the residual in the Euclidean norm of that
vector).
"""

from __future__ import annotations

import math

import torch

from certopt.core.arrays import check_scalar


class AndersonAccelerator:
    """Type-II Anderson acceleration with memory ``memory`` and a residual safeguard.

    Parameters
    ----------
    memory : number m of past differences used (>= 1).
    regularization : eta, the Tikhonov weight relative to ||dG||_F^2 (>= 0).
    safeguard : accept an extrapolated point only if its residual norm is at most
        ``safeguard`` times the residual norm of the point it was built from (> 0).
    max_weight : reject steps with ||gamma|| above this (ill-conditioned memory).

    Attributes
    ----------
    n_accepted, n_rejected : counts of extrapolated steps kept and discarded.
    """

    def __init__(self, memory: int = 10, regularization: float = 1e-10,
                 safeguard: float = 1.0, max_weight: float = 1e6):
        self.memory = int(check_scalar(memory, "memory", low=1, integer=True))
        self.regularization = check_scalar(regularization, "regularization", low=0.0)
        self.safeguard = check_scalar(safeguard, "safeguard", low=0.0, low_inclusive=False)
        self.max_weight = check_scalar(max_weight, "max_weight", low=0.0, low_inclusive=False)
        self.n_accepted = 0
        self.n_rejected = 0
        self._dG: torch.Tensor | None = None  # (memory, dim) residual differences
        self._dT: torch.Tensor | None = None  # (memory, dim) image differences
        self._gram: torch.Tensor | None = None  # (memory, memory) dG dG^T
        self._products: torch.Tensor | None = None  # (memory,) dG g for the last g
        self.reset()

    def reset(self) -> None:
        """Forget every stored difference (e.g. after the map itself changed)."""
        self._count = 0  # number of valid rows
        self._next = 0  # row to overwrite next (circular buffer)
        self._last_g: torch.Tensor | None = None
        self._last_fx: torch.Tensor | None = None
        self._last_norm = math.inf
        self._extrapolated = False

    def step(self, x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        """The next point to evaluate, given the current point x and fx = T(x).

        ``x`` and ``fx`` are 1-D tensors of one shape, dtype and device; they
        are not modified (fx is returned as is by plain steps, so the caller
        must not modify it in place afterwards).
        """
        g = fx - x
        norm = float(torch.linalg.vector_norm(g))
        if self._extrapolated and not norm <= self.safeguard * self._last_norm:
            fallback = self._last_fx
            self.n_rejected += 1
            self.reset()
            return fallback
        if self._last_g is not None:
            self._store(g, fx)
        self._last_g, self._last_fx, self._last_norm = g, fx, norm
        self._extrapolated = False
        if self._count == 0 or not math.isfinite(norm):
            return fx
        gamma = self._weights()
        if gamma is None:
            return fx
        self._extrapolated = True
        self.n_accepted += 1
        return torch.addmv(fx, self._dT[: self._count].T, gamma, alpha=-1.0)

    def _store(self, g: torch.Tensor, fx: torch.Tensor) -> None:
        """Store the differences to the last pair; update dG^T g and the Gram matrix.

        One pass over the memory: with h = dG g and h_last = dG g_last (kept
        from the last step), the new row of the Gram matrix is h - h_last.
        """
        dg = g - self._last_g
        if self._dG is None or self._dG.shape[1] != dg.shape[0] or self._dG.dtype != dg.dtype \
                or self._dG.device != dg.device:
            like = {"dtype": dg.dtype, "device": dg.device}
            self._dG = torch.zeros(self.memory, dg.shape[0], **like)
            self._dT = torch.zeros(self.memory, dg.shape[0], **like)
            self._gram = torch.zeros(self.memory, self.memory, **like)
            self._products = torch.zeros(self.memory, **like)
        row = self._next
        self._dG[row] = dg
        torch.sub(fx, self._last_fx, out=self._dT[row])
        self._count = k = min(self._count + 1, self.memory)
        products = self._dG[:k] @ g
        new_row = products - self._products[:k]
        new_row[row] = dg @ dg
        self._gram[row, :k] = new_row
        self._gram[:k, row] = new_row
        self._products[:k] = products
        self._next = (row + 1) % self.memory

    def _weights(self) -> torch.Tensor | None:
        """gamma of the regularised least-squares problem, or None if unusable."""
        k = self._count
        gram = self._gram[:k, :k]
        shift = self.regularization * float(torch.trace(gram)) + 1e-300
        system = gram + shift * torch.eye(k, dtype=gram.dtype, device=gram.device)
        gamma = torch.linalg.solve_ex(system, self._products[:k])[0]
        size = float(torch.linalg.vector_norm(gamma))
        if not (math.isfinite(size) and size <= self.max_weight):
            return None
        return gamma
