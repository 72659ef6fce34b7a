"""Cost geometries: the cost matrix ``C`` stored densely or computed block by block.

Every OT solver in certopt reads ``C`` only through rectangular blocks
(:mod:`certopt.ot.streaming` passes over them), so ``C`` never has to exist
as an ``(n, m)`` array:

* :class:`DenseCost` wraps a stored matrix; a block is a view of it.
* :class:`PointCloudCost` computes ``C_ij = scale * ||x_i - y_j||_2^p`` from
  two point clouds ``x`` (n, d) and ``y`` (m, d) when a block is asked for
  (as OTT-JAX's ``PointCloud`` geometry).  For ``p = 2``,
  ``||x_i - y_j||^2 = ||x_i||^2 + ||y_j||^2 - 2 <x_i, y_j>`` (one matrix
  product per block, clamped at 0 against round-off); for other ``p`` the
  square root of that is raised to ``p``.  Memory: the two clouds and one
  block, ``O((n + m) d)`` instead of ``O(n m)``.

Pass a ``PointCloudCost`` wherever a cost matrix ``C`` is accepted by
:func:`~certopt.ot.sparse`, :func:`~certopt.ot.quadratic` and
:func:`~certopt.ot.sinkhorn`; the plan is still returned as an ``(n, m)``
array (as the kind, dtype and device of ``x``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from certopt.core.arrays import ArrayLike, ArraySpec, as_tensor, check_scalar, spec_of
from certopt.core.errors import InputValueError


class CostGeometry(ABC):
    """An ``(n, m)`` cost matrix readable block by block."""

    spec: ArraySpec
    """How the user passed the data; results are returned alike."""

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """Floating dtype of the blocks."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Device of the blocks."""

    @abstractmethod
    def block(self, rows: slice, cols: slice) -> torch.Tensor:
        """``C[rows, cols]``, shape ``(len(rows), len(cols))`` (may be a view: read only)."""

    @abstractmethod
    def block_t(self, cols: slice, rows: slice) -> torch.Tensor:
        """``C[rows, cols]^T``, shape ``(len(cols), len(rows))``, contiguous rows.

        The sparse duals reduce along plan columns; this orientation makes
        those reductions run along contiguous memory.
        """

    @abstractmethod
    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``C[rows, cols]`` at broadcast integer index tensors (a gather)."""

    @abstractmethod
    def to(self, device: torch.device, dtype: torch.dtype) -> CostGeometry:
        """A copy on ``device`` in ``dtype`` (the solvers' working precision)."""

    def dense(self) -> torch.Tensor:
        """The whole ``(n, m)`` matrix as a torch tensor (materialised: ``n m`` entries)."""
        n, m = self.shape
        return self.block(slice(0, n), slice(0, m))


class DenseCost(CostGeometry):
    """A stored ``(n, m)`` cost matrix (validated by the caller); read only: it
    may share the user's memory (:meth:`TransportProblem.from_inputs`).

    ``block_t`` reads a transposed copy made on first use (the sparse duals
    need it; Sinkhorn does not).
    """

    def __init__(self, matrix: torch.Tensor, spec: ArraySpec):
        self.matrix = matrix
        self.spec = spec
        self._transposed: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def block(self, rows: slice, cols: slice) -> torch.Tensor:
        return self.matrix[rows, cols]

    def block_t(self, cols: slice, rows: slice) -> torch.Tensor:
        if self._transposed is None:
            self._transposed = self.matrix.T.contiguous()
        return self._transposed[cols, rows]

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.matrix[rows, cols]

    def to(self, device: torch.device, dtype: torch.dtype) -> DenseCost:
        return DenseCost(self.matrix.to(device=device, dtype=dtype), self.spec)


class PointCloudCost(CostGeometry):
    """``C_ij = scale * ||x_i - y_j||_2^p`` computed on demand from two point clouds.

    Parameters
    ----------
    x : (n, d) array, numpy or torch
        Source points.  Results (plans, potentials) come back as ``x``'s
        kind, dtype and device.
    y : (m, d) array
        Target points, same dimension ``d``.
    p : float > 0
        Power of the Euclidean distance; ``p = 2`` (default) is the squared
        Euclidean cost.
    scale : float > 0
        Multiplies every cost (e.g. ``1 / max C`` to normalise).

    Raises
    ------
    InputValueError
        Non-finite points, ``x``/``y`` not 2-D or of different dimensions
        ``d``, empty clouds, ``p <= 0`` or ``scale <= 0``.
    """

    def __init__(self, x: ArrayLike, y: ArrayLike, p: float = 2.0, scale: float = 1.0):
        self.spec = spec_of(x)
        x_t = as_tensor(x, "x", ndim=2, dtype=None)
        y_t = as_tensor(y, "y", ndim=2, dtype=x_t.dtype, device=x_t.device)
        if x_t.shape[1] != y_t.shape[1]:
            raise InputValueError(f"x, y: points of different dimensions {x_t.shape[1]} (x) "
                                  f"and {y_t.shape[1]} (y)")
        if x_t.shape[0] == 0 or y_t.shape[0] == 0:
            raise InputValueError(f"x, y: expected non-empty point clouds, got "
                                  f"{x_t.shape[0]} and {y_t.shape[0]} points")
        self.p = check_scalar(p, "p", low=0, low_inclusive=False)
        self.scale = check_scalar(scale, "scale", low=0, low_inclusive=False)
        self._set_points(x_t, y_t)

    def _set_points(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Keep the clouds and their copies centred at the common mean.

        Blocks expand ``||u - v||^2 = ||u||^2 + ||v||^2 - 2<u, v>`` (one matrix
        product), which cancels catastrophically when the clouds lie far from
        the origin; distances do not change under a shift, so the expansion is
        taken on the centred copies ``_xc``, ``_yc``.
        """
        self.x, self.y = x, y
        centre = torch.cat([x, y]).mean(0)
        self._xc, self._yc = x - centre, y - centre
        self._xc_sq, self._yc_sq = self._xc.square().sum(1), self._yc.square().sum(1)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.x.shape[0]), int(self.y.shape[0]))

    @property
    def dtype(self) -> torch.dtype:
        return self.x.dtype

    @property
    def device(self) -> torch.device:
        return self.x.device

    def _pairwise(self, u: torch.Tensor, u_sq: torch.Tensor, v: torch.Tensor,
                  v_sq: torch.Tensor) -> torch.Tensor:
        """``scale * ||u_r - v_s||^p`` for all pairs (the cost is symmetric in u, v)."""
        squared = torch.addmm(u_sq.unsqueeze(1) + v_sq.unsqueeze(0), u, v.T, alpha=-2.0)
        squared = squared.clamp_min_(0.0)
        costs = squared if self.p == 2.0 else squared.sqrt_().pow_(self.p)
        return costs.mul_(self.scale) if self.scale != 1.0 else costs

    def block(self, rows: slice, cols: slice) -> torch.Tensor:
        return self._pairwise(self._xc[rows], self._xc_sq[rows], self._yc[cols], self._yc_sq[cols])

    def block_t(self, cols: slice, rows: slice) -> torch.Tensor:
        return self._pairwise(self._yc[cols], self._yc_sq[cols], self._xc[rows], self._xc_sq[rows])

    def entries(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        squared = (self.x[rows] - self.y[cols]).square().sum(-1)
        costs = squared if self.p == 2.0 else squared.sqrt().pow(self.p)
        return self.scale * costs

    def to(self, device: torch.device, dtype: torch.dtype) -> PointCloudCost:
        moved = object.__new__(type(self))
        moved.spec, moved.p, moved.scale = self.spec, self.p, self.scale
        moved._set_points(self.x.to(device=device, dtype=dtype),
                          self.y.to(device=device, dtype=dtype))
        return moved

    def __repr__(self) -> str:
        n, m = self.shape
        return (f"PointCloudCost(n={n}, m={m}, d={self.x.shape[1]}, p={self.p:g}, "
                f"scale={self.scale:g})")
