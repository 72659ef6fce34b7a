"""The LipSDP matrix of a program, built block by block.

For a :class:`~certopt.sdp.program.Program` with segments ``0..S``,
input weights ``γ`` (ℓ2: ``γ = ρ·1``) and stage multipliers,

    M = E_0ᵀ diag(γ) E_0 − A_outᵀA_out − Σ_s [C_s; E_s]ᵀ S_s [C_s; E_s]

(section 8 of the math note).  ``M`` is returned as its upper-triangular
segment blocks ``(i, j), i <= j``: for a feedforward net it is
block-tridiagonal and only those blocks exist.  A stage's QC with a diagonal
block (a 1-D vector) contributes ``C_kᵀ (d ⊙ C_l)``, a row scaling; no dense
product of the stacked state matrices is ever formed.

The same code serves three backends: cvxpy expressions (the SDP in
:mod:`certopt.sdp.reference`), numpy float64 (the verification in
:mod:`certopt.sdp.verify`) and torch tensors (first-order solvers: convert the
constant matrices with ``convert``, e.g. ``lambda a: torch.as_tensor(a, device=dev)``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cvxpy as cp
import numpy as np
import scipy.linalg
import torch

from certopt.sdp.program import Program, Stage

Blocks = dict[tuple[int, int], Any]


class _ArrayOps:
    """numpy / torch operations (both support ``*``, ``@`` and ``.T``)."""

    multiply = staticmethod(operator.mul)

    @staticmethod
    def diag(v: Any) -> Any:
        return torch.diag(v) if isinstance(v, torch.Tensor) else np.diag(v)

    @staticmethod
    def scale_rows(d: Any, matrix: Any) -> Any:
        return d[:, None] * matrix

    @staticmethod
    def scale_cols(matrix: Any, d: Any) -> Any:
        return matrix * d[None, :]


class _CvxOps:
    """cvxpy operations (``*`` is not elementwise there)."""

    multiply = staticmethod(cp.multiply)
    diag = staticmethod(cp.diag)

    @staticmethod
    def scale_rows(d: Any, matrix: Any) -> Any:
        if isinstance(d, np.ndarray):
            return d[:, None] * matrix
        return cp.multiply(cp.reshape(d, (d.shape[0], 1), order="C"), matrix)

    @staticmethod
    def scale_cols(matrix: Any, d: Any) -> Any:
        if isinstance(d, np.ndarray):
            return matrix * d[None, :]
        return cp.multiply(matrix, cp.reshape(d, (1, d.shape[0]), order="C"))


def ops_for(value: Any) -> type[_ArrayOps] | type[_CvxOps]:
    """The backend matching a multiplier or input-weight value."""
    return _CvxOps if isinstance(value, cp.Expression) else _ArrayOps


def _accumulate(blocks: Blocks, key: tuple[int, int], term: Any) -> None:
    blocks[key] = blocks[key] + term if key in blocks else term


def lmi_blocks(
    program: Program,
    input_weight: Any,
    multipliers: Sequence[Mapping[str, Any]],
    *,
    output_scale: float = 1.0,
    convert: Callable[[np.ndarray], Any] | None = None,
) -> Blocks:
    """Upper-triangular segment blocks ``(i, j), i <= j`` of the LipSDP matrix ``M``.

    Parameters
    ----------
    input_weight:
        ``γ``, shape ``(n_0,)`` (cvxpy expression, numpy array or tensor).
    multipliers:
        One mapping per stage, as the stage's QC names them.
    output_scale:
        Uses ``A_out / output_scale`` (conditioning; ``ρ`` scales by its square).
    convert:
        Applied to every constant matrix of ``program`` (e.g. to move it to a
        torch device; always to the program's own arrays, so it may cache).
    """
    ops = ops_for(input_weight)
    convert = convert or (lambda a: a)
    blocks: Blocks = {(0, 0): ops.diag(input_weight)}
    add_output_blocks(blocks, program, output_scale, convert)
    for index, (stage, mult) in enumerate(zip(program.stages, multipliers, strict=True)):
        add_stage_blocks(blocks, stage, index + 1, mult, convert)
    return blocks


def add_output_blocks(blocks: Blocks, program: Program, output_scale: float = 1.0,
                      convert: Callable[[np.ndarray], Any] | None = None) -> None:
    """Add ``−A_outᵀA_out / output_scale²`` to ``blocks`` (in place)."""
    convert = convert or (lambda a: a)
    out = {k: convert(b) for k, b in program.output.terms.items()}  # the program's own arrays
    if output_scale != 1.0:
        out = {k: b / output_scale for k, b in out.items()}
    for k in out:
        for l in out:
            if k <= l:
                _accumulate(blocks, (k, l), -(out[k].T @ out[l]))


def add_stage_blocks(blocks: Blocks, stage: Stage, segment: int, multipliers: Mapping[str, Any],
                     convert: Callable[[np.ndarray], Any] | None = None) -> None:
    """Add stage ``segment``'s term ``−[C_s; E_s]ᵀ S_s [C_s; E_s]`` to ``blocks`` (in place)."""
    convert = convert or (lambda a: a)
    ops = ops_for(next(iter(multipliers.values())))
    pre = {k: convert(b) for k, b in stage.pre.terms.items()}
    form = stage.qc.form(multipliers, ops.multiply)
    if form.pre_pre is not None:
        for k in pre:
            for l in pre:
                if k <= l:
                    weighted = (ops.scale_rows(form.pre_pre, pre[l]) if form.pre_pre.ndim == 1
                                else form.pre_pre @ pre[l])
                    _accumulate(blocks, (k, l), -(pre[k].T @ weighted))
    if form.pre_out is not None:
        for k in pre:
            cross = (ops.scale_cols(pre[k].T, form.pre_out) if form.pre_out.ndim == 1
                     else pre[k].T @ form.pre_out)
            _accumulate(blocks, (k, segment), -cross)
    if form.out_out is not None:
        own = ops.diag(form.out_out) if form.out_out.ndim == 1 else form.out_out
        _accumulate(blocks, (segment, segment), -own)


def eliminate(blocks: Blocks, segment: int) -> bool:
    """Schur-complement segment ``segment`` out of numpy ``blocks`` (in place).

    With ``L Lᵀ = M_ss`` (Cholesky) every pair of neighbours ``k <= l`` of the
    segment gets ``M_kl −= (L⁻¹M_sk)ᵀ(L⁻¹M_sl)``; the segment's blocks are
    removed.  Eliminating every segment but the input in any order is a
    Cholesky factorisation of ``M`` with its rows permuted, skipping exact
    zero blocks, so it certifies ``M ≻ 0`` as a dense factorisation would.
    Returns False (``blocks`` then partly updated) when ``M_ss`` is not
    numerically positive definite.
    """
    try:
        lower = scipy.linalg.cholesky(blocks.pop((segment, segment)), lower=True,
                                      check_finite=False)
    except np.linalg.LinAlgError:
        return False
    neighbours = sorted(k for (k, l) in list(blocks) if l == segment)
    solved = {k: scipy.linalg.solve_triangular(lower, blocks.pop((k, segment)).T, lower=True,
                                               check_finite=False)
              for k in neighbours}
    for i, k in enumerate(neighbours):
        for l in neighbours[i:]:
            _accumulate(blocks, (k, l), -(solved[k].T @ solved[l]))
    return True


def assemble_numpy(program: Program, blocks: Blocks, out: Any = None) -> Any:
    """The dense symmetric ``M`` from numpy (float64) or torch blocks (dtype, device kept).

    ``out``: a matrix an earlier call returned for blocks with the same keys, refilled in
    place (the entries no block covers are still that call's zeros): an iterative solver
    then allocates and clears the dense matrix once.
    """
    offsets = np.concatenate([[0], np.cumsum(program.segment_sizes)]).tolist()
    first = blocks[(0, 0)]
    matrix = out
    if matrix is None:
        matrix = (torch.zeros((offsets[-1],) * 2, dtype=first.dtype, device=first.device)
                  if isinstance(first, torch.Tensor) else np.zeros((offsets[-1], offsets[-1])))
    for (i, j), block in blocks.items():
        rows, cols = slice(offsets[i], offsets[i + 1]), slice(offsets[j], offsets[j + 1])
        matrix[rows, cols] = block
        if i != j:
            matrix[cols, rows] = block.T
    return matrix


def assemble_cvxpy(program: Program, blocks: Blocks) -> cp.Expression:
    """``M`` as one cvxpy expression (``cp.bmat``; lower blocks are transposes)."""
    sizes = program.segment_sizes
    rows = []
    for i in range(len(sizes)):
        row = []
        for j in range(len(sizes)):
            key = (min(i, j), max(i, j))
            if key in blocks:
                block = blocks[key] if i <= j else blocks[key].T
                if not isinstance(block, cp.Expression):
                    block = cp.Constant(block)
            else:
                block = cp.Constant(np.zeros((sizes[i], sizes[j])))
            row.append(block)
        rows.append(row)
    return cp.bmat(rows)
