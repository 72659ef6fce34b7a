"""The linear transport problem: marginals and a cost, validated once.

``TransportProblem`` holds a, b as torch tensors on the working device and
dtype, the cost as a :class:`~certopt.ot.geometry.CostGeometry` (a stored
matrix or point clouds read block by block) and the
:class:`~certopt.core.arrays.ArraySpec` of the user's input so results come
back as the user's kind.  It evaluates what every solver and test measures:
the linear cost and the marginal errors of a plan.
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
from certopt.core.errors import InputTypeError, InputValueError
from certopt.ot.geometry import CostGeometry, DenseCost
from certopt.ot.streaming import inner_product


@dataclass(frozen=True)
class TransportProblem:
    """min over plans T >= 0 with T 1 = a, T^T 1 = b of <C, T> (+ a regulariser).

    Attributes
    ----------
    a : (n,) tensor, source weights (nonnegative).
    b : (m,) tensor, target weights (nonnegative, same total as ``a``).
    geometry : the (n, m) cost, read block by block.
    spec : how the user passed ``C``; results are returned alike.
    """

    a: torch.Tensor
    b: torch.Tensor
    geometry: CostGeometry
    spec: ArraySpec

    @classmethod
    def from_inputs(
        cls,
        a: ArrayLike | None,
        b: ArrayLike | None,
        C: ArrayLike,
        device: str | torch.device | None = None,
    ) -> TransportProblem:
        """Validate user inputs (``a``/``b`` may be None: uniform) and copy ``a``, ``b``.

        A dense ``C`` already in the working dtype and device is shared, not
        copied (one pass over ``n m`` numbers saved): no solver writes into
        ``problem.geometry``, so the caller's array is never modified.

        ``C`` is an (n, m) array or a :class:`~certopt.ot.geometry.CostGeometry`
        (e.g. :class:`~certopt.ot.geometry.PointCloudCost`, validated when it was
        built).  Work happens on ``device`` (default: ``C``'s device) in float64
        on CPU and in ``C``'s floating dtype on CUDA.
        """
        if isinstance(C, CostGeometry):
            spec = C.spec
            dev = resolve_device(device, default=C.device)
            dtype = spec.working_dtype(dev)
            geometry = C.to(dev, dtype)
        else:
            spec = spec_of(C)
            dev = resolve_device(device, default=spec.device)
            dtype = spec.working_dtype(dev)
            geometry = DenseCost(as_tensor(C, "C", ndim=2, dtype=dtype, device=dev, copy=False),
                                 spec)
        n, m = geometry.shape
        if n == 0 or m == 0:
            raise InputValueError(f"C: expected a non-empty matrix, got shape {(n, m)}")
        a_t, b_t = check_marginals(a, b, n, m, dtype=dtype, device=dev)
        return cls(a_t, b_t, geometry, spec)

    @property
    def shape(self) -> tuple[int, int]:
        return self.geometry.shape

    def dense_cost(self, solver: str) -> torch.Tensor:
        """The stored (n, m) cost matrix, for solvers that need all of it at once.

        Raises :class:`InputTypeError` when ``C`` is computed on the fly (a
        point cloud): ``solver`` would have to materialise ``n m`` entries, so
        the caller must do that explicitly (``C.dense()``).
        """
        if not isinstance(self.geometry, DenseCost):
            raise InputTypeError(
                f"C: {solver}() needs a dense (n, m) cost matrix, got {self.geometry!r}; "
                f"pass C.dense() to materialise it ({self.shape[0]} x {self.shape[1]} entries)")
        return self.geometry.matrix

    def cost(self, plan: torch.Tensor) -> float:
        """<C, T>, read block by block."""
        return float(inner_product(self.geometry, plan))

    def marginal_errors(self, plan: torch.Tensor) -> dict[str, float]:
        """L1 marginal residuals ``||T 1 - a||_1`` and ``||T^T 1 - b||_1``."""
        return {
            "source_marginal": float((plan.sum(1) - self.a).abs().sum()),
            "target_marginal": float((plan.sum(0) - self.b).abs().sum()),
        }

    def marginal_error(self, plan: torch.Tensor) -> float:
        """max(||T 1 - a||_1, ||T^T 1 - b||_1)."""
        return max(self.marginal_errors(plan).values())
