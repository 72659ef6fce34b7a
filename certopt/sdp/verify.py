"""Float64 verification of a LipSDP certificate (math note, section 6).

A solver's ``γ`` and multipliers may be slightly infeasible.  With the
stage multipliers fixed (projected onto their admissible set, e.g. ``T ≥ 0``)
the LMI matrix is ``M(γ) = M_0 + E_0ᵀ diag(γ) E_0``.  Split the state into
the input block ``x`` and the rest ``r``.  When ``M_0[r, r] ≻ 0`` (checked by
Cholesky) the smallest admissible input weights follow from the Schur
complement

    diag(γ) ⪰ S := M_0[x, r] M_0[r, r]⁻¹ M_0[r, x] − M_0[x, x],

ℓ2: ``ρ = λ_max(S)``; ℓ∞: the smaller of ``γ + max(0, λ_max(S − diag γ))·1``
and ``s·γ`` with ``s = λ_max(diag(γ)^{-1/2} S diag(γ)^{-1/2})`` (only ``s·γ`` when
``S`` lives on the input's row space of rank ``r < 3n_0/4`` and ``γ > 0``; both
eigenproblems then have order ``r``, :func:`scaled_top_eigenvalue`).  If
``M_0[r, r]`` is not positive definite the multipliers are scaled up by
``1 + κ`` (κ = 1e-9 … 1e-1; the QC cone is closed under scaling).  Finally
the weights are raised by a small relative margin until the full
``M(γ) − δ I`` passes a float64 Cholesky factorisation, with
``δ = 10 · dim · eps · max_i |M_ii|`` covering the rounding of the
factorisation (every weight also gets ``2δ``, so inputs the network ignores, whose
weight is ``≈ 0``, pass).  The reported bound is ``√(Σγ)`` for the weights that passed.

The factorisation runs segment by segment, from the last
(:func:`~certopt.sdp.lmi.eliminate`): the activation blocks once per candidate
(twice when the weights raise ``δ``), then one factorisation of order ``n_0`` per
trial weight; zero blocks are never formed, so a deep chain costs ``Σ n_s³``,
not ``(Σ n_s)³``.  :meth:`~certopt.sdp.result.LipschitzResult.check` re-checks a
certificate with the dense factorisation (:func:`passes_cholesky`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import scipy.linalg

from certopt.core.errors import CertoptError
from certopt.sdp.lmi import Blocks, assemble_numpy, eliminate, lmi_blocks
from certopt.sdp.program import Program, SlopeRestricted, input_basis

_SCALINGS = (0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1)
_BLENDS = (1e-8, 1e-6, 1e-4, 1e-2)
_MARGINS = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1e-1)


ROUNDOFF = 1e-9
"""Relative slack of :func:`check_against_attack` (float64 round-off of both numbers)."""


class UnsoundBoundError(CertoptError, RuntimeError):
    """A certified bound fell below a Lipschitz ratio the network was observed to attain.

    This is a bug in certopt (or a network computing something its compiled
    program does not describe), never a result; please report it.
    """


def check_against_attack(bound: float, lower: float, what: str) -> None:
    """Raise :class:`UnsoundBoundError` when ``lower > bound·(1 + ROUNDOFF)``.

    ``lower`` is a ratio ``‖f(x) − f(y)‖ / ‖x − y‖`` (or a Jacobian norm)
    actually attained by the network, so any valid bound is ``>= lower``.
    """
    if math.isfinite(lower) and lower > bound * (1.0 + ROUNDOFF):
        raise UnsoundBoundError(
            f"{what}: the certified bound {bound:.9g} is below the ratio {lower:.9g} observed "
            "on the network; this is a bug (or the network computes something its compiled "
            "program does not describe), not a result")


class Verification(NamedTuple):
    """Outcome of :func:`verify`."""

    verified: bool
    bound: float
    input_weight: np.ndarray
    multipliers: tuple[dict[str, np.ndarray], ...]
    cholesky_shift: float
    """``δ`` such that ``M(γ) − δI`` passed the float64 Cholesky factorisation (so ``M ≻ 0``:
    ``δ`` covers the factorisation's round-off); ``nan`` when not verified."""


def bound_from_weight(input_weight: np.ndarray, norm: str) -> float:
    """The Lipschitz bound certified by input weights ``γ``.

    ``diag(γ) ⪯ max(γ)·I`` gives ``L_2 <= √max γ`` (``√ρ`` for ``γ = ρ·1``);
    ``Δxᵀ diag(γ) Δx <= Σγ ‖Δx‖²_∞`` gives ``L_{∞→2} <= √Σγ``.
    """
    weight = np.maximum(np.asarray(input_weight, dtype=np.float64), 0.0)
    if weight.size == 0 or not np.all(np.isfinite(weight)):
        return math.inf
    return math.sqrt(float(weight.max() if norm == "2" else weight.sum()))


def lmi_matrix(program: Program, input_weight: np.ndarray,
               multipliers: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """The dense float64 LMI matrix ``M`` (it must be ⪰ 0 for a valid certificate)."""
    weight = np.asarray(input_weight, dtype=np.float64)
    return assemble_numpy(program, lmi_blocks(program, weight, multipliers))


def top_eigenvalue(matrix: np.ndarray) -> float:
    """``λ_max`` of a symmetric float64 matrix (LAPACK, only the top eigenvalue)."""
    n = matrix.shape[0]
    return float(scipy.linalg.eigvalsh(matrix, subset_by_index=[n - 1, n - 1],
                                       check_finite=False)[0])


def _cholesky_shift(max_diagonal: float, order: int) -> float:
    """``δ = 10 · order · eps · max_i |M_ii|`` (module doc)."""
    return 10 * order * np.finfo(np.float64).eps * max_diagonal


def passes_cholesky(matrix: np.ndarray) -> bool:
    """True when ``matrix − δI`` has a float64 Cholesky factor (δ as in the module doc)."""
    if matrix.size == 0:
        return True
    if not np.all(np.isfinite(matrix)):
        return False
    delta = _cholesky_shift(float(np.max(np.abs(np.diag(matrix)))), matrix.shape[0])
    try:
        np.linalg.cholesky(matrix - delta * np.eye(matrix.shape[0]))
    except np.linalg.LinAlgError:
        return False
    return True


def _scaled(multipliers: Sequence[Mapping[str, np.ndarray]], factor: float
            ) -> tuple[dict[str, np.ndarray], ...]:
    return tuple({k: factor * v for k, v in m.items()} for m in multipliers)


def scaled_top_eigenvalue(matrix: np.ndarray, weight: np.ndarray,
                          basis: np.ndarray | None) -> float:
    """``λ_max(W^{-1/2} R W^{-1/2})``, ``W = diag(weight) ≻ 0``: the smallest ``s`` with
    ``s·W ⪰ R``.

    ``R = matrix`` (``n_0 × n_0``), or ``R = Q·matrix·Qᵀ`` with ``Q = basis`` (``n_0 × r``,
    orthonormal columns) and ``matrix`` of order ``r``: then the nonzero eigenvalues are
    those of ``Lᵀ·matrix·L`` with ``L Lᵀ = Qᵀ W⁻¹ Q`` (order ``r``; the rest are 0).
    """
    if basis is None:
        inv_sqrt = 1.0 / np.sqrt(weight)
        return top_eigenvalue(inv_sqrt[:, None] * matrix * inv_sqrt[None, :])
    lower = scipy.linalg.cholesky(basis.T @ (basis / weight[:, None]), lower=True,
                                  check_finite=False)
    return max(top_eigenvalue(lower.T @ matrix @ lower), 0.0)


def _smallest_weight(schur: np.ndarray, weight: np.ndarray, norm: str,
                     basis: np.ndarray | None) -> np.ndarray:
    """Cheapest input weights ``γ' ⪰ S`` in the direction the solver chose.

    ℓ2: ``λ_max(S)``, from ``QᵀSQ`` when ``S = QQᵀSQQᵀ`` lives on the input's row
    space ``Q = basis``.  ℓ∞: ``s·γ`` (:func:`scaled_top_eigenvalue`) and, when ``γ`` has
    zeros or ``S`` is not known to be low-rank, ``γ + λ_max(S − diag γ)·1``, whichever sums
    to less (on a low-rank ``S`` the shift pays ``n_0`` times for a few directions).
    """
    reduced = schur if basis is None else basis.T @ schur @ basis
    if norm == "2":
        return np.full(len(weight), max(top_eigenvalue(reduced), 0.0))
    weight = np.maximum(np.nan_to_num(weight, nan=0.0), 0.0)
    candidates = []
    if np.all(weight > 0):
        candidates.append(max(scaled_top_eigenvalue(reduced, weight, basis), 0.0) * weight)
    if basis is None or not candidates:
        candidates.append(weight + max(top_eigenvalue(schur - np.diag(weight)), 0.0))
    return min(candidates, key=lambda g: float(g.sum()))


def _candidates(program: Program, projected: tuple[dict[str, np.ndarray], ...]
                ) -> Iterator[tuple[dict[str, np.ndarray], ...]]:
    """Multipliers to try: scaled up by ``1 + κ``, then (slope-restricted programs)
    blended with the strictly feasible point of
    :func:`~certopt.sdp.first_order.initial_multipliers`, ``(1 − ε)μ + ε μ_0``, which
    makes a singular ``M_0[r, r]`` (e.g. exact pass-through directions) definite."""
    for kappa in _SCALINGS:
        yield _scaled(projected, 1.0 + kappa)
    if all(isinstance(stage.qc, SlopeRestricted) for stage in program.stages):
        from certopt.sdp.first_order import initial_multipliers

        start, _ = initial_multipliers(program)
        for eps in _BLENDS:
            yield tuple({"t": (1.0 - eps) * m["t"] + eps * t0} for m, t0 in zip(projected, start))


def _input_schur(base: Blocks, sizes: Sequence[int], shift: float) -> np.ndarray | None:
    """``M_0[x, x] − M_0[x, r] (M_0[r, r] − shift·I)⁻¹ M_0[r, x]`` by eliminating the segments
    of ``r`` from the last (:func:`~certopt.sdp.lmi.eliminate`), or ``None`` when
    ``M_0[r, r] − shift·I`` fails the Cholesky factorisation."""
    blocks = dict(base)
    for segment in range(1, len(sizes)):
        block = blocks.get((segment, segment), np.zeros((sizes[segment],) * 2))
        blocks[(segment, segment)] = block - shift * np.eye(sizes[segment])
    for segment in range(len(sizes) - 1, 0, -1):
        if not eliminate(blocks, segment):
            return None
    head = blocks[(0, 0)]
    return 0.5 * (head + head.T)


def verify(program: Program, input_weight: np.ndarray,
           multipliers: Sequence[Mapping[str, np.ndarray]], norm: str) -> Verification:
    """Certify ``program``'s Lipschitz bound from a (possibly inexact) solver answer.

    Returns the verified bound ``√(Σγ)`` and the certificate, or
    ``verified=False`` (bound ``inf``) when no scaling of the multipliers
    makes ``M_0[r, r]`` positive definite.  The Cholesky test of the module
    doc runs segment by segment (:func:`_input_schur`): the activation
    segments are factored once per candidate, each trial weight costs one
    factorisation of order ``n_0``.
    """
    n0 = program.input_dim
    order = program.state_dim
    projected = tuple(stage.qc.project(m) for stage, m in zip(program.stages, multipliers,
                                                                  strict=True))
    if any(not np.all(np.isfinite(v)) for m in projected for v in m.values()):
        return Verification(False, math.inf, np.asarray(input_weight), projected, math.nan)
    sizes = program.segment_sizes
    basis = input_basis(program)
    for stage_mult in _candidates(program, projected):
        base = lmi_blocks(program, np.zeros(n0), stage_mult)
        largest = max(float(np.max(np.abs(np.diag(base[(k, k)])), initial=0.0))
                      for k in range(len(sizes)) if (k, k) in base)
        if not math.isfinite(largest):
            continue
        shift = _cholesky_shift(largest, order)
        head = _input_schur(base, sizes, shift)
        if head is None:
            continue
        weight = _smallest_weight(-head, np.asarray(input_weight), norm, basis)
        # M(γ) − δI with δ = _cholesky_shift(max_i |M_ii|): |M_ii| <= largest + max γ.  An
        # input weight below δ (an input the network ignores, e.g. a blank pixel, gets
        # γ_j ≈ 0) would fail whatever the margin: every weight also gets 2δ
        shift = max(shift, _cholesky_shift(2.0 * (largest + float(np.max(weight, initial=0.0))),
                                           order))
        head = _input_schur(base, sizes, shift)
        if head is None:
            continue
        floor = 1e-300 + largest * 1e-15
        for margin in _MARGINS:
            trial = weight * (1.0 + margin) + margin * floor + 2.0 * shift
            try:
                scipy.linalg.cholesky(head + np.diag(trial - shift), lower=True,
                                      check_finite=False)
            except np.linalg.LinAlgError:
                continue
            return Verification(True, bound_from_weight(trial, norm), trial, stage_mult, shift)
    return Verification(False, math.inf, np.asarray(input_weight), projected, math.nan)
