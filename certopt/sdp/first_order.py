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
section 6 that the caller runs on the returned multipliers).  Nonnegative
multipliers are parameterised as ``exp(η)`` (and ``g = exp(ζ)``); ``λ_max`` is
smoothed by a log-sum-exp over the spectrum (temperature ``10⁻³|F|``,
refined to ``10⁻⁵|F|`` as the iterates settle); L-BFGS takes the steps with
an Armijo backtracking line search that also keeps ``S ≻ 0`` (the optimum
often lies on the boundary of that domain, e.g. for orthogonal MaxMin nets).
The starting point
is a strictly feasible, naive-bound-like certificate built stage by stage
(:func:`initial_multipliers`).

Cost per iteration: one Cholesky of order ``Σ_s n_s``, one triangular solve
with ``n_0`` right-hand sides and one symmetric eigendecomposition of order
``n_0``, plus the backward pass; all in torch, on any device.
"""

from __future__ import annotations

import math
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
from certopt.sdp.program import LinearExpr, Program, SlopeRestricted, Stage

__all__ = ["FirstOrderSolution", "initial_multipliers", "solve_first_order"]


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
        ``OPTIMAL`` when the best value improved by less than ``tol`` (relative)
        over the last ``patience`` iterations, ``MAX_ITER`` otherwise,
        ``NUMERICAL`` when no iterate could be evaluated.
    n_iter, solve_time, history:
        Iterations, wall time in seconds, per-iteration ``value`` trace.
    """

    gamma: np.ndarray
    multipliers: list[dict[str, np.ndarray]]
    value: float
    status: Status
    n_iter: int
    solve_time: float
    history: Mapping[str, list[float]] = field(default_factory=dict, repr=False)


class _TorchLMI:
    """``K(μ)`` of a program, assembled block by block in torch (autograd-friendly)."""

    def __init__(self, program: Program, device: torch.device, dtype: torch.dtype):
        for s, stage in enumerate(program.stages, start=1):
            if not isinstance(stage.qc, SlopeRestricted):
                raise UnsupportedError(
                    f"method='first-order': stage {s} ({stage.label or type(stage.qc).__name__}) "
                    f"uses {type(stage.qc).__name__}; the first-order solver supports "
                    "slope-restricted stages (use groupsort='network' for GroupSort)")
        self.program = program
        self.sizes = program.segment_sizes
        self.offsets = np.concatenate(([0], np.cumsum(self.sizes))).tolist()
        self.device, self.dtype = device, dtype

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=dtype, device=device)

        self.pre = [{k: tensor(b) for k, b in st.pre.terms.items()} for st in program.stages]
        self.coef = [(tensor(-st.qc.alpha * st.qc.beta), tensor(0.5 * (st.qc.alpha + st.qc.beta)))
                     for st in program.stages]
        self.has_pre_pre = [bool(np.any(st.qc.alpha * st.qc.beta != 0)) for st in program.stages]
        out = np.zeros((program.output_dim, program.state_dim))
        for k, block in program.output.terms.items():
            out[:, self.offsets[k]:self.offsets[k + 1]] = block
        out_t = tensor(out)
        self.base = out_t.T @ out_t

    def slice(self, segment: int) -> slice:
        return slice(self.offsets[segment], self.offsets[segment + 1])

    def matrix(self, multipliers: Sequence[torch.Tensor]) -> torch.Tensor:
        """``K(μ)`` for per-stage multiplier vectors ``t_s`` (the slope QC weights)."""
        k_mat = self.base.clone()
        for s, (terms, (pp, po), t) in enumerate(zip(self.pre, self.coef, multipliers), start=1):
            own = self.slice(s)
            pre_pre, pre_out = pp * t, po * t
            for a, c_a in terms.items():
                if self.has_pre_pre[s - 1]:
                    for b, c_b in terms.items():
                        k_mat[self.slice(a), self.slice(b)] += c_a.T @ (pre_pre[:, None] * c_b)
                cross = c_a.T * pre_out
                k_mat[self.slice(a), own] += cross
                k_mat[own, self.slice(a)] += cross.T
            k_mat[own, own] -= torch.diag(t)
        return k_mat


