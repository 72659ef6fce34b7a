"""A compositional closed-form LipSDP bound (math note, section 10).

The LipSDP matrix of a program, with the input block left out,

    M_0(t) = −A_outᵀA_out − Σ_s t_s·[C_s; E_s]ᵀ S_s(1) [C_s; E_s],

is eliminated segment by segment **from the output backwards**, choosing
each stage's multipliers as one scalar ``t_s`` times the unit pattern of its
sector QC (``QuadraticConstraint.sector_multipliers(1)``: the identity for
slope-restricted stages; GroupSort QC stages: below).  When
segment ``s`` is reached, every block touching it is known: its own term and
what the later stages and the output put there, including the fill-in of
earlier eliminations.  With ``N_s = −(that diagonal block)`` (the load
passed back to ``φ_s``), slopes ``[α, β]`` (``m = (α+β)/2``, ``r = (β−α)/2``),
``A = ‖C_s‖₂²`` and ``K = ‖[M_{k,s}]_{k<s}‖₂²`` the cross blocks the later
stages put between ``φ_s`` and earlier segments:

    M_ss = t_s I − N_s ≻ 0  ⇔  t_s > ν := λ_max(N_s),

and eliminating ``φ_s`` passes back to the earlier segments at most the scalar
proxy ``a t A + (|m| t √A + √K)² / (t − ν)`` (``a = −αβ``; cross terms bounded
by their norms), whose minimiser over ``t > ν`` is closed form:

    t_s = ν (1 + |m|/r) + √(K/A) / r.

For a feedforward chain of slope-restricted stages (no skips, no pass-through)
``K = 0`` and this is ``t = 2ν`` for ReLU, the ECLipsE-Fast choice (Xu &
Sivaranjani, NeurIPS 2024) in this program's scaling; each passed-back load is
then ``⪯ ν (|m| + r)² C_sᵀC_s``, so the bound is never above the naive product.
With skips or the pass-through of reflection stages (MaxMin, GroupSort's
sorting network) ``K > 0`` and the proxy is only a heuristic: on GroupSort
sorting networks the closed form can exceed the naive product
(``lipschitz_bound`` reports the smaller of the two).  The exact Schur complement
``M_kl −= M_ks M_ss⁻¹ M_sl`` (one Cholesky of order ``n_s``) is passed back,
not the proxy: that is what makes the bound tighter than the product of norms.
GroupSort QC stages (``"qc"`` encoding) pass the groups' mean directions
through exactly: the sort preserves each group's sum, so with ``P`` the
projector on the mean directions ``PΔφ = PΔc``.  The multipliers
``λ`` (all groups), ``a = (λ+κ)/g``, ``b = (λ−κ)/g`` make the QC form

    λ(‖(I−P)Δc‖² − ‖(I−P)Δφ‖²) − κ‖P(Δc − Δφ)‖²

(zero on the second term for every valid pair).  Eliminating ``φ_s`` then
passes back ``λ(I−P) + PNP + PN(I−P)(λ(I−P) − (I−P)N(I−P))⁻¹(I−P)NP``
plus ``O(‖N‖²/κ)``, the Schur complement of ``λI − N`` in the split
``P ⊕ (I−P)`` subtracted from ``λI``: with ``λ = (1 + 10⁻⁶)·λ_max(N)`` (+ the
coupling ``√(K/A)`` of skips) it is ``⪯ λI``, the pass-back of the plain
1-Lipschitz QC, and strictly below it unless ``N``'s top eigenvectors and
the mean directions decouple.  ``κ = 10³(λ + ‖N‖₂)`` keeps the φ block
``λ(I−P) + κP − N`` well conditioned.
What remains is the input block's requirement ``diag(γ) ⪰ R``: ℓ2 takes
``ρ = λ_max(R)``; ℓ∞ a direction ``g`` scaled by ``λ_max(G^{-1/2} R G^{-1/2})``,
``g`` from a few rounds of a fixed-point iteration on the dual of
``min Σγ s.t. diag(γ) ⪰ R`` (:func:`~certopt.sdp.input_weight.best_input_weight`,
within 1% of that minimum), started at ``g = √diag(R)`` (optimal when ``R = bbᵀ``
has rank one: ``(bᵀΔx)² <= ‖b‖₁ Σ_j |b_j| Δx_j²`` by Cauchy–Schwarz).  The whole elimination
runs on the input's row space (:func:`~certopt.sdp.program.reduced_input`):
``R`` is held as ``Q R̃ Qᵀ`` with ``R̃`` of order ``rank ≤ n_1``.  Cost: per
stage one extreme eigenvalue and one Cholesky of the stage's order plus the
products with its pre-activation blocks; no SDP solver.  The answer is a
feasible point of the same LMI (up to round-off), verified in float64 like
every other (:mod:`certopt.sdp.verify`).

Exact cases (derived in the tests): one hidden layer whose output weights
satisfy ``W_1ᵀW_1 = ν I`` (e.g. orthogonal): the bound is
``√ν · max(|α|, |β|) · ‖W_0‖₂``, which is also LipSDP's optimum (the input
``x = v₁`` of ``W_0``'s top singular pair with ``φ = β W_0 x`` satisfies every
QC with equality).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import numpy as np

from certopt.core.errors import UnsupportedError
from certopt.core.result import Status
from certopt.sdp.input_weight import best_input_weight
from certopt.sdp.lmi import Blocks, add_output_blocks, add_stage_blocks, eliminate
from certopt.sdp.program import Program, Stage, reduced_input
from certopt.sdp.result import SDPSolution
from certopt.sdp.rules import GroupSortQC
from certopt.sdp.verify import scaled_top_eigenvalue, top_eigenvalue

__all__ = ["solve_fast"]


def _stage_scale(blocks: Blocks, unit: Blocks, stage: Stage, segment: int) -> float:
    """The closed-form ``t_s`` (module doc); ``A = ‖C_s‖₂²`` is only needed when ``K > 0``."""
    alpha, beta = stage.qc.sector()
    size = unit[(segment, segment)].shape[0]
    own = blocks.get((segment, segment), np.zeros((size, size)))
    diag = np.diag(unit[(segment, segment)])
    inv_sqrt = 1.0 / np.sqrt(diag)
    nu = max(top_eigenvalue(-inv_sqrt[:, None] * own * inv_sqrt[None, :]), 0.0)
    m, r = 0.5 * np.abs(alpha + beta), 0.5 * (beta - alpha)
    r = np.maximum(r, 1e-3 * np.maximum(m, 1e-12))
    t = float(np.max(nu * (1.0 + m / r) + _coupling(blocks, stage, segment) / r))
    floor = 1e-12 * max(nu, float(np.max(np.abs(own))) if own.size else 0.0, 1e-300)
    return max(t, nu * (1.0 + 1e-9), floor)


_MEAN_PENALTY = 1e3
"""GroupSort QC stages: ``κ`` relative to ``λ + ‖N‖₂`` (module doc); the mean direction's
pass-back is within about ``1/κ`` of exact."""


def _coupling(blocks: Blocks, stage: Stage, segment: int) -> float:
    """``√(K/A)``: the cross blocks later stages put between ``φ_s`` and earlier segments,
    relative to the stage's pre-activation norm (0 in a chain)."""
    cross = [blocks[(k, segment)] for k in range(segment) if (k, segment) in blocks]
    if not cross:
        return 0.0
    k_norm2 = float(np.linalg.norm(np.vstack(cross), 2)) ** 2
    pre_norm2 = float(np.linalg.norm(np.hstack([stage.pre.terms[k]
                                                for k in sorted(stage.pre.terms)]), 2)) ** 2
    return math.sqrt(k_norm2 / max(pre_norm2, 1e-300))


