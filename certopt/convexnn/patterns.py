"""Activation patterns D_i = diag(1[X g_i >= 0]) of the (augmented) data.

Patterns are returned as a (P, n) float tensor of zeros and ones (row i is
the diagonal of D_i), deduplicated, without the all-zero pattern (it adds
nothing to the network), in the dtype and on the device of X.

* :func:`sample_patterns`: Gaussian gates g_i ~ N(0, I), seeded.
* :func:`all_patterns`: every full-dimensional cell of the central hyperplane
  arrangement {g : x_k^T g = 0} (math note, section 3).  Every ReLU neuron u
  has (X u)_+ = D X u for the pattern D of a cell whose closure holds u, so
  these patterns make the convex program exact (min G = min F).
"""

from __future__ import annotations

import itertools
import math

import torch

from certopt.core.errors import InputValueError

MAX_ALL_RANK = 4
"""Largest rank of the augmented data for which ``"all"`` is attempted."""

MAX_ALL_PATTERNS = 20_000
"""Default limit on the number of cells ``"all"`` may enumerate."""


def unique_patterns(masks: torch.Tensor) -> torch.Tensor:
    """Deduplicate (P, n) 0/1 rows and drop the all-zero row; a sorted bool tensor."""
    masks = masks.to(torch.bool)
    return torch.unique(masks[masks.any(dim=1)], dim=0)


def sample_patterns(X: torch.Tensor, n_patterns: int, generator: torch.Generator
                    ) -> torch.Tensor:
    """Patterns 1[X g >= 0] of ``n_patterns`` Gaussian gates (then deduplicated).

    The gates are drawn on the CPU in float64 from ``generator`` so the same
    seed gives the same patterns on every device.  Returns (P, n) with
    P <= n_patterns, in X's dtype and device.
    """
    gates = torch.randn(X.shape[1], n_patterns, generator=generator, dtype=torch.float64)
    masks = (X.to(torch.float64).cpu() @ gates >= 0).T
    return unique_patterns(masks).to(device=X.device, dtype=X.dtype)


def cell_count_bound(n: int, rank: int) -> int:
    """Upper bound on the cells of a central arrangement of n hyperplanes in R^rank.

    2 sum_{i < rank} C(n - 1, i), attained in general position.
    """
    return 2 * sum(math.comb(n - 1, i) for i in range(rank))


def data_rank(X: torch.Tensor, rtol: float = 1e-10) -> tuple[int, torch.Tensor]:
    """Numerical rank r of X and an orthonormal basis (d, r) of its row space."""
    _, sing, vh = torch.linalg.svd(X.to(torch.float64).cpu(), full_matrices=False)
    if sing.numel() == 0 or float(sing[0]) == 0.0:
        return 0, vh[:0].T
    rank = int((sing > rtol * sing[0]).sum())
    return rank, vh[:rank].T


def all_patterns(X: torch.Tensor, max_patterns: int = MAX_ALL_PATTERNS,
                 max_rank: int = MAX_ALL_RANK, chunk: int = 4096) -> torch.Tensor:
    """Every pattern of a full-dimensional cell of the arrangement of X's rows.

    Work in the row space of X (coordinates Z = X V, V an orthonormal basis,
    rank r).  Each cell is a pointed cone whose extreme rays lie on the
    intersection of r - 1 independent hyperplanes.  For every (r - 1)-subset
    of rows with rank r - 1, take both directions +-g of its null line, and
    for each of the 2^(r-1) sign choices sigma of the subset step off the ray
    by a small eps * delta with Z_S delta = sigma: the sign vector of
    Z (g + eps delta) is the pattern of one cell touching the ray.  That is
    O(n^(r-1) 2^r) candidates, deduplicated.  (Data with more than r - 1
    rows through a ray are handled up to ties, which count as inactive.)

    Raises
    ------
    InputValueError
        rank(X) > ``max_rank``, or the arrangement may have more than
        ``max_patterns`` cells (the bound 2 sum_{i<r} C(n-1, i) is checked
        before any work).
    """
    n = X.shape[0]
    rank, basis = data_rank(X)
    if rank == 0:
        raise InputValueError("X: n_patterns='all' needs data with at least one nonzero row")
    if rank > max_rank:
        raise InputValueError(
            f"n_patterns='all': the augmented data has rank {rank}, but enumerating every "
            f"activation pattern is only supported up to rank {max_rank}; pass an integer "
            "n_patterns to sample patterns instead"
        )
    bound = cell_count_bound(n, rank)
    if bound > max_patterns:
        raise InputValueError(
            f"n_patterns='all': {n} points of rank {rank} may have up to {bound} activation "
            f"patterns, above the limit of {max_patterns}; pass an integer n_patterns"
        )
    Z = X.to(torch.float64).cpu() @ basis  # (n, r)
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=rank - 1)),
                         dtype=torch.float64).reshape(-1, rank - 1)  # (2^(r-1), r-1)
    subsets = torch.tensor(list(itertools.combinations(range(n), rank - 1)),
                           dtype=torch.long).reshape(-1, rank - 1)
    found = []
    for start in range(0, subsets.shape[0], chunk):
        rows = Z[subsets[start:start + chunk]]  # (C, r-1, r)
        found.append(_cells_around_rays(Z, rows, signs))
    return unique_patterns(torch.cat(found)).to(device=X.device, dtype=X.dtype)


def _cells_around_rays(Z: torch.Tensor, rows: torch.Tensor, signs: torch.Tensor
                       ) -> torch.Tensor:
    """Patterns of the cells touching the rays null(rows), both directions.

    rows: (C, r-1, r) subsets of Z's rows; signs: (S, r-1).  Returns (C*2*S, n).
    """
    count, k, r = rows.shape
    # Null line of each subset: last right singular vector of the full (r x r) pad.
    padded = torch.cat([rows, torch.zeros(count, 1, r, dtype=rows.dtype)], dim=1)
    _, sing, vh = torch.linalg.svd(padded)
    ray = vh[:, -1, :]  # (C, r)
    if k > 0:
        independent = sing[:, k - 1] > 1e-9 * sing[:, :1].squeeze(1).clamp(min=1e-300)
        ray, rows = ray[independent], rows[independent]
        steps = torch.linalg.pinv(rows) @ signs.T  # (C, r, S)
    else:
        steps = torch.zeros(count, r, signs.shape[0], dtype=rows.dtype)
    on_ray = Z @ ray.T  # (n, C): x_k^T g
    off = on_ray.abs()
    scale = off.abs().max().clamp(min=1e-300)
    off = torch.where(off > 1e-9 * scale, off, torch.full_like(off, math.inf))
    step_size = torch.einsum("nr,crs->cns", Z, steps).abs().amax(dim=(1, 2))  # (C,)
    eps = 0.5 * off.amin(dim=0) / step_size.clamp(min=1e-300)
    eps = torch.where(torch.isfinite(eps), eps, torch.ones_like(eps))
    out = []
    for direction in (1.0, -1.0):
        points = direction * ray[:, :, None] + eps[:, None, None] * steps  # (C, r, S)
        values = torch.einsum("nr,crs->csn", Z, points)  # (C, S, n)
        out.append((values > 0).reshape(-1, Z.shape[0]))
    return torch.cat(out)