def initial_multipliers(program: Program, margin: float = 0.05
                        ) -> tuple[list[np.ndarray], float]:
    """A strictly feasible point ``(t_s, ρ)`` of the ℓ2 LMI, stage by stage.

    Per neuron with slopes ``[α, β]`` (``m = (α+β)/2``, ``r = (β−α)/2``) the
    S-procedure gives ``−τ q(c, φ) >= φ² − κ c²`` with ``τ = 1 + |m|/r`` and
    ``κ = (|m| + r)²``.  With ``a_s = ‖[C_s]‖₂²`` and stage weights
    ``w_s = (a_out[s] + Σ_{u: s feeds u} w_u κ_u a_u)/(1 − margin)``
    (backwards), the multipliers ``t_s = w_s τ`` make ``−K_φφ ⪰ margin·diag(w)``
    and ``ρ = a_out[0] + Σ_{u: x feeds u} w_u κ_u a_u`` feasible.
    """
    stages = program.stages
    n_seg = len(stages) + 1

    def norm2(terms: Mapping[int, np.ndarray]) -> float:
        return float(np.linalg.norm(np.hstack([terms[k] for k in sorted(terms)]), 2) ** 2)

    load = np.zeros(n_seg)
    a_out = norm2(program.output.terms)
    for k in program.output.terms:
        load[k] += a_out
    taus, weights = [], np.zeros(n_seg)
    for s in range(len(stages), 0, -1):
        qc = stages[s - 1].qc
        m, r = 0.5 * np.abs(qc.alpha + qc.beta), 0.5 * (qc.beta - qc.alpha)
        r_safe = np.maximum(r, 1e-3 * np.maximum(m, 1e-12))
        taus.append(1.0 + m / r_safe)
        kappa = float(np.max((m + r) ** 2))
        weights[s] = max(load[s], 1e-6 * max(load.max(), 1.0)) / (1.0 - margin)
        a_s = norm2(stages[s - 1].pre.terms)
        for k in stages[s - 1].pre.terms:
            load[k] += weights[s] * kappa * a_s
    taus.reverse()
    multipliers = [weights[s] * taus[s - 1] for s in range(1, n_seg)]
    return multipliers, float(load[0]) * (1.0 + margin)


