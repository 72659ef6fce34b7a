"""Row-parallel top-k and k-sparse simplex projection (Kyrillidis et al. 2013).

The OT solvers keep plan columns as rows of a transposed ``(m, n)`` matrix,
so every operation here acts on the **last** dimension and is batched over
the leading ones.  Everything is plain torch: it runs unchanged on CUDA.

The k-sparse simplex projection of ``x`` onto
``{t >= 0, sum(t) = r, ||t||_0 <= k}`` is exact: keep the ``k`` largest
entries of ``x``, project them onto the simplex of radius ``r``, zero the
rest.
"""

from __future__ import annotations

import torch

from certopt.core.arrays import ArrayLike, as_tensor, check_scalar


def top_k_last(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row of ``x`` (last dim), in decreasing order.

    Returns ``(values, indices)`` of shape ``(..., k)``.  ``k >= x.shape[-1]``
    sorts the whole row.  (An unsorted ``torch.topk`` followed by a sort of
    the ``k`` survivors is several times faster than a sorted ``topk`` on CPU.)
    """
    size = x.shape[-1]
    if k >= size:
        return torch.sort(x, dim=-1, descending=True)
    values, indices = torch.topk(x, k, dim=-1, sorted=False)
    values, order = torch.sort(values, dim=-1, descending=True)
    return values, torch.gather(indices, -1, order)


def simplex_threshold(sorted_values: torch.Tensor, radius: torch.Tensor | float
                      ) -> torch.Tensor:
    """Threshold ``tau`` with ``sum([u - tau]_+) = radius`` for rows sorted decreasingly.

    ``sorted_values``: ``(..., k)`` sorted in decreasing order along the last
    dim; ``radius``: scalar or ``(...)`` nonnegative.  The projection onto
    ``{t >= 0, sum t = radius}`` is ``[u - tau]_+``.  (Held & Wolfe /
    Michelot: ``rho = max{j : u_j - (sum_{i<=j} u_i - r)/j > 0}``.)
    """
    radius = torch.as_tensor(radius, dtype=sorted_values.dtype, device=sorted_values.device)
    cumulative = torch.cumsum(sorted_values, dim=-1) - radius.unsqueeze(-1)
    ranks = torch.arange(1, sorted_values.shape[-1] + 1, dtype=sorted_values.dtype,
                         device=sorted_values.device)
    support = (sorted_values * ranks > cumulative).sum(dim=-1, keepdim=True).clamp_min(1)
    return (torch.gather(cumulative, -1, support - 1) / support).squeeze(-1)


def project_sorted(sorted_values: torch.Tensor, radius: torch.Tensor | float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project decreasing rows onto the simplex of ``radius``: ``([u - tau]_+, tau)``."""
    tau = simplex_threshold(sorted_values, radius)
    return (sorted_values - tau.unsqueeze(-1)).clamp_min(0), tau


def sparse_simplex_projection(x: ArrayLike, k: int, radius: float = 1.0) -> torch.Tensor:
    """Euclidean projection of each row of ``x`` onto the k-sparse simplex.

    ``argmin_t ||t - x||_2`` over ``{t >= 0, sum(t) = radius, ||t||_0 <= k}``,
    row by row along the last dimension.  Returns a new tensor shaped like
    ``x`` (float64 for non-tensor input) with at most ``k`` nonzeros per row.
    """
    x_t = as_tensor(x, "x", dtype=None)
    k = check_scalar(k, "k", low=1, integer=True)
    radius = check_scalar(radius, "radius", low=0)
    values, indices = top_k_last(x_t, k)
    projected, _ = project_sorted(values, radius)
    return torch.zeros_like(x_t).scatter_(-1, indices, projected)
