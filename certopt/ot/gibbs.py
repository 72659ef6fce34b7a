"""The Gibbs plan of entropic OT, held two ways behind one interface.

For potentials ``f`` (n,), ``g`` (m,) and ``eps > 0`` the Gibbs plan is
``T_ij = exp((f_i + g_j - C_ij) / eps)``.  A Sinkhorn iteration rescales its
rows to ``a`` and then its columns to ``b``; each rescaling needs one
product of ``T`` with a vector.  Side 0 is the rows (``a``, ``f``, ``u``),
side 1 the columns (``b``, ``g``, ``v``).

* :class:`ScaledKernel` (scaling domain, Sinkhorn-Knopp as in POT's
  default): ``T = diag(u) K diag(v)`` with the kernel
  ``K_ij = exp((f_i + g_j - C_ij) / eps)`` stored once, so a rescaling is
  one matrix-vector product (``u = a / K v``) and no ``exp``.  Stability by
  *absorption* (Schmitzer 2019): when a new scaling leaves
  ``[1/tau, tau]`` the scalings are folded into the potentials
  (``f += eps log u``, ``g += eps log v``, ``u = v = 1``) and ``K`` is
  rebuilt (one pass over ``C``).  ``tau = (largest float)^(1/4)``
  (1e77 in float64, 4e9 in float32): entries of ``K`` that matter stay far
  above the smallest normal number, and absorptions are rare.  If a
  product is still zero or infinite right after a rebuild, the kernel has
  underflowed at these potentials: :class:`KernelUnderflow` is raised with
  the state left consistent, and the caller continues in the log domain.
* :class:`StreamedKernel` (log domain): ``T`` exists only as ``(f, g)``;
  a rescaling is one streamed log-sum-exp pass
  (``f_i = eps (log a_i - log sum_j exp((g_j - C_ij) / eps))``,
  :func:`certopt.ot.streaming.logsumexp_pass`), exact for every ``eps``
  and without any ``(n, m)`` array.

Both give ``mass(side)`` (the current marginal, one pass, cached),
``fit(side)`` (make that marginal exact from the cache), ``product(side,
w)`` (``T w`` or ``T^T w``), ``block`` (entries of ``T``),
``plan_block(rows, cols, C[rows, cols], x, y)`` (a block of ``diag(x) T
diag(y)`` written into the ``(n, m)`` tensor ``plan_storage()``: the caller
uses each block while it is in cache) and ``potentials()``.  Zero weights
give potential ``-inf`` and zero scalings.
"""

from __future__ import annotations

import numpy as np
import torch

from certopt.ot.geometry import CostGeometry
from certopt.ot.problem import TransportProblem
from certopt.ot.streaming import blocks, logsumexp_pass


class KernelUnderflow(ArithmeticError):
    """The stored kernel cannot represent the plan at the current potentials."""


def empty_matrix(shape: tuple[int, int], dtype: torch.dtype, device: torch.device
                 ) -> torch.Tensor:
    """An uninitialised ``(n, m)`` tensor for a kernel or a plan.

    On CPU numpy allocates it: numpy asks Linux for transparent huge pages on
    large arrays (``MADV_HUGEPAGE``), so the first write into ``n m`` fresh
    numbers takes far fewer page faults than with torch's allocator.
    """
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(np.empty(shape, dtype=torch.empty(0, dtype=dtype).numpy().dtype))


class StreamedKernel:
    """``T = exp((f + g - C) / eps)`` held as potentials over a streamed cost."""

    def __init__(self, problem: TransportProblem, f: torch.Tensor, g: torch.Tensor, eps: float):
        self.cost: CostGeometry = problem.geometry
        self.eps = float(eps)
        self.log_weights = (problem.a.log(), problem.b.log())
        self.potential = [f.clone(), g.clone()]
        self._lse: list[torch.Tensor | None] = [None, None]
        self._plan: torch.Tensor | None = None

    def _logsumexp(self, side: int, shift: torch.Tensor | None = None) -> torch.Tensor:
        """``log sum exp((other potential + shift - C) / eps)`` reducing the other side."""
        other = self.potential[1 - side]
        other = other if shift is None else other + shift
        return logsumexp_pass(self.cost, other, self.eps, dim=1 - side)

    def mass(self, side: int) -> torch.Tensor:
        self._lse[side] = self._logsumexp(side)
        return torch.exp(self.potential[side] / self.eps + self._lse[side])

    def fit(self, side: int) -> None:
        self.potential[side] = self.eps * (self.log_weights[side] - self._lse[side])

    def product(self, side: int, weights: torch.Tensor) -> torch.Tensor:
        """``T w`` (side 0, ``w`` of length m) or ``T^T w`` (side 1, length n)."""
        lse = self._logsumexp(side, shift=self.eps * weights.log())
        return torch.exp(self.potential[side] / self.eps + lse)

    def block(self, rows: slice, cols: slice, cost_block: torch.Tensor) -> torch.Tensor:
        """``T[rows, cols]``."""
        f, g = self.potential
        return torch.exp((f[rows, None] + g[None, cols] - cost_block) / self.eps)

    def plan_storage(self) -> torch.Tensor:
        """The ``(n, m)`` tensor :meth:`plan_block` writes into (allocated here)."""
        if self._plan is None:
            self._plan = empty_matrix(self.cost.shape, self.potential[0].dtype,
                                      self.potential[0].device)
        return self._plan

    def plan_block(self, rows: slice, cols: slice, cost_block: torch.Tensor,
                   row_scale: torch.Tensor, col_scale: torch.Tensor) -> torch.Tensor:
        """Write ``(diag(row_scale) T diag(col_scale))[rows, cols]`` into
        :meth:`plan_storage`; returns that view."""
        shifted = (self.potential[0][rows] + self.eps * row_scale[rows].log(),
                   self.potential[1][cols] + self.eps * col_scale[cols].log())
        target = self.plan_storage()[rows, cols]
        torch.add(shifted[0][:, None], shifted[1][None, :], out=target)
        return target.sub_(cost_block).div_(self.eps).exp_()

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.potential[0], self.potential[1]