def solve_first_order(
    program: Program,
    norm: float = 2,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
    max_iter: int = 500,
    tol: float = 1e-4,
    patience: int = 20,
    lr: float = 0.05,
    verbose: bool = False,
) -> FirstOrderSolution:
    """Minimise the LipSDP objective of ``program`` with the Schur-complement method.

    Parameters
    ----------
    program:
        A compiled network whose stages are all slope-restricted.
    norm:
        ``2`` (bound ``√ρ`` on ``L_2``) or ``math.inf`` (bound ``√Σγ`` on ``L_{∞→2}``).
    device, dtype:
        Where and in which precision the iterations run (default CPU, float64).
    max_iter:
        Iteration limit.
    tol, patience:
        Stop when the best value improved by less than ``tol`` (relative) over
        the last ``patience`` iterations.
    lr:
        Largest change of a log-parameter on a (restarted) gradient step;
        L-BFGS steps start at 1 and are halved by the line search.
    verbose:
        Show a progress bar.

    Returns
    -------
    FirstOrderSolution
        The best point found; its value still has to pass the float64
        verification (section 6) before it is reported as a bound.
    """
    start = time.perf_counter()
    if norm not in (2, math.inf):
        raise InputValueError(f"norm: expected 2 or inf, got {norm!r}")
    max_iter = int(check_scalar(max_iter, "max_iter", low=1, integer=True))
    patience = int(check_scalar(patience, "patience", low=1, integer=True))
    tol = check_scalar(tol, "tol", low=0)
    lr = check_scalar(lr, "lr", low=0, low_inclusive=False)
    dev = resolve_device(device)
    lmi = _TorchLMI(_reduced_input(program) if norm == 2 else program, dev, dtype)
    n0 = lmi.program.input_dim

    init_t, _ = initial_multipliers(program)
    sizes = [len(t) for t in init_t] + ([n0] if norm == math.inf else [])
    z = torch.tensor(np.concatenate([np.log(t) for t in init_t]
                                    + ([np.zeros(n0)] if norm == math.inf else [])),
                     dtype=dtype, device=dev)

    def evaluate(point: torch.Tensor, width: float | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
        """Smoothed objective, its gradient (``width=None``: value only) and ``F``."""
        point = point.detach().requires_grad_(width is not None)
        parts = list(torch.split(point, sizes))
        k_mat = lmi.matrix([torch.exp(v) for v in parts[:len(init_t)]])
        k_xx, k_phx = k_mat[:n0, :n0], k_mat[n0:, :n0]
        if k_mat.shape[0] > n0:
            chol, info = torch.linalg.cholesky_ex(-k_mat[n0:, n0:])
            if int(info) != 0:
                return None, None, math.inf
            y = torch.linalg.solve_triangular(chol, k_phx, upper=False)
            r_mat = k_xx + y.T @ y
        else:
            r_mat = k_xx
        total = torch.ones((), dtype=dtype, device=dev)
        if norm == math.inf:
            scale = torch.exp(-0.5 * parts[-1])
            r_mat = scale[:, None] * r_mat * scale[None, :]
            total = torch.exp(parts[-1]).sum()
        eig = torch.linalg.eigvalsh(0.5 * (r_mat + r_mat.T))
        value = float(total.detach() * eig[-1].detach())
        if not math.isfinite(value):
            return None, None, math.inf
        if width is None:
            return None, None, value
        top = eig[-1].detach()
        smooth = total * (top + width * torch.logsumexp((eig - top) / width, dim=0))
        (grad,) = torch.autograd.grad(smooth, point)
        return smooth.detach(), grad, value

    best_value, best_point = math.inf, z.clone()
    history: list[float] = []
    smoothing, n_iter, status = 1e-3, 0, Status.MAX_ITER
    _, _, first_value = evaluate(z, None)
    width = smoothing * abs(first_value)
    objective, grad, value = evaluate(z, width) if math.isfinite(first_value) else (None,) * 3
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
            stalled = len(history) > patience and \
                history[-patience - 1] - best_value <= tol * best_value
            if stalled or line_search_failed:
                line_search_failed = False
                if smoothing <= 1e-5:
                    status = Status.OPTIMAL
                    break
                smoothing *= 0.1
                width = smoothing * abs(best_value)
                z = best_point.clone()
                memory.clear()
                objective, grad, value = evaluate(z, width)
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
                new_objective, new_grad, new_value = evaluate(trial, width)
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
    parts = torch.split(best_point, sizes)
    weights = (torch.exp(parts[-1]) if norm == math.inf
               else torch.ones(program.input_dim, dtype=dtype))
    gamma = (best_value / float(weights.sum()) if norm == math.inf else best_value) * weights
    return FirstOrderSolution(
        gamma=gamma.detach().to("cpu", torch.float64).numpy(),
        multipliers=[{"t": torch.exp(v).to("cpu", torch.float64).numpy()}
                     for v in parts[:len(init_t)]],
        value=best_value, status=status, n_iter=n_iter,
        solve_time=time.perf_counter() - start, history={"value": history},
    )


def _reduced_input(program: Program) -> Program:
    """The same program on ``x̃ = Qᵀx``, ``Q`` an orthonormal basis of the input's row space.

    Every quantity depends on ``x`` through ``C_k[0] x = C_k[0] Q Qᵀ x``, so in
    ℓ2 the LMI's input block lives in ``range(Q)`` and ``ρ`` and the
    multipliers are unchanged: a 784-input net with a 16-wide first layer
    gives a 16-dimensional eigenproblem instead of a 784-dimensional one.
    """
    exprs = [stage.pre for stage in program.stages] + [program.output]
    blocks = [e.terms[0] for e in exprs if 0 in e.terms]
    _, singular, vh = np.linalg.svd(np.vstack(blocks), full_matrices=False)
    rank = int(np.sum(singular > singular[0] * 1e-13)) if singular.size else 0
    if rank >= 0.75 * program.input_dim:
        return program
    basis = vh[:max(rank, 1)].T

    def project(expr: LinearExpr) -> LinearExpr:
        terms = {k: (b @ basis if k == 0 else b) for k, b in expr.terms.items()}
        return LinearExpr(expr.shape, terms)

    stages = tuple(Stage(project(st.pre), st.qc, st.label) for st in program.stages)
    return Program((basis.shape[1],), stages, project(program.output))
