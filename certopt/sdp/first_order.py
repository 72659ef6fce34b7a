"""A first-order solver for the LipSDP of a compiled program (math note, section 7).

The LMI of :mod:`certopt.sdp.program` asks for multipliers ``μ`` and an input
diagonal ``γ >= 0`` with

    M(γ, μ) = diag(γ) ⊕ 0 − K(μ) ⪰ 0,
    K(μ) = A_outᵀA_out + Σ_s [C_s; E_s]ᵀ S_s(μ_s) [C_s; E_s].

Split the state into the input block ``x`` and the activation block ``φ``.
Whenever ``S(μ) := −K_φφ(μ) ≻ 0``, the Schur complement gives the smallest
admissible input block in closed form,

    M ⪰ 0   ⇔   diag(γ) ⪰ R(μ) := K_xx + K_xφ S(μ)⁻¹ K_φx,

so the SDP becomes an unconstrained problem in the multipliers alone:

* ℓ2 (``γ = ρ·1``):  minimise ``F(μ) = λ_max(R(μ))``; the bound is ``√F``;
* ℓ∞ (``γ = s·g`` for a shape ``g > 0``): the smallest feasible scale is
  ``s = λ_max(G^{-1/2} R G^{-1/2})``, so minimise
  ``F(μ, g) = (Σ g)·λ_max(G^{-1/2} R(μ) G^{-1/2})``; the bound is ``√F``.

Every iterate with a successful Cholesky factorisation of ``S(μ)`` is a
feasible point of the SDP, so ``F`` at the best iterate is an upper bound on
the SDP value (up to round-off, removed by the float64 verification of
section 6 that the caller runs on the returned multipliers).  Any stage QC
with a :meth:`~certopt.sdp.program.QuadraticConstraint.sector` works
(slope-restricted stages, :class:`~certopt.sdp.rules.GroupSortQC`).
Nonnegative multipliers are parameterised as ``t_j = exp(c_j η_j)``, free ones
(GroupSort's ``a``, ``b``) as the stage's starting weight times ``η``, the
shape as ``g_j = exp(c_j ζ_j)``.  In ℓ2 ``c = 1``.  In ℓ∞ ``c`` is a diagonal
preconditioner, ``c_j = b·√(v̄/v_j)`` per multiplier array and for the shape
(``v`` its values, ``v̄`` their mean, the factor clipped to ``[0.1, 10]``,
``b = 1`` for multipliers, ``3`` for the shape), reset at the start and at every
smoothing level from the current point.  Why: in ``log g_j`` both the gradient
``g_j λ̄ − (Σg) Σ_i p_i λ_i g_j x_ij²`` (``x_i`` the generalised eigenvectors,
``R x_i = λ_i G x_i``) and the curvature scale with ``g_j`` (likewise for a
multiplier ``t_j``, whose QC term is linear in ``t_j``), so a uniform scale gives
L-BFGS a Hessian whose diagonal spans the values' range (orders of magnitude on
images: border pixels carry ``g_j ≈ 0``) and a scalar initial Hessian fits only
the largest entries; with ``c_j ∝ v_j^{-1/2}`` every entry has the curvature of
an entry at the mean.  ℓ2 has no shape and keeps ``c = 1``: the multipliers'
scales alone did not pay there on the benchmark nets (benchmarks/RESULTS.md).
``F = (Σg)·λ_max`` is
smoothed by a log-sum-exp over the spectrum, ``w·log Σ_i exp((Σg)·λ_i/w)``
(``λ_i`` the eigenvalues of ``G^{-1/2} R G^{-1/2}``; ``Σg = 1`` in ℓ2), with
width ``w = s·|F|`` on ``F``'s own scale, so that it is invariant to ``g → c·g``
(a width on ``λ_max``'s scale is ``Σg`` times too coarse and stalled ℓ∞ above
the SDP value),
``s = 10⁻¹, 10⁻², …, 10⁻⁵`` (from ``10⁻²`` in ℓ2 from a given start;
continuation: ``s`` drops when the smoothed objective decreased by less than
``max(tol, 10⁻²s)·|F|`` over ``patience/2`` iterations (``patience`` at the
finest level, whose stall ends the run), restarting from the best
point), plus the vanishing barrier
``β Σ_j log(z_jᵀS⁻¹z_j)`` (8 fixed Gaussian probes ``z_j``, ``β = 0.1·w/8``;
near the boundary it behaves like ``−8β log λ_min(S)``, at the cost of two
triangular solves with 8 right-hand sides; ``−log det S`` would cost an
inverse): the optimum often lies on or near the boundary of ``S ≻ 0``
(orthogonal MaxMin nets, GroupSort), where steps are cut by the domain and
the iterates used to crawl along it.  L-BFGS takes the
steps with an Armijo backtracking line search that also keeps ``S ≻ 0``.
The starting point
is a strictly feasible, naive-bound-like certificate built stage by stage
(:func:`initial_multipliers`).

Gradient (envelope theorem, no autograd through the factorisations).  With
``M_0(μ)`` the LMI matrix at ``γ = 0`` (so ``R = M_0,xφ S⁻¹ M_0,φx − M_0,xx``),
``U = [I; −S⁻¹M_0,φx]`` and the smoothed top eigenprojector ``P = V diag(p) Vᵀ``
(``p = softmax((Σg)·λ/w)``),

    dF = (Σg)·⟨G^{-1/2} P G^{-1/2}, dR⟩ = −tr(Zᵀ dM_0 Z),   Z = U G^{-1/2} V diag(√(Σg)·√p),

a low-rank (``n × k``, ``k`` = eigenvalues with non-negligible weight)
quadratic form of the LMI, linear in the multipliers: a slope-restricted
stage's derivative is ``∂/∂t_i = −α_iβ_i‖H_i‖² + (α_i+β_i)⟨H_i, P_i⟩ − ‖P_i‖²``
(``H = C_s Z``, ``P = Z_s``, :meth:`~certopt.sdp.program.QuadraticConstraint.trace_gradient`);
stages without a closed form (GroupSort's QC) go through autograd on their QC forms
only.  Cost per evaluation: one Cholesky of order
``Σ_{s>=1} n_s`` (leading segments whose block of ``S`` is diagonal, e.g. the
first ReLU layer, are eliminated first: :class:`_BlockCholesky`), one
triangular solve with ``r`` right-hand sides, one symmetric
eigendecomposition of order ``r`` and ``O(n²k)`` for the gradient; all in
torch, on any device.  ``r <= n_0`` is the rank of the input's row space
(:func:`~certopt.sdp.program.reduced_input`): every quantity sees ``x`` through ``Qᵀx``, so
``R = Q R̃ Qᵀ`` and, in ℓ∞ too, the spectrum of ``G^{-1/2} R G^{-1/2}`` is
that of ``Lᵀ R̃ L`` with ``L Lᵀ = Qᵀ G⁻¹ Q`` (order ``r``; the ``n_0`` shape
variables only enter through ``O(n_0 r²)`` products).
"""

