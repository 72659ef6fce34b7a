"""The linear transport problem: marginals and a cost, validated once.

``TransportProblem`` holds a, b, C as torch tensors on the working device and
dtype, plus the :class:`~certopt.core.arrays.ArraySpec` of the user's cost
matrix so results come back as the user's kind.  It evaluates what every
solver and test measures: the linear cost and the marginal errors of a plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from certopt.core.arrays import (
    ArrayLike,
    ArraySpec,
    as_tensor,
    check_marginals,
    resolve_device,
    spec_of,
)
from certopt.core.errors import InputValueError


@dataclass(frozen=True)
class TransportProblem:
    """min over plans T >= 0 with T 1 = a, T^T 1 = b of <C, T> (+ a regulariser).

    Attributes
    ----------
    a : (n,) tensor, source weights (nonnegative).
    b : (m,) tensor, target weights (nonnegative, same total as ``a``).
    C : (n, m) tensor, cost matrix.
    spec : how the user passed ``C``; results are returned alike.
    """

    a: torch.Tensor
    b: torch.Tensor
    C: torch.Tensor
    spec: ArraySpec

    @classmethod
    def from_inputs(
        cls,
        a: ArrayLike | None,
        b: ArrayLike | None,
        C: ArrayLike,
        device: str | torch.device | None = None,
    ) -> TransportProblem:
        """Validate user inputs (``a``/``b`` may be None: uniform) and copy them.

        Work happens on ``device`` (default: ``C``'s device) in float64 on CPU
        and in ``C``'s floating dtype on CUDA.
        """
        spec = spec_of(C)
        dev = resolve_device(device, default=spec.device)
        dtype = spec.working_dtype(dev)
        C_t = as_tensor(C, "C", ndim=2, dtype=dtype, device=dev)
        n, m = C_t.shape
        if n == 0 or m == 0:
            raise InputValueError(f"C: expected a non-empty matrix, got shape {(n, m)}")
        a_t, b_t = check_marginals(a, b, n, m, dtype=dtype, device=dev)
        return cls(a_t, b_t, C_t, spec)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.C.shape[0]), int(self.C.shape[1]))

    def cost(self, plan: torch.Tensor) -> float:
        """<C, T>."""
        return float((self.C * plan).sum())

    def marginal_errors(self, plan: torch.Tensor) -> dict[str, float]:
        """L1 marginal residuals ``||T 1 - a||_1`` and ``||T^T 1 - b||_1``."""
        return {
            "source_marginal": float((plan.sum(1) - self.a).abs().sum()),
            "target_marginal": float((plan.sum(0) - self.b).abs().sum()),
        }

    def marginal_error(self, plan: torch.Tensor) -> float:
        """max(||T 1 - a||_1, ||T^T 1 - b||_1)."""
        return max(self.marginal_errors(plan).values())
