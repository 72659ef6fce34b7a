"""Results of a Lipschitz certification: the bound and the multipliers proving it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from certopt.core.result import SolverResult, Status
from certopt.sdp.program import Program


class SDPSolution(NamedTuple):
    """What an SDP solver hands to the verification step (section 6).

    ``input_weight`` is ``γ`` (shape ``(n_0,)``; ``ρ·1`` for ℓ2) and
    ``multipliers`` one mapping per stage, both in the scale of the program
    (float64 numpy arrays); ``status`` is the solver's own.
    """

    input_weight: np.ndarray
    multipliers: tuple[dict[str, np.ndarray], ...]
    status: Status
    solve_time: float
    n_iter: int = 0


@dataclass(frozen=True, kw_only=True)
class LipschitzResult(SolverResult):
    """A certified Lipschitz bound and its evidence.

    The true constant ``L`` (ℓ2: ``sup ‖f(x)-f(y)‖₂/‖x-y‖₂``; ``norm="inf"``:
    ``sup ‖f(x)-f(y)‖₂/‖x-y‖_∞``) satisfies ``lower <= L <= bound``.

    Attributes
    ----------
    bound:
        The certified upper bound: the smaller of ``naive`` and, for the SDP
        methods, ``√ρ`` (ℓ2, ``γ = ρ·1``) or ``√(Σ_i γ_i)`` (ℓ∞) for input
        weights and ``multipliers`` whose LMI matrix passed the float64
        Cholesky check when ``verified``.
    objective:
        Equal to ``bound`` (the value of the returned feasible point).
    gap:
        ``bound - lower``: how far the certificate may be from the truth.
    naive:
        Product of the layers' operator norms times the activations' gains.
    lower:
        Largest ``‖f(x)-f(y)‖₂ / ‖x-y‖`` and Jacobian operator norm found by
        sampling plus gradient ascent (``nan`` when the attack was skipped).
    solver_bound:
        ``√ρ`` or ``√(Σγ)`` as the solver returned it, before verification (``nan``
        for ``method="naive"``).
    verified:
        True when ``bound`` passed the float64 check of section 6 (always
        True for ``method="naive"``, sound by construction).
    input_weight, multipliers:
        The certificate: ``γ`` and one mapping per stage of the program.
    solve_time:
        Seconds spent solving the SDP and verifying it (not compiling the
        network nor running the attack).
    residuals:
        ``lmi_cholesky_shift``, a ``δ > 0`` such that the verified LMI matrix minus
        ``δ·I`` passed a float64 Cholesky factorisation (so the matrix is positive
        definite; ``δ`` covers the factorisation's round-off), and
        ``verification_increase = bound / solver_bound - 1``.
    """

    norm: str
    method: str
    naive: float
    lower: float
    solver_bound: float
    verified: bool
    input_weight: np.ndarray | None = field(default=None, repr=False)
    multipliers: tuple[Mapping[str, np.ndarray], ...] = field(default=(), repr=False)
    program: Program | None = field(default=None, repr=False)

    def check(self) -> bool:
        """Re-check the certificate from scratch: True when the LMI matrix of
        ``input_weight`` and ``multipliers`` passes the float64 Cholesky test
        and the multipliers are admissible (False when there is no certificate)."""
        from certopt.sdp.verify import lmi_matrix, passes_cholesky

        if self.program is None or self.input_weight is None or not self.verified:
            return False
        for stage, multipliers in zip(self.program.stages, self.multipliers, strict=True):
            projected = stage.qc.project(multipliers)
            if any(not np.array_equal(projected[k], multipliers[k]) for k in projected):
                return False
        return passes_cholesky(lmi_matrix(self.program, self.input_weight, self.multipliers))