from __future__ import annotations

import math
import operator
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from certopt.core.arrays import check_scalar, resolve_device
from certopt.core.errors import ConvergenceWarning, InputValueError, UnsupportedError
from certopt.core.lbfgs import LBFGSMemory
from certopt.core.progress import progress
from certopt.core.result import Status
from certopt.sdp.lmi import assemble_numpy, lmi_blocks
from certopt.sdp.program import Program, QCForm, Stage, reduced_input

__all__ = ["FirstOrderSolution", "initial_multipliers", "solve_first_order"]
_SMOOTH0 = 1e-1
"""First smoothing width, relative to ``|F|`` (tuned on small GroupSort/ReLU/MaxMin nets
against the interior-point value: wider starts converge more reliably than 10⁻³)."""
_SMOOTH0_WARM = 1e-2
"""First smoothing width in ℓ2 from a given ``start`` (e.g. the fast bound's point, already
close: the coarsest level only spends iterations there; in ℓ∞ the shape variables still
profit from the coarse level)."""
_SMOOTH_END = 1e-5
"""Finest smoothing width (relative); the run ends when this level stalls."""
_SMOOTH_FACTOR = 0.1
"""Factor between successive smoothing widths."""
_LEVEL_TOL = 0.01
"""A coarse level ends when its smoothed objective improves by less than this times its width."""
_COARSE_PATIENCE = 0.5
"""A coarse level's stall window, as a fraction of ``patience`` (the finest level uses all of
it): a coarse level only positions the next one, and its window is a floor on the
iterations every level costs."""
_SHAPE_SCALE = 3.0
"""ℓ∞: ``log g_j = c_j·z_j`` for the shape's coordinates ``z``, with ``c_j = _SHAPE_SCALE``
for a shape entry at the mean ``ḡ`` (:meth:`_Parametrization.balance`).  The ``n_0``
shape entries each carry a gradient of order ``F/n_0``, far below the multipliers', so
steepest descent steps (capped by their largest entry, ``lr``) and L-BFGS's scalar initial
Hessian barely moved them; the factor balances the two blocks (chosen on the paper's MaxMin
nets, see benchmarks/RESULTS.md)."""
_SCALE_RANGE = 10.0
"""ℓ∞: the per-entry factor ``√(v̄/v_j)`` of the log-parametrised scales is clipped to
``[1/_SCALE_RANGE, _SCALE_RANGE]``: inputs the network (nearly) ignores have ``g_j → 0`` and
would otherwise get unbounded steps."""
_BARRIER = 0.1
"""Weight of the barrier ``Σ_j log(z_jᵀS⁻¹z_j)`` relative to ``width / k``."""
_N_PROBES = 8
"""Number ``k`` of the barrier's probe vectors."""


