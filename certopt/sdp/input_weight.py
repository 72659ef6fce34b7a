"""ℓ∞ LipSDP: the best input weights ``γ`` for fixed stage multipliers.

With the multipliers fixed, the ℓ∞ LMI only asks ``diag(γ) ⪰ R`` of the input
weights (``R`` the Schur complement of the activation block, math note section
7), and the bound is ``√Σγ``.  :func:`best_input_weight` solves that small convex
problem approximately by a fixed-point iteration on its dual; used by
:func:`certopt.sdp.fast.solve_fast` for its ℓ∞ bound and by
:func:`certopt.sdp.first_order.solve_first_order` to reset the input shape.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["best_input_weight"]

_SHAPE_ROUNDS = 20
"""ℓ∞: at most this many rounds of the input-weight iteration (:func:`best_input_weight`)."""
_SHAPE_GAP = 1e-2
"""ℓ∞: its stop, on the relative gap between ``Σγ`` and the dual bound."""


def best_input_weight(demand: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """ℓ∞: cheap input weights ``γ`` with ``diag(γ) ⪰ R``, ``Σγ`` near its minimum.

    ``R = demand`` or ``Q·demand·Qᵀ`` (``Q = basis``, ``n_0 × r``); write ``R⁺ = FFᵀ``
    (``R``'s negative eigenvalues clipped; rows ``f_j`` of ``F``, order ``r``).  By the
    Schur complement ``diag(γ) ⪰ FFᵀ ⇔ H(γ) := Σ_j f_jf_jᵀ/γ_j ⪯ I``, so the best ``γ`` at
    the fixed multipliers solves ``min Σγ s.t. H(γ) ⪯ I``, an LMI of order ``r`` whose
    Lagrange dual is ``max_{Y⪰0} 2Σ_j √(f_jᵀYf_j) − tr Y``, with ``γ_j = √(f_jᵀYf_j)`` the
    primal minimiser at ``Y`` and ``(Σ_jγ_j)²/tr Y`` the dual value after scaling ``Y``.
    Optimality is ``H(γ(Y)) = I``; the rounds take the fixed-point step
    ``Y ← Y^{1/2} H(γ(Y)) Y^{1/2}`` from ``Y = I`` (``γ = √diag R``, exact when ``R`` has
    rank one), each round scoring ``γ`` by ``λ_max(H(γ))·Σγ`` (the scale that makes it
    feasible for ``R⁺``), until that is within ``_SHAPE_GAP`` of the dual value.  The best
    ``γ``'s direction is returned: the caller scales it to feasibility for ``R`` itself,
    so any ``γ > 0`` is sound.  ``O(n_0 r² + r³)`` a round.
    """
    size = demand.shape[0] if basis is None else basis.shape[0]
    if not np.all(np.isfinite(demand)):
        return np.ones(size)  # no direction to prefer; the caller's scale is not finite
    values, vectors = np.linalg.eigh(0.5 * (demand + demand.T))
    root = vectors * np.sqrt(np.maximum(values, 0.0))
    rows = root if basis is None else basis @ root  # F (n_0 × r)
    floor = 1e-24 * max(float(np.max(np.einsum("ia,ia->i", rows, rows))), 1e-300)
    gram = np.eye(rows.shape[1])  # Y
    best, best_value = None, math.inf
    for _ in range(_SHAPE_ROUNDS):
        weight = np.sqrt(np.maximum(np.einsum("ia,ab,ib->i", rows, gram, rows), floor))
        load = rows.T @ (rows / weight[:, None])  # H(γ)
        value = float(np.linalg.eigvalsh(load)[-1]) * float(weight.sum())
        if best is None or value < best_value:
            best, best_value = weight, value
        dual = float(weight.sum()) ** 2 / float(np.trace(gram))
        if not best_value > 0 or best_value <= (1 + _SHAPE_GAP) * dual:
            break
        eig, vec = np.linalg.eigh(gram)
        half = (vec * np.sqrt(np.maximum(eig, 0.0))) @ vec.T
        gram = half @ load @ half
        gram *= gram.shape[0] / max(float(np.trace(gram)), 1e-300)
    return best
