"""The result of a convexnn solve: the convex solution (v, w) and its certificate."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from certopt.core.result import SolverResult


@dataclass(frozen=True, kw_only=True)
class ConvexNNResult(SolverResult):
    """Solution of the convex ReLU program and the evidence that it is optimal.

    ``objective`` is F at the ReLU network built from (v, w) (exact, math
    note section 1); ``bound`` (alias :attr:`lower_bound`) is a dual lower
    bound by scaling (section 4) on min G, and ``gap = objective - bound``.
    When ``is_global`` the patterns are all patterns, so the bound is a lower
    bound on F over networks of every width; otherwise it bounds the program
    over the sampled patterns only.

    Attributes
    ----------
    v, w : (P, d) tensors, the convex solution (on the solver's device).
    convex_objective : G(v, w).
    is_global : the bound certifies the global optimum of F.
    n_patterns : P.
    n_neurons : neurons of the returned network (nonzero v_i and w_i).
    solver : the solver's name.
    dual_scale : the factor s in [0, 1] that made the dual point feasible.
    """

    v: torch.Tensor
    w: torch.Tensor
    convex_objective: float
    is_global: bool
    n_patterns: int
    n_neurons: int
    solver: str
    dual_scale: float = float("nan")

    @property
    def lower_bound(self) -> float:
        """The certified lower bound (same as :attr:`bound`)."""
        return self.bound