@dataclass(frozen=True)
class FirstOrderSolution:
    """Raw output of :func:`solve_first_order` (before the float64 verification).

    Attributes
    ----------
    gamma:
        Input-block diagonal ``γ`` (``(n_0,)``, float64): ``ρ·1`` for ℓ2.
    multipliers:
        One ``{name: float64 array}`` dict per stage (the QC's multipliers).
    value:
        ``F`` at the returned point: ``ρ`` (ℓ2) or ``Σγ`` (ℓ∞), computed in the
        working dtype; the caller verifies it in float64.
    status:
        ``OPTIMAL`` when, at the finest smoothing, the smoothed objective
        improved by less than ``tol`` (relative) over the last ``patience``
        iterations; ``INACCURATE`` when, at the finest smoothing, not even a
        steepest-descent step decreased it before that; ``MAX_ITER`` otherwise;
        ``NUMERICAL`` when no iterate could be evaluated.
    n_iter, solve_time, history:
        Iterations, wall time in seconds; ``history["value"]`` is the
        per-iteration ``F``, ``history["evaluations"]`` the running count of
        objective evaluations (line-search trials included), ``history["smoothing"]``
        the relative smoothing width ``s`` of each iteration.
    """

    gamma: np.ndarray
    multipliers: list[dict[str, np.ndarray]]
    value: float
    status: Status
    n_iter: int
    solve_time: float
    history: Mapping[str, list[float]] = field(default_factory=dict, repr=False)