def _groupsort_multipliers(blocks: Blocks, stage: Stage, segment: int
                           ) -> Callable[[float], dict[str, np.ndarray]]:
    """GroupSort QC: ``scale ↦`` the mean pass-through multipliers ``λ, a, b`` (module doc)."""
    qc = stage.qc
    size, g = qc.size, qc.group_size
    load = -blocks.get((segment, segment), np.zeros((size, size)))
    nu = max(top_eigenvalue(load), 0.0)
    lam = nu * (1.0 + 1e-6) + _coupling(blocks, stage, segment)
    lam = max(lam, 1e-12 * max(float(np.max(np.abs(load))), 1e-300))
    kappa = _MEAN_PENALTY * (lam + float(np.linalg.norm(load, 2)))

    def multipliers(scale: float) -> dict[str, np.ndarray]:
        return {"lam": np.full(qc.n_groups, scale * lam),
                "a": np.full(size, scale * (lam + kappa) / g),
                "b": np.full(size, scale * (lam - kappa) / g)}

    return multipliers


def solve_fast(program: Program, norm: str, solver: str | None = None, *,
               output_scale: float = 1.0, verbose: bool = False) -> SDPSolution:
    """The compositional closed-form LipSDP point of ``program`` (module doc).

    ``norm`` is ``"2"`` or ``"inf"``; ``output_scale`` divides ``A_out``
    (conditioning) and is undone in the returned weights and multipliers.
    Raises :class:`UnsupportedError` for a stage QC without a sector.
    ``solver`` and ``verbose`` are accepted for the common method signature
    and must be ``None`` / are ignored.
    """
    start = time.perf_counter()
    if solver is not None:
        raise UnsupportedError(f"solver: {solver!r} applies to method='lipsdp' only")
    # the multipliers are those of the program on the input's row space x̃ = Qᵀx
    working, basis = reduced_input(program)
    blocks: Blocks = {}
    add_output_blocks(blocks, working, output_scale)
    multipliers: list[dict[str, np.ndarray]] = [{} for _ in working.stages]
    for segment in range(len(working.stages), 0, -1):
        stage = working.stages[segment - 1]
        sector = stage.qc.sector()
        if sector is None:
            raise UnsupportedError(
                f"method='fast': stage {segment} ({stage.label or type(stage.qc).__name__}) "
                f"uses {type(stage.qc).__name__}, which declares no sector; use "
                "method='lipsdp'")
        if isinstance(stage.qc, GroupSortQC):
            choose, scale = _groupsort_multipliers(blocks, stage, segment), 1.0
        else:
            unit_multipliers = stage.qc.sector_multipliers(np.ones(stage.qc.size))
            unit: Blocks = {}
            add_stage_blocks(unit, stage, segment, unit_multipliers)
            scale = _stage_scale(blocks, unit, stage, segment)

            def choose(scale: float, unit: Mapping[str, np.ndarray] = unit_multipliers
                       ) -> dict[str, np.ndarray]:
                return {k: scale * np.asarray(v, dtype=np.float64) for k, v in unit.items()}
        for _ in range(8):  # round-off near a singular block: move away from it
            trial = dict(blocks)
            chosen = choose(scale)
            add_stage_blocks(trial, stage, segment, chosen)
            if eliminate(trial, segment):
                break
            scale *= 2.0
        else:
            return SDPSolution(np.full(program.input_dim, np.nan), tuple(multipliers),
                               Status.NUMERICAL, time.perf_counter() - start)
        blocks = trial
        multipliers[segment - 1] = {k: output_scale ** 2 * v for k, v in chosen.items()}
    n0 = working.input_dim
    demand = -blocks.get((0, 0), np.zeros((n0, n0)))
    demand = 0.5 * (demand + demand.T)  # R = Q·demand·Qᵀ
    if norm == "2":
        weight = np.full(program.input_dim, max(top_eigenvalue(demand), 0.0))
    else:
        shape = best_input_weight(demand, basis)
        weight = max(scaled_top_eigenvalue(demand, shape, basis), 0.0) * shape
    return SDPSolution(weight * output_scale ** 2, tuple(multipliers), Status.OPTIMAL,
                       time.perf_counter() - start)