class ScaledKernel:
    """``T = diag(u) K diag(v)`` with ``K = exp((f + g - C) / eps)`` stored.

    ``buffer``: an ``(n, m)`` tensor to hold ``K`` (reused across calls;
    overwritten), or None to allocate one.
    """

    def __init__(self, problem: TransportProblem, f: torch.Tensor, g: torch.Tensor, eps: float,
                 buffer: torch.Tensor | None = None):
        self.cost: CostGeometry = problem.geometry
        self.eps = float(eps)
        self.weights = (problem.a, problem.b)
        self.zero = (problem.a == 0, problem.b == 0)
        self.has_zero = (bool(self.zero[0].any()), bool(self.zero[1].any()))
        self.tau = torch.finfo(problem.a.dtype).max ** 0.25
        self.potential = [f.clone(), g.clone()]
        self.scaling = [torch.ones_like(f), torch.ones_like(g)]
        self.kernel = empty_matrix(self.cost.shape, f.dtype, f.device) if buffer is None else buffer
        self._products: list[torch.Tensor | None] = [None, None]
        self.fresh = True            # u = v = 1 since K was built: nothing to absorb
        self._rebuild()

    def _rebuild(self) -> None:
        """``K = exp(f / eps + g / eps - C / eps)``, written block by block (three
        passes; two, ``exp(C / -eps)``, at a cold start ``f = g = 0``)."""
        f, g = (p / self.eps for p in self.potential)
        cold = not (bool(f.any()) or bool(g.any()))
        for rows, cols, block in blocks(self.cost):
            target = self.kernel[rows, cols]
            if cold:
                torch.div(block, -self.eps, out=target)
            else:
                torch.add(f[rows, None], g[None, cols], out=target)
                target.sub_(block, alpha=1.0 / self.eps)
            target.exp_()

    def _absorb(self) -> None:
        self.fresh = True
        for side in (0, 1):
            self.potential[side] = self.potential[side] + self.eps * self.scaling[side].log()
            self.scaling[side] = torch.ones_like(self.scaling[side])
        self._rebuild()

    def _matvec(self, side: int, vector: torch.Tensor) -> torch.Tensor:
        """``K w`` (side 0) or ``K^T w`` (side 1)."""
        return torch.mv(self.kernel if side == 0 else self.kernel.T, vector)

    def _scaling_for(self, side: int) -> torch.Tensor:
        """``weights / product`` with 0 for zero weights; its range as ``(low, high)``."""
        new = self.weights[side] / self._products[side]
        if self.has_zero[side]:
            new = torch.where(self.zero[side], torch.zeros_like(new), new)
            low, high = torch.aminmax(torch.where(self.zero[side], torch.ones_like(new), new))
        else:
            low, high = torch.aminmax(new)
        return new, float(low), float(high)

    def mass(self, side: int) -> torch.Tensor:
        self._products[side] = self._matvec(side, self.scaling[1 - side])
        return self.scaling[side] * self._products[side]

    def fit(self, side: int) -> None:
        new, low, high = self._scaling_for(side)
        if not (1.0 / self.tau <= low and high <= self.tau):   # also false for nan
            if not self.fresh:
                self._absorb()
                self._products[side] = self._matvec(side, self.scaling[1 - side])
                new, low, high = self._scaling_for(side)
            if not (0.0 < low and high < float("inf")):
                raise KernelUnderflow(f"sinkhorn: the kernel at eps = {self.eps:g} under- or "
                                      f"overflows on side {side}")
        self.scaling[side] = new
        self.fresh = False

    def product(self, side: int, weights: torch.Tensor) -> torch.Tensor:
        """``T w`` (side 0, ``w`` of length m) or ``T^T w`` (side 1, length n)."""
        u = self.scaling[side]
        return u * self._matvec(side, self.scaling[1 - side] * weights)

    def block(self, rows: slice, cols: slice, cost_block: torch.Tensor) -> torch.Tensor:
        u, v = self.scaling
        return u[rows, None] * self.kernel[rows, cols] * v[None, cols]

    def plan_storage(self) -> torch.Tensor:
        """The kernel's buffer: :meth:`plan_block` writes the plan over it."""
        return self.kernel

    def plan_block(self, rows: slice, cols: slice, cost_block: torch.Tensor,
                   row_scale: torch.Tensor, col_scale: torch.Tensor) -> torch.Tensor:
        """Write ``(diag(row_scale) T diag(col_scale))[rows, cols]`` over the same
        block of the kernel (this object is spent once a block is written); returns it."""
        u, v = self.scaling
        return self.kernel[rows, cols].mul_((u[rows] * row_scale[rows])[:, None]).mul_(
            (v[cols] * col_scale[cols])[None, :])

    def potentials(self) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(p + self.eps * s.log() for p, s in zip(self.potential, self.scaling,
                                                              strict=True))

    def streamed(self, problem: TransportProblem) -> StreamedKernel:
        """The same plan in the log domain (after :class:`KernelUnderflow`)."""
        return StreamedKernel(problem, *self.potentials(), self.eps)