class _DeviceConstants:
    """The program's constant arrays as tensors on one device, converted once (by identity)."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self._cache: dict[int, tuple[np.ndarray, torch.Tensor]] = {}

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        hit = self._cache.get(id(array))
        if hit is None or hit[0] is not array:
            hit = (array, torch.as_tensor(array, dtype=self.dtype, device=self.device))
            self._cache[id(array)] = hit
        return hit[1]


def _positive(values: np.ndarray) -> np.ndarray:
    """``values`` with entries below ``1e-9·max`` raised to it (their logarithm is a start)."""
    floor = 1e-9 * max(float(np.max(values)) if values.size else 0.0, 1e-300)
    return np.maximum(values, floor)


class _Parametrization:
    """Unconstrained ``z`` ↔ the stage multipliers (and, for ℓ∞, the input shape ``g``).

    A nonnegative multiplier (a cvxpy variable declared ``nonneg`` by the QC)
    is ``exp(c·z)``; a free one is ``scale·z`` with ``scale`` the stage's mean
    starting weight; ℓ∞ appends the shape, ``log g = c·z`` (``n_0`` entries).  The
    per-entry scales ``c`` are 1 in ℓ2 and set by :meth:`balance` in ℓ∞.
    """

    def __init__(self, program: Program, starts: Sequence[Mapping[str, np.ndarray]],
                 shape_size: int, device: torch.device, dtype: torch.dtype,
                 start_shape: np.ndarray | None = None):
        self.entries: list[tuple[int, str, int, bool, float]] = []
        initial = []
        for index, (stage, start) in enumerate(zip(program.stages, starts)):
            variables, _ = stage.qc.cvx_multipliers(f"stage{index + 1}")
            scale = float(np.mean([np.mean(v) for v in start.values()]))
            for name, variable in variables.items():
                nonneg = bool(variable.is_nonneg())
                value = np.asarray(start[name], dtype=np.float64).reshape(-1)
                self.entries.append((index, name, value.size, nonneg, scale))
                initial.append(np.log(_positive(value)) if nonneg else value / scale)
        initial.append(np.zeros(shape_size) if start_shape is None else
                       np.log(_positive(start_shape / np.mean(start_shape))))
        self.n_stages, self.shape_size = len(program.stages), shape_size
        self.sizes = [e[2] for e in self.entries] + [shape_size]
        # per part of z: its scales c and, for log-parametrised parts, the base of c
        self.scales = [torch.ones(size, dtype=dtype, device=device) for size in self.sizes]
        self.bases = [1.0 if e[3] else None for e in self.entries] + [_SHAPE_SCALE]
        self.initial = torch.as_tensor(np.concatenate(initial), dtype=dtype, device=device)
        self.initial = self.balance(self.initial)

    def multipliers(self, z: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        parts = torch.split(z, self.sizes)
        result: list[dict[str, torch.Tensor]] = [{} for _ in range(self.n_stages)]
        for (index, name, _, nonneg, scale), part, c in zip(self.entries, parts, self.scales):
            result[index][name] = torch.exp(c * part) if nonneg else scale * part
        return result

    @property
    def shape_scale(self) -> torch.Tensor:
        """The shape's scales ``c`` (``log g = c·z_shape``)."""
        return self.scales[-1]

    def log_shape(self, z: torch.Tensor) -> torch.Tensor:
        """``log g = c·z_shape`` (ℓ∞; empty for ℓ2)."""
        return self.shape_scale * z[z.shape[0] - self.shape_size:]

    def balance(self, z: torch.Tensor) -> torch.Tensor:
        """ℓ∞: reset the scales ``c`` at the point ``z``; ``z`` in the new coordinates.

        Per log-parametrised part (a nonnegative multiplier array, the shape) with
        values ``v = exp(c·z)``: ``c_j = base·√(v̄/v_j)`` (``v̄`` the part's mean, the
        factor clipped to ``[1/_SCALE_RANGE, _SCALE_RANGE]``; ``base`` 1, the shape's
        ``_SHAPE_SCALE``), a diagonal preconditioner (module doc).  The same point
        ``(μ, g)``; only the coordinates change, so the caller clears its L-BFGS memory.
        ℓ2 (no shape) keeps ``c = 1``.
        """
        if not self.shape_size:
            return z
        parts = list(torch.split(z, self.sizes))
        for k, base in enumerate(self.bases):
            if base is None or parts[k].numel() == 0:
                continue
            log_value = self.scales[k] * parts[k]
            relative = torch.exp(log_value - log_value.max())
            factor = torch.sqrt(relative.mean() / relative).clamp(1 / _SCALE_RANGE, _SCALE_RANGE)
            self.scales[k] = base * factor
            parts[k] = log_value / self.scales[k]
        return torch.cat(parts)

    def pullback(self, multipliers: Sequence[Mapping[str, torch.Tensor]],
                 grads: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
        """``∇_z`` from the gradients ``grads`` w.r.t. the ``multipliers`` of ``z`` (zeros on
        the shape): ``c·t·∂/∂t`` for ``t = exp(c·z)``, ``scale·∂/∂μ`` for a free one."""
        parts = [grads[index][name].reshape(-1) * (c * multipliers[index][name].reshape(-1)
                                                   if nonneg else scale)
                 for (index, name, _, nonneg, scale), c in zip(self.entries, self.scales)]
        return torch.cat([*parts, self.scales[-1].new_zeros(self.shape_size)])

    def numpy_multipliers(self, z: torch.Tensor) -> list[dict[str, np.ndarray]]:
        return [{name: v.detach().to("cpu", torch.float64).numpy() for name, v in m.items()}
                for m in self.multipliers(z)]


def _sector(stage: Stage, number: int) -> tuple[np.ndarray, np.ndarray]:
    """The stage's slopes ``[α, β]``, or :class:`UnsupportedError` when it has none."""
    sector = stage.qc.sector()
    _, constraints = stage.qc.cvx_multipliers("probe")
    if sector is None or constraints:
        raise UnsupportedError(
            f"method='first-order': stage {number} ({stage.label or type(stage.qc).__name__}) "
            f"uses {type(stage.qc).__name__}, which declares no sector (slopes [α, β]) or "
            "constrains its multipliers beyond their signs; use method='lipsdp'")
    return sector


def _spectral_norm_squared(terms: Mapping[int, np.ndarray], device: torch.device) -> float:
    stacked = torch.as_tensor(np.hstack([terms[k] for k in sorted(terms)]), dtype=torch.float64,
                              device=device)
    return float(torch.linalg.matrix_norm(stacked, ord=2)) ** 2


def initial_multipliers(program: Program, margin: float = 0.05,
                        device: str | torch.device | None = None
                        ) -> tuple[list[np.ndarray], float]:
    """A strictly feasible point ``(t_s, ρ)`` of the ℓ2 LMI, stage by stage.

    ``t_s`` are weights of the stages' sector QCs
    (:meth:`~certopt.sdp.program.QuadraticConstraint.sector`, constant per
    stage); ``stage.qc.sector_multipliers(t_s)`` are the multipliers.
    Per neuron with slopes ``[α, β]`` (``m = (α+β)/2``, ``r = (β−α)/2``) the
    S-procedure gives ``−τ q(c, φ) >= φ² − κ c²`` with ``τ = 1 + |m|/r`` and
    ``κ = (|m| + r)²``.  With ``a_s = ‖[C_s]‖₂²`` and stage weights
    ``w_s = (a_out[s] + Σ_{u: s feeds u} w_u κ_u a_u)/(1 − margin)``
    (backwards), the multipliers ``t_s = w_s τ`` make ``−K_φφ ⪰ margin·diag(w)``
    and ``ρ = a_out[0] + Σ_{u: x feeds u} w_u κ_u a_u`` feasible.  Spectral
    norms are computed with torch on ``device`` (default CPU).
    """
    dev = resolve_device(device)
    stages = program.stages
    n_seg = len(stages) + 1
    load = np.zeros(n_seg)
    a_out = _spectral_norm_squared(program.output.terms, dev)
    for k in program.output.terms:
        load[k] += a_out
    taus, weights = [], np.zeros(n_seg)
    for s in range(len(stages), 0, -1):
        alpha, beta = _sector(stages[s - 1], s)
        m, r = 0.5 * np.abs(alpha + beta), 0.5 * (beta - alpha)
        r_safe = np.maximum(r, 1e-3 * np.maximum(m, 1e-12))
        taus.append(1.0 + m / r_safe)
        kappa = float(np.max((m + r) ** 2))
        weights[s] = max(load[s], 1e-6 * max(load.max(), 1.0)) / (1.0 - margin)
        a_s = _spectral_norm_squared(stages[s - 1].pre.terms, dev)
        for k in stages[s - 1].pre.terms:
            load[k] += weights[s] * kappa * a_s
    taus.reverse()
    multipliers = [weights[s] * taus[s - 1] for s in range(1, n_seg)]
    return multipliers, float(load[0]) * (1.0 + margin)


def _form_trace(form: QCForm, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``tr([H; P]ᵀ [[pre_pre, pre_out], [pre_outᵀ, out_out]] [H; P])`` (H = pre, P = out)."""

    def bilinear(block: object, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        if block is None:
            return left.new_zeros(())
        if block.ndim == 1:
            return (block[:, None] * left * right).sum()
        return (left * (block @ right)).sum()

    return (bilinear(form.pre_pre, pre, pre) + 2 * bilinear(form.pre_out, pre, out)
            + bilinear(form.out_out, out, out))


def _is_diagonal(block: torch.Tensor) -> bool:
    return not bool(torch.count_nonzero(block - torch.diag(torch.diagonal(block))))


def _diagonal_prefix(matrix: torch.Tensor, program: Program) -> int:
    """Size of the longest run of leading activation segments on which ``matrix`` is diagonal."""
    prefix = 0
    for size in program.segment_sizes[1:]:
        if not _is_diagonal(matrix[:prefix + size, :prefix + size]):
            break
        prefix += size
    return prefix


class _BlockCholesky:
    """``S = L Lᵀ`` with ``L = [[√d, 0], [Bᵀ/√d, L_C]]`` for ``S = [[diag(d), B], [Bᵀ, C]]``.

    ``L_C`` is the Cholesky factor of the Schur complement ``C − Bᵀ diag(d)⁻¹ B``.
    For a ReLU network the first hidden layer's block is diagonal (``t_1``),
    so a ``2n``-order factorisation becomes two ``n``-order products and an
    ``n``-order Cholesky (half the flops).  ``prefix = 0`` is plain Cholesky.
    """

    def __init__(self, diagonal: torch.Tensor, coupling: torch.Tensor, lower: torch.Tensor):
        self.root, self.coupling, self.lower = torch.sqrt(diagonal), coupling, lower
        self.inverse = 1.0 / diagonal
        self.order = diagonal.shape[0] + lower.shape[0]

    @classmethod
    def factor(cls, matrix: torch.Tensor, prefix: int) -> _BlockCholesky | None:
        """The factorisation, or ``None`` when ``matrix`` is not positive definite.

        ``matrix[:prefix, :prefix]`` is checked to be diagonal (else ``prefix = 0``).
        """
        if prefix and not _is_diagonal(matrix[:prefix, :prefix]):
            prefix = 0
        diagonal = torch.diagonal(matrix[:prefix, :prefix])
        if prefix and not bool((diagonal > 0).all()):
            return None
        coupling = matrix[:prefix, prefix:]
        schur = matrix[prefix:, prefix:] - coupling.T @ (coupling / diagonal[:, None])
        lower, info = torch.linalg.cholesky_ex(schur)
        return None if int(info) != 0 else cls(diagonal, coupling, lower)

    def solve_lower(self, rhs: torch.Tensor) -> torch.Tensor:
        """``L⁻¹ rhs``."""
        head, tail = rhs[:self.root.shape[0]], rhs[self.root.shape[0]:]
        tail = tail - self.coupling.T @ (self.inverse[:, None] * head)
        return torch.cat([head / self.root[:, None],
                          torch.linalg.solve_triangular(self.lower, tail, upper=False)])

    def solve_upper(self, rhs: torch.Tensor) -> torch.Tensor:
        """``L⁻ᵀ rhs``."""
        head, tail = rhs[:self.root.shape[0]], rhs[self.root.shape[0]:]
        tail = torch.linalg.solve_triangular(self.lower.T, tail, upper=True)
        head = head / self.root[:, None] - self.inverse[:, None] * (self.coupling @ tail)
        return torch.cat([head, tail])


class _Evaluation:
    """``F``, the smoothed objective and its gradient at one point ``z`` (module doc)."""

    def __init__(self, program: Program, param: _Parametrization, norm: float,
                 device: torch.device, dtype: torch.dtype, basis: np.ndarray | None = None):
        self.program, self.param, self.norm = program, param, norm
        self.constants = _DeviceConstants(device, dtype)
        self.n0 = program.input_dim
        self.basis = None if basis is None else torch.as_tensor(basis, dtype=dtype, device=device)
        self.zero_weight = torch.zeros(self.n0, dtype=dtype, device=device)
        self.probes: torch.Tensor | None = None
        self.diagonal_prefix: int | None = None  # found on the first evaluation
        self.matrix: torch.Tensor | None = None  # the dense LMI, refilled by every evaluation

    def __call__(self, z: torch.Tensor, width: float | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
        """``(smoothed objective, gradient, F)``; ``width=None``: ``F`` only; ``F = inf`` if
        ``S(μ)`` is not positive definite."""
        n0, program = self.n0, self.program
        with torch.no_grad():
            blocks = lmi_blocks(program, self.zero_weight, self.param.multipliers(z),
                                convert=self.constants)
            matrix = self.matrix = assemble_numpy(program, blocks, self.matrix)
            if self.diagonal_prefix is None:
                self.diagonal_prefix = _diagonal_prefix(matrix[n0:, n0:], program)
            chol = _BlockCholesky.factor(matrix[n0:, n0:], self.diagonal_prefix)
            if chol is None:
                return None, None, math.inf
            y = chol.solve_lower(matrix[n0:, :n0])
            r_mat = y.T @ y - matrix[:n0, :n0]
            total, lift = 1.0, None
            if self.norm == math.inf:
                shape = torch.exp(self.param.log_shape(z))
                total = float(shape.sum())
                lift = self._shape_factor(shape)
                r_mat = lift.T @ r_mat @ lift
            eig, vec = torch.linalg.eigh(0.5 * (r_mat + r_mat.T))
            top = eig[-1]
            value = total * float(top)
            if lift is not None and self.basis is not None and value < 0:
                value = 0.0  # the full input space has zero eigenvalues outside the basis
            if not math.isfinite(value):
                return None, None, math.inf
            if width is None:
                return None, None, value
            # smooth F = total·λ_max itself (width w on F's scale, not on λ_max's): the
            # smoothed objective w·log Σ_i exp(total·λ_i/w) is then invariant to g → c·g
            logits = total * (eig - top) / width
            weights = torch.softmax(logits, dim=0)
            smooth = value + width * torch.logsumexp(logits, dim=0)
            keep = weights > 1e-14
            directions = vec[:, keep] * torch.sqrt(total * weights[keep])
            if lift is not None:
                directions = lift @ directions
            rest = -chol.solve_upper(y @ directions)
            # barrier β Σ_j log(z_jᵀS⁻¹z_j) (fixed probes z_j; ≈ −β k log λ_min(S) near the
            # boundary), β = _BARRIER·width/k: its gradient −β Σ_j u_jᵀ dS u_j / q_j
            # (u_j = S⁻¹z_j, q_j = z_jᵀu_j) is the same trace with the columns √(β/q_j)·u_j
            if chol.order:
                probes = self._probes(chol.order, z)
                half = chol.solve_lower(probes)
                solved = chol.solve_upper(half)
                quadratic = (half ** 2).sum(dim=0)
                beta = _BARRIER * width / probes.shape[1]
                smooth = smooth + beta * torch.log(quadratic).sum()
                rest = torch.cat([rest, solved * torch.sqrt(beta / quadratic)], dim=1)
                directions = torch.cat([directions, directions.new_zeros((n0, _N_PROBES))], dim=1)
            columns = [directions, *torch.split(rest, list(program.segment_sizes[1:]))]
        grad = self._multiplier_gradient(z, columns)
        if self.norm == math.inf:
            # F_i = (Σg)·λ_i: ∂/∂log g_j = g_j λ_i − (Σg) λ_i v_ij², v_i the eigenvector of
            # G^{-1/2} R G^{-1/2} in the full input space: v_i = G^{-1/2} Q L^{-T} u_i
            # (only the eigenvectors the softmax weighs: the others add < 1e-14 relative)
            top_vec, top_weighted = vec[:, keep], (weights * eig)[keep]
            if self.basis is None:
                squares = top_vec ** 2
            else:
                full = self.basis @ torch.linalg.solve_triangular(lift.T, top_vec, upper=True)
                squares = full ** 2 / shape[:, None]
            shape_grad = shape * (weights @ eig) - total * (squares @ top_weighted)
            grad[grad.shape[0] - shape.shape[0]:] += self.param.shape_scale * shape_grad
        return smooth, grad, value

    def _shape_factor(self, shape: torch.Tensor) -> torch.Tensor:
        """``L`` with ``L Lᵀ = Qᵀ G⁻¹ Q`` (``Q`` the input basis, ``G = diag(shape)``).

        ``Lᵀ R L`` has the nonzero eigenvalues of ``G^{-1/2} Q R Qᵀ G^{-1/2}``, the
        ℓ∞ matrix of the full input space, at the cost of the reduced input's order;
        without a basis (``Q = I``) ``L = G^{-1/2}``.
        """
        if self.basis is None:
            return torch.diag(torch.rsqrt(shape))
        return torch.linalg.cholesky(self.basis.T @ (self.basis / shape[:, None]))

    def _probes(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """The barrier's fixed Gaussian probes, ``(size, _N_PROBES)`` (seeded, made once)."""
        if self.probes is None:
            generator = torch.Generator(device=like.device).manual_seed(0)
            self.probes = torch.randn((size, _N_PROBES), generator=generator,
                                      dtype=like.dtype, device=like.device)
        return self.probes

    def _multiplier_gradient(self, z: torch.Tensor, columns: Sequence[torch.Tensor]
                             ) -> torch.Tensor:
        """``∇_z Σ_s tr([C_s Z; Z_s]ᵀ S_s(μ(z)) [C_s Z; Z_s])`` for the fixed low-rank ``Z``:
        from the stages' closed forms (:meth:`~certopt.sdp.program.QuadraticConstraint.
        trace_gradient`) when every stage has one, else by autograd through their forms."""
        stages = self.program.stages
        pres = [sum(self.constants(block) @ columns[k] for k, block in stage.pre.terms.items())
                for stage in stages]
        multipliers = self.param.multipliers(z)
        closed = [stage.qc.trace_gradient(mult, pre, columns[index + 1])
                  for index, (stage, mult, pre) in enumerate(zip(stages, multipliers, pres))]
        if all(grads is not None for grads in closed):
            return self.param.pullback(multipliers, closed)
        z = z.detach().requires_grad_(True)
        total = z.new_zeros(())
        for index, (stage, mult, pre) in enumerate(zip(stages, self.param.multipliers(z), pres)):
            total = total + _form_trace(stage.qc.form(mult, operator.mul), pre, columns[index + 1])
        if not total.requires_grad:  # no multipliers (a linear network)
            return torch.zeros_like(z)
        (grad,) = torch.autograd.grad(total, z, allow_unused=True)
        return torch.zeros_like(z) if grad is None else grad


def solve_first_order(
    program: Program,
    norm: float = 2,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    max_iter: int = 3000,
    tol: float = 1e-5,
    patience: int = 20,
    lr: float = 0.05,
    verbose: bool = False,
    start: tuple[np.ndarray, Sequence[Mapping[str, np.ndarray]]] | None = None,
) -> FirstOrderSolution:
    """Minimise the LipSDP objective of ``program`` with the Schur-complement method.

    Parameters
    ----------
    program:
        A compiled network whose stage QCs declare a
        :meth:`~certopt.sdp.program.QuadraticConstraint.sector` (every built-in QC).
    norm:
        ``2`` (bound ``√ρ`` on ``L_2``) or ``math.inf`` (bound ``√Σγ`` on ``L_{∞→2}``).
    device, dtype:
        Where and in which precision the iterations run (default CPU, float64).
        float32 makes an evaluation cheaper but needs more of them (Armijo
        steps fail on round-off); the bound is verified in float64 either way.
    max_iter:
        Iteration limit.
    tol, patience:
        At the finest smoothing, stop when the smoothed objective improved by
        less than ``tol`` (relative) over the last ``patience`` iterations.
    lr:
        Largest change of a log-parameter on a (restarted) gradient step;
        L-BFGS steps start at 1 and are halved by the line search.
    verbose:
        Show a progress bar.
    start:
        ``(γ, multipliers)`` of a feasible point to start from, e.g.
        :func:`certopt.sdp.fast.solve_fast`'s (its ``γ`` gives the ℓ∞ shape ``g``);
        default :func:`initial_multipliers`.  Nonnegative multipliers are
        raised to ``1e-9`` times the stage's largest.

    Returns
    -------
    FirstOrderSolution
        The best point found; its value still has to pass the float64
        verification (section 6) before it is reported as a bound.
    """
    started = time.perf_counter()
    if norm not in (2, math.inf):
        raise InputValueError(f"norm: expected 2 or inf, got {norm!r}")
    max_iter = int(check_scalar(max_iter, "max_iter", low=1, integer=True))
    patience = int(check_scalar(patience, "patience", low=1, integer=True))
    tol = check_scalar(tol, "tol", low=0)
    lr = check_scalar(lr, "lr", low=0, low_inclusive=False)
    dev = resolve_device(device)
    working, basis = reduced_input(program)
    if start is None:
        start_weights, _ = initial_multipliers(program, device=dev)
        starts = [stage.qc.sector_multipliers(t)
                  for stage, t in zip(program.stages, start_weights)]
        start_shape = None
    else:
        starts = list(start[1])
        start_shape = np.asarray(start[0], dtype=np.float64) if norm == math.inf else None
        if start_shape is not None and not (np.all(np.isfinite(start_shape))
                                            and np.max(start_shape) > 0):
            start_shape = None
    param = _Parametrization(working, starts, program.input_dim if norm == math.inf else 0,
                             dev, dtype, start_shape)
    evaluate = _Evaluation(working, param, norm, dev, dtype, basis)
    z = param.initial.clone()
    n_evaluations = 0

    def counted(point: torch.Tensor, width: float | None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
        nonlocal n_evaluations
        n_evaluations += 1
        return evaluate(point, width)

    best_value, best_point = math.inf, z.clone()
    history: list[float] = []
    evaluations: list[float] = []
    widths: list[float] = []
    warm = start is not None and norm == 2
    n_iter, status, smoothing = 0, Status.MAX_ITER, _SMOOTH0_WARM if warm else _SMOOTH0
    _, _, first_value = counted(z, None)
    width = smoothing * abs(first_value)
    objective, grad, value = counted(z, width) if math.isfinite(first_value) else (None,) * 3
    level: list[float] = []  # smoothed objective since the smoothing was last refined
    memory = LBFGSMemory(10)
    line_search_failed = False
    with progress(max_iter, verbose, desc="first-order LipSDP") as bar:
        for iteration in range(1, max_iter + 1):
            if objective is None:
                break  # the starting point failed: NUMERICAL below
            n_iter = iteration
            if value < best_value:
                best_value, best_point = value, z.clone()
            history.append(value)
            evaluations.append(n_evaluations)
            widths.append(smoothing)
            level.append(float(objective))
            if z.numel() == 0:  # nothing to optimise (a linear network in ℓ2)
                status = Status.OPTIMAL
                break
            final = smoothing <= _SMOOTH_END * 1.0001
            level_tol = (tol if final else max(tol, _LEVEL_TOL * smoothing)) * abs(best_value)
            window = patience if final else max(1, int(_COARSE_PATIENCE * patience))
            stalled = len(level) > window and level[-window - 1] - level[-1] <= level_tol
            if stalled or line_search_failed:
                if final:
                    status = Status.OPTIMAL if stalled else Status.INACCURATE
                    break
                line_search_failed = False
                smoothing = max(smoothing * _SMOOTH_FACTOR, _SMOOTH_END)
                width = smoothing * abs(best_value)
                best_point = param.balance(best_point)
                z = best_point.clone()
                memory.clear()
                objective, grad, value = counted(z, width)
                level = []
                continue
            direction = -memory.apply(grad)
            slope = float(grad @ direction)
            if slope >= 0:
                memory.clear()
                direction = -grad
                slope = float(grad @ direction)
            step = 1.0 if memory else min(1.0, lr / float(direction.abs().max()))
            for _ in range(60):  # Armijo backtracking; also keeps S ≻ 0
                trial = z + step * direction
                new_objective, new_grad, new_value = counted(trial, width)
                if new_objective is not None and \
                        float(new_objective) <= float(objective) + 1e-4 * step * slope:
                    break
                step *= 0.5
            else:  # no decrease: restart from the gradient, or refine the smoothing
                line_search_failed = not memory
                memory.clear()
                continue
            memory.push(trial - z, new_grad - grad)
            z, objective, grad, value = trial, new_objective, new_grad, new_value
            bar.update(value=best_value)
    if not math.isfinite(best_value):
        status = Status.NUMERICAL
    if status is not Status.OPTIMAL:
        warnings.warn(f"first-order LipSDP stopped with status {status.value} after "
                      f"{n_iter} iterations; the bound is verified but may be loose",
                      ConvergenceWarning, stacklevel=2)
    weights = (torch.exp(param.log_shape(best_point)) if norm == math.inf
               else torch.ones(program.input_dim, dtype=dtype))
    gamma = (best_value / float(weights.sum()) if norm == math.inf else best_value) * weights
    return FirstOrderSolution(
        gamma=gamma.detach().to("cpu", torch.float64).numpy(),
        multipliers=param.numpy_multipliers(best_point),
        value=best_value, status=status, n_iter=n_iter,
        solve_time=time.perf_counter() - started,
        history={"value": history, "evaluations": evaluations, "smoothing": widths},
    )
