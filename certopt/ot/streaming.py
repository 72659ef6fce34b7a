"""Passes over a cost geometry block by block: online log-sum-exp and running top-k.

The OT hot loops reduce ``C`` (n, m) along one axis: Sinkhorn's
log-sum-exp of ``(g - C) / eps`` and the sparse duals' top-k of the columns
of ``alpha - C``.  Here every such pass reads ``C`` through blocks of at
most :func:`block_entries` entries of a :class:`~certopt.ot.geometry.CostGeometry`,
so no ``(n, m)`` temporary exists beyond one block, whether ``C`` is stored
or computed on the fly from point clouds.

A pass is laid out by :func:`tile_plan`: the *kept* axis (the one the result
is indexed by) in chunks, and for each kept chunk the *reduced* axis in
chunks.  The partial results of the reduced chunks are merged exactly:

* log-sum-exp, online (Milakov & Gimelshein 2018): keep a running maximum
  ``M`` and a running sum ``S = sum exp(z - M)``; a block with maximum ``M_b``
  and sum ``S_b`` gives ``M' = max(M, M_b)``,
  ``S' = S exp(M - M') + S_b exp(M_b - M')``; the result is ``M + log S``
  (rows of ``-inf`` stay ``-inf``);
* top-k: the ``k`` largest of a union are the ``k`` largest of the union of
  each part's ``k`` largest, so the running ``k`` candidates are merged with
  each block's ``k`` largest and cut back to ``k``.

On CPU the block (``2**18`` entries, 2 MiB in float64) stays in cache; on
CUDA it is ``2**24`` entries, enough to fill the GPU.  When the reduced axis
fits in one block (``n`` or ``m`` up to ``2**18`` on CPU) no merge happens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from certopt.ot.geometry import CostGeometry
from certopt.ot.projections import top_k_last

CPU_BLOCK_ENTRIES = 2**18
CUDA_BLOCK_ENTRIES = 2**24


def block_entries(device: torch.device) -> int:
    """Largest number of cost entries one block holds on ``device``."""
    return CPU_BLOCK_ENTRIES if device.type == "cpu" else CUDA_BLOCK_ENTRIES


def tile_plan(kept: int, reduced: int, entries: int) -> Iterator[tuple[slice, list[slice]]]:
    """Lay out a pass over a ``kept x reduced`` matrix in blocks of at most ``entries``.

    Yields ``(kept_chunk, reduced_chunks)``: the reduced axis is cut in
    chunks of ``min(reduced, entries)`` and the kept axis in chunks of
    ``max(1, entries // that)``, so every block ``kept_chunk x
    reduced_chunk`` has at most ``max(entries, reduced_chunk)`` entries.
    """
    step_reduced = max(1, min(reduced, entries))
    step_kept = max(1, entries // step_reduced)
    reduced_chunks = [slice(start, min(start + step_reduced, reduced))
                      for start in range(0, reduced, step_reduced)]
    for start in range(0, kept, step_kept):
        yield slice(start, min(start + step_kept, kept)), reduced_chunks


def logsumexp_pass(cost: CostGeometry, potential: torch.Tensor, reg: float, dim: int,
                   entries: int | None = None) -> torch.Tensor:
    """Log-sum-exp of ``(potential - C) / reg`` along ``dim`` of ``C``, streamed.

    ``dim = 1``: ``out_i = log sum_j exp((potential_j - C_ij) / reg)``
    (``potential`` has length ``m``, ``out`` length ``n``);
    ``dim = 0``: ``out_j = log sum_i exp((potential_i - C_ij) / reg)``
    (``potential`` length ``n``, ``out`` length ``m``).  Entries of
    ``potential`` may be ``-inf`` (zero weights); an all ``-inf`` sum is ``-inf``.
    Equal to ``torch.logsumexp`` of the materialised matrix up to round-off.
    """
    n, m = cost.shape
    entries = block_entries(cost.device) if entries is None else entries
    kept_size, reduced_size = (n, m) if dim == 1 else (m, n)
    out = torch.empty(kept_size, dtype=potential.dtype, device=potential.device)
    for kept, reduced_chunks in tile_plan(kept_size, reduced_size, entries):
        run_max = run_sum = None
        for reduced in reduced_chunks:
            block = cost.block(kept, reduced) if dim == 1 else cost.block(reduced, kept)
            block_max, block_sum = block_logsumexp(potential[reduced], block, reg, dim)
            if run_max is None:
                run_max, run_sum = block_max, block_sum
                continue
            new_max = torch.maximum(run_max, block_max)
            run_sum = (run_sum * torch.exp(_finite_shift(run_max, new_max))
                       + block_sum * torch.exp(_finite_shift(block_max, new_max)))
            run_max = new_max
        out[kept] = torch.log(run_sum) + torch.where(torch.isfinite(run_max), run_max,
                                                     torch.zeros_like(run_max))
    return out


def block_logsumexp(potential: torch.Tensor, block: torch.Tensor, reg: float, dim: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One block's ``(M_b, S_b)``: the maximum of ``z = (potential - block) / reg``
    along ``dim`` and ``sum exp(z - M_b)`` (``M_b = -inf``: shift 0, sum 0)."""
    scores = (potential.unsqueeze(1 - dim) - block) / reg
    block_max = scores.amax(dim)
    shift = torch.where(torch.isfinite(block_max), block_max, torch.zeros_like(block_max))
    return block_max, torch.exp(scores - shift.unsqueeze(dim)).sum(dim)


def _finite_shift(old_max: torch.Tensor, new_max: torch.Tensor) -> torch.Tensor:
    """``old_max - new_max`` with ``-inf - (-inf) = -inf`` (an empty part weighs 0)."""
    return torch.where(torch.isfinite(old_max), old_max - new_max,
                       torch.full_like(old_max, -torch.inf))


def merge_top_k(best: tuple[torch.Tensor, torch.Tensor] | None, scores: torch.Tensor,
                offset: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a block's row-wise ``k`` largest into the running candidates ``best``.

    ``scores``: ``(rows, width)`` block whose column ``l`` is index ``offset + l``;
    ``best``: ``(values, indices)`` of shape ``(rows, <= k)`` or None.  Returns
    the ``k`` largest of the union per row, decreasing, with their indices.
    """
    values, indices = top_k_last(scores, k)
    indices = indices + offset
    if best is None:
        return values, indices
    values, order = top_k_last(torch.cat([best[0], values], dim=1), k)
    return values, torch.gather(torch.cat([best[1], indices], dim=1), 1, order)


def column_top_k_pass(cost: CostGeometry, alpha: torch.Tensor, k: int,
                      entries: int | None = None
                      ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """The ``k`` largest entries of every column of ``alpha - C``, chunk of columns by chunk.

    Yields ``(cols, values, rows)`` with ``values[c, l] = alpha[rows[c, l]] -
    C[rows[c, l], cols.start + c]`` decreasing along ``l`` (``(len(cols),
    min(k, n))`` each).  Blocks are read as ``C^T`` (columns contiguous).
    """
    n, m = cost.shape
    entries = block_entries(cost.device) if entries is None else entries
    for cols, row_chunks in tile_plan(m, n, entries):
        best = None
        for rows in row_chunks:
            scores = alpha[rows].unsqueeze(0) - cost.block_t(cols, rows)
            best = merge_top_k(best, scores, rows.start, k)
        yield cols, best[0], best[1]


def column_blocks(cost: CostGeometry, alpha: torch.Tensor, entries: int | None = None
                  ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Every block of ``alpha - C`` read as ``C^T``.

    Yields ``(cols, rows, alpha[rows] - C[rows, cols]^T)``.
    """
    n, m = cost.shape
    entries = block_entries(cost.device) if entries is None else entries
    for cols, row_chunks in tile_plan(m, n, entries):
        for rows in row_chunks:
            yield cols, rows, alpha[rows].unsqueeze(0) - cost.block_t(cols, rows)


def blocks(cost: CostGeometry, entries: int | None = None
           ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Every block of ``C`` in its own orientation: ``(rows, cols, C[rows, cols])``."""
    n, m = cost.shape
    entries = block_entries(cost.device) if entries is None else entries
    for rows, col_chunks in tile_plan(n, m, entries):
        for cols in col_chunks:
            yield rows, cols, cost.block(rows, cols)


def cost_range(cost: CostGeometry, entries: int | None = None) -> tuple[float, float]:
    """``(min C, max C)`` in one streamed pass over the blocks."""
    low, high = math.inf, -math.inf
    for _, _, block in blocks(cost, entries):
        block_low, block_high = torch.aminmax(block)
        low, high = min(low, float(block_low)), max(high, float(block_high))
    return low, high


def assemble(cost: CostGeometry, entry: Callable[[torch.Tensor, slice, slice], torch.Tensor],
             entries: int | None = None) -> torch.Tensor:
    """The ``(n, m)`` matrix ``entry(C[rows, cols], rows, cols)``, filled block by block.

    Used to write a plan (the output is ``n m``; the cost is never whole).
    """
    out = torch.empty(cost.shape, dtype=cost.dtype, device=cost.device)
    for rows, cols, block in blocks(cost, entries):
        out[rows, cols] = entry(block, rows, cols)
    return out


def inner_product(cost: CostGeometry, plan: torch.Tensor, entries: int | None = None
                  ) -> torch.Tensor:
    """``<C, plan> = sum_ij C_ij plan_ij`` (0-d tensor), block by block."""
    total = torch.zeros((), dtype=plan.dtype, device=plan.device)
    for rows, cols, block in blocks(cost, entries):
        total = total + (block * plan[rows, cols]).sum()
    return total
