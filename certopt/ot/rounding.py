"""Rounding an almost-feasible plan onto ``U(a, b)`` (Altschuler, Weed & Rigollet 2017, Alg. 2).

Given a nonnegative plan ``P`` (n, m) whose marginals miss ``a`` and ``b``
a little, the rounded plan is::

    x = min(1, a / P 1)                 scale rows down to at most a
    y = min(1, b / (diag(x) P)^T 1)     then columns down to at most b
    r = a - diag(x) P diag(y) 1 >= 0    the missing row and column masses
    c = b - (diag(x) P diag(y))^T 1 >= 0   (equal totals s = sum r)
    round(P) = diag(x) P diag(y) + r c^T / s

Its row sums are ``a`` and its column sums ``b`` up to round-off, and
``||round(P) - P||_1 <= 2 (||P 1 - a||_1 + ||P^T 1 - b||_1)``.

Only three products with ``P`` are needed (``P 1``, ``P^T x``, ``P y``), so
:func:`rounding` takes them as functions: a stored plan, a scaled kernel or
a plan that exists only as potentials over a streamed cost are rounded by
the same code, and the result is kept factored (:class:`Rounding`) until a
block of it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Product = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Rounding:
    """The factors of ``round(P) = diag(x) P diag(y) + r c^T / s``.

    Attributes
    ----------
    row_scale, col_scale : (n,), (m,) tensors ``x``, ``y`` in ``[0, 1]``.
    row_deficit, col_deficit : (n,), (m,) tensors ``r``, ``c`` (nonnegative).
    """

    row_scale: torch.Tensor
    col_scale: torch.Tensor
    row_deficit: torch.Tensor
    col_deficit: torch.Tensor

    def block(self, plan_block: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """``round(P)[rows, cols]`` from ``P[rows, cols]`` (a new tensor)."""
        scaled = plan_block * self.row_scale[rows, None] * self.col_scale[None, cols]
        return self.correct_(scaled, rows, cols)

    def apply_(self, plan: torch.Tensor) -> torch.Tensor:
        """Overwrite the stored ``(n, m)`` plan ``P`` with ``round(P)``; returns it."""
        return self.correct_(plan.mul_(self.row_scale[:, None]).mul_(self.col_scale[None, :]))

    def correct_(self, scaled: torch.Tensor, rows: slice = slice(None),
                 cols: slice = slice(None)) -> torch.Tensor:
        """Add ``(r c^T / s)[rows, cols]`` to ``scaled = (diag(x) P diag(y))[rows, cols]``
        in place; returns it."""
        total = self.row_deficit.sum().clamp_min(torch.finfo(scaled.dtype).tiny)
        return scaled.addr_(self.row_deficit[rows], self.col_deficit[cols] / total)


def rounding(row_product: Product, col_product: Product, a: torch.Tensor, b: torch.Tensor,
             row_mass: torch.Tensor | None = None) -> Rounding:
    """The rounding of the plan ``P`` given by its products.

    ``row_product(w) = P w`` ((m,) -> (n,)), ``col_product(w) = P^T w``
    ((n,) -> (m,)); ``row_mass = P 1`` when the caller has it (saves a product).
    """
    tiny = torch.finfo(a.dtype).tiny
    if row_mass is None:
        row_mass = row_product(torch.ones_like(b))
    row_scale = torch.where(row_mass > a, a / row_mass.clamp_min(tiny), torch.ones_like(a))
    col_mass = col_product(row_scale)
    col_scale = torch.where(col_mass > b, b / col_mass.clamp_min(tiny), torch.ones_like(b))
    row_deficit = (a - row_scale * row_product(col_scale)).clamp_min(0)
    col_deficit = (b - col_scale * col_mass).clamp_min(0)
    return Rounding(row_scale, col_scale, row_deficit, col_deficit)


def round_to_marginals(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``round(plan)`` for a stored nonnegative ``(n, m)`` plan (a new tensor)."""
    factors = rounding(lambda w: plan @ w, lambda w: plan.T @ w, a, b, row_mass=plan.sum(1))
    return factors.apply_(plan.clone())
