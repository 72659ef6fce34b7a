"""ADMM for the convex ReLU program (math note, section 5), in torch on any device.

Splitting, with u = (v, w) stacked as a (2, P, d) tensor:

    minimize   L(z) + lam sum_i ||s_i|| + 1_{>=0}(t)
    subject to z = F u,   s = u,   t = G u

where F u = sum_i D_i X (v_i - w_i) and G u = gamma (S_i X v_i, S_i X w_i),
gamma = ``options.cone_weight`` (1 by default).  With scaled duals a (n),
b (2, P, d), c (2, P, n) the iteration is a fixed-point map p -> T(p) on the
points fed to the proximal steps, p = (z + a, s + b, t + c):

1. prox: z = prox_{L/rho}(p_z), s = group soft-thresholding of p_s at lam / rho,
   t = (p_t)_+, and the duals a = p_z - z, b = p_s - s, c = p_t - t;
2. u = (c_F F^T F + I + G^T G)^{-1} (c_F F^T e + (s - b) + G^T (t - c));
3. T(p) = (F^ + a, u^ + b, G^ + c) with the over-relaxed F^ = alpha F u + (1 -
   alpha) z, u^ = alpha u + (1 - alpha) s, G^ = alpha G u + (1 - alpha) t
   (Boyd et al. 2011, section 3.4.3; alpha = RELAXATION).

The t part (2 P n numbers) dominates the memory traffic, so a step never
forms prox(p) there: its reflection 2 (p_t)_+ - p_t is |p_t| (G^T reads
gamma S |p_t| = gamma copysign(p_t, S)) and T(p)_t = p_t - alpha (p_t)_+ +
alpha G u, a few passes into reused buffers.  For the squared loss there is
no z: the loss is folded into step 2 with c_F = 1/(n rho) and e = y (the seed
paper's form); otherwise c_F = 1 and e = z - a.

Options (:class:`~certopt.convexnn.problem.SolverOptions`): Anderson
acceleration (``anderson_memory``, safeguarded type-II on T^ANDERSON_INTERVAL,
:mod:`certopt.core.anderson`); adaptive rho (``adaptive_rho``, the OSQP rule
clipped to RHO_MAX_FACTOR, and raised when a certified network falls below the
bound, off by default because the residual balance did not predict the fastest
rho of single solves; :func:`path_options` turns it on along paths); the cone
weight gamma (a penalty gamma^2 rho on the cone constraints).  The figures
behind these defaults are in benchmarks/RESULTS.md.

Mixed precision (``mixed_precision``, on by default, :func:`solve_admm_from`):
on float64 data at tol >= MIXED_PRECISION_MIN_TOL and with at least
MIXED_PRECISION_MIN_ENTRIES pattern entries the iterations run first on a
float32 copy of the data (half the bytes per product and pass), their
certificate checks computed in float64, and the solve goes on in float64 from
the float32 state when float32 stalls before certifying tol.

The u-system (step 2), two solvers (``options.linear_solver``):

* ``"direct"``: the Woodbury identity.  With K = I + gamma^2 X^T X, G^T G is
  block diagonal with blocks gamma^2 X^T X, and F (I + G^T G)^{-1} F^T =
  2 (X K^{-1} X^T) o (D^T D) (n x n), so one d x d inverse and the inverse of
  I + c_F F (I + G^T G)^{-1} F^T are computed up front (and again when rho
  changes c_F); an iteration is then a few batched (P x n) by (n x d) products.
* ``"cg"``: matrix free, for large n: preconditioned conjugate gradients on the
  (2, P, d) system, warm started, with the block-diagonal preconditioner
  (K + c_F X^T D_i X)^{-1}, to relative residual CG_TOL_PER_TOL * tol.
* ``"auto"`` (default): direct for n <= DIRECT_MAX_SAMPLES, else cg.

The data are rescaled internally by sigma = ||X||_2 (X -> X/sigma, lam ->
lam/sigma, u -> sigma u: the same program) so the three blocks are balanced.
Residuals (every CHECK_EVERY iterations, on the plain image T(p)): primal
||(F u - z, u - s, G u - t)|| relative to max(||(F u, u, G u)||, ||(z, s, t)||),
dual rho ||F^T dz + ds + G^T dt|| relative to rho max(||F^T a||, ||b||,
||G^T c||) (for the folded squared loss, a is the equivalent (F u - y) /
(n rho)).  The returned point is s of T(p) (exactly group sparse), certified by
:func:`certopt.convexnn.certificate.certify` with the cone multipliers
mu = -gamma rho c_v, nu = -gamma rho c_w.  The stopping test is that certificate,
not the dual residual: :func:`solve_admm` stops once it proves a relative gap <= tol
for a point whose primal residual is <= tol.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import scipy.linalg.blas
import torch

from certopt.convexnn.certificate import NNLS_STEPS, certify, within_tolerance
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions, check_flag
from certopt.convexnn.result import ConvexNNResult
from certopt.core.anderson import AndersonAccelerator
from certopt.core.arrays import check_scalar
from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.progress import progress
from certopt.core.result import Status

CHECK_EVERY = 25
"""Iterations between residual checks (each costs about one iteration; a divisor of
CERTIFY_EVERY, so that the certificate checks fall on residual checks)."""

CERTIFY_EVERY = 50
"""Iterations between certificate checks with the ADMM's own multipliers (each costs
about two iterations, so the checks take a few per cent of the work)."""

RELAXATION = 1.8
"""Over-relaxation parameter alpha in (0, 2) (Boyd et al. 2011, section 3.4.3)."""


ANDERSON_INTERVAL = 10
"""Anderson steps are taken on T^ANDERSON_INTERVAL, so the cost of one extrapolation
is shared by that many iterations (as few iterations as every step, at a tenth of the cost)."""

RHO_IMBALANCE = 10.0
"""Adapt rho when the relative residuals differ by more than this factor."""

RHO_MIN_INTERVAL = 100
"""Iterations between two changes of rho."""

BELOW_BOUND_RHO_FACTOR = 3.0
"""With ``adaptive_rho``: the factor rho is raised by when a certificate check finds the
network's F below the bound by more than tol (the primal lags)."""

RHO_MAX_FACTOR = 10.0
"""Bound on one change of rho (either way), so rho stays positive and finite."""

DIRECT_MAX_SAMPLES = 8000
"""``linear_solver="auto"`` uses the direct (n x n) solve up to this n, CG above."""

CG_TOL_PER_TOL = 1e-2
"""Relative residual of the CG u-solve, as a multiple of the ADMM tolerance."""

CG_SETUP_ELEMENTS = 2 ** 24
"""Bound on the temporary (patterns x d x n) block built while forming X^T D_i X."""

RHO_PER_LAM = {"squared": 1.0, "logistic": 1.0, "hinge": 0.1}
"""Default rho / lam per loss (best of 0.1, 1, 10 on the tests' and benchmark's data)."""


def group_shrink(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Block soft-thresholding of the last axis: x (1 - threshold/||x||)_+."""
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * torch.relu(1.0 - threshold / norms.clamp(min=1e-300))


_SYMMETRIC_MATVEC = {torch.float64: scipy.linalg.blas.dsymv, torch.float32: scipy.linalg.blas.ssymv}
"""BLAS symv by dtype: a symmetric matrix times a vector reading one triangle only."""


def symmetric_matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A x for a symmetric (n, n) A and x (n,), shape (n,).

    On the CPU (float32/64) through BLAS symv, which reads one triangle of A: half
    the memory traffic of ``A @ x``, which is what the product costs at large n.
    Elsewhere (GPU, other dtypes) ``A @ x``.
    """
    symv = _SYMMETRIC_MATVEC.get(A.dtype)
    if symv is None or A.device.type != "cpu" or not A.is_contiguous():
        return A @ x
    # A is C-contiguous and symmetric, so A.T is the same matrix in Fortran order (no copy)
    return torch.from_numpy(symv(1.0, A.numpy().T, x.contiguous().numpy()))


def default_rho(problem: ConvexReLUProblem) -> float:
    """The default penalty rho = RHO_PER_LAM[loss] * lam."""
    return RHO_PER_LAM.get(problem.loss.name, 1.0) * problem.lam


class _Operators:
    """F, G and their adjoints on the rescaled data, with G scaled by ``cone_weight``.

    G u = cone_weight (S_i X v_i, S_i X w_i): the cone block's weight against the others.
    """

    def __init__(self, X: torch.Tensor, D: torch.Tensor, cone_weight: float = 1.0):
        self.X, self.D, self.S = X, D, 2.0 * D - 1.0
        self.cone_weight = cone_weight
        self.GS = cone_weight * self.S  # the signs of G with its scale
        eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
        self.K = eye + cone_weight ** 2 * (X.T @ X)  # the blocks of I + G^T G

    def apply_F(self, XW: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
        """F u = sum_i D_i X (v_i - w_i) from XW = (v - w) X^T, shape (P, n); with
        ``overwrite``, XW is a scratch buffer and is multiplied by D in place."""
        return (XW.mul_(self.D) if overwrite else self.D * XW).sum(dim=0)

    def masked_products(self, e: torch.Tensor) -> torch.Tensor:
        """(D_i e)^T X for every pattern i, shape (P, d): D (e o X), which scales the
        (n, d) X rather than the (P, n) D."""
        return self.D @ (e[:, None] * self.X)

    def apply_Ft(self, e: torch.Tensor) -> torch.Tensor:
        """F^T e, shape (2, P, d)."""
        half = self.masked_products(e)
        return torch.stack([half, -half])

    def adjoint(self, e: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
        """F^T e + G^T q, shape (2, P, d) (e may be None: G^T q only)."""
        blocks = self.GS * q
        if e is not None:
            De = self.D * e
            blocks = torch.stack([blocks[0] + De, blocks[1] - De])
        return blocks @ self.X


class _DirectSolve:
    """u = (c_F F^T F + I + G^T G)^{-1} rhs by Woodbury with an n x n inverse."""

    def __init__(self, ops: _Operators):
        self.ops = ops
        self.K_inv = torch.cholesky_inverse(torch.linalg.cholesky(ops.K))
        X = ops.X
        self.coupling = 2.0 * (X @ self.K_inv @ X.T) * (ops.D.T @ ops.D)  # F (I+G^TG)^{-1} F^T
        self.weight = math.nan
        self.inverse: torch.Tensor | None = None
        self._XW = torch.empty_like(ops.D)  # buffers: (P, n) and the returned u X^T
        self._XU = torch.empty(2, *ops.D.shape, dtype=X.dtype, device=X.device)

    def set_weight(self, weight: float) -> None:
        """Invert I + weight * F (I + G^T G)^{-1} F^T for the system with c_F = weight."""
        eye = torch.eye(self.coupling.shape[0], dtype=self.coupling.dtype,
                        device=self.coupling.device)
        self.inverse = torch.cholesky_inverse(torch.linalg.cholesky(eye + weight * self.coupling))
        self.weight = weight

    def solve(self, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, u X^T) for the current weight (u X^T in a buffer the next call overwrites)."""
        ops = self.ops
        u = rhs @ self.K_inv
        XW = torch.matmul(u[0] - u[1], ops.X.T, out=self._XW)
        # (I + c_F F K^-1 F^T)^-1 F K^-1 rhs
        e = symmetric_matvec(self.inverse, ops.apply_F(XW, overwrite=True))
        correction = ops.masked_products(e) @ self.K_inv  # (P, d)
        u = u - self.weight * torch.stack([correction, -correction])
        return u, torch.matmul(u, ops.X.T, out=self._XU)


class _ConjugateGradientSolve:
    """The same system by block-preconditioned CG, warm started; no n x n matrix."""

    def __init__(self, ops: _Operators, tol: float, max_steps: int = 500):
        self.ops, self.tol, self.max_steps = ops, tol, max_steps
        X, D = ops.X, ops.D
        chunk = max(1, CG_SETUP_ELEMENTS // (X.shape[0] * X.shape[1]))  # patterns at a time
        self.XtDX = torch.cat([(X.T * rows[:, None, :]) @ X  # X^T D_i X, (P, d, d)
                               for rows in D.split(chunk)])
        self.weight = math.nan
        self.preconditioner: torch.Tensor | None = None
        self.u: torch.Tensor | None = None
        self.steps = 0

    def set_weight(self, weight: float) -> None:
        blocks = self.ops.K + weight * self.XtDX
        self.preconditioner = torch.cholesky_inverse(torch.linalg.cholesky(blocks))
        self.weight = weight

    def _apply(self, u: torch.Tensor) -> torch.Tensor:
        ops = self.ops
        Fu = ops.apply_F((u[0] - u[1]) @ ops.X.T)
        return u @ ops.K + self.weight * ops.apply_Ft(Fu)

    def _precondition(self, r: torch.Tensor) -> torch.Tensor:
        return (r.unsqueeze(-2) @ self.preconditioner).squeeze(-2)

    def solve(self, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, u X^T) with ||rhs - M u|| <= tol ||rhs|| (or after max_steps steps)."""
        u = self._precondition(rhs) if self.u is None else self.u
        r = rhs - self._apply(u)
        threshold = self.tol * float(torch.linalg.vector_norm(rhs))
        z = self._precondition(r)
        direction, rz = z, float((r * z).sum())
        for _ in range(self.max_steps):
            if float(torch.linalg.vector_norm(r)) <= threshold:
                break
            image = self._apply(direction)
            curvature = float((direction * image).sum())
            if rz <= 0.0 or curvature <= 0.0:  # exact solution, or round-off at its level
                break
            step = rz / curvature
            u = u + step * direction
            r = r - step * image
            z = self._precondition(r)
            rz, rz_old = float((r * z).sum()), rz
            direction = z + (rz / rz_old) * direction
            self.steps += 1
        self.u = u
        return u, u @ self.ops.X.T


def _linear_solver(ops: _Operators, options: SolverOptions
                   ) -> _DirectSolve | _ConjugateGradientSolve:
    """The u-solver named by ``options.linear_solver`` ("auto": by the size of n)."""
    choice = options.linear_solver
    if choice == "auto":
        choice = "direct" if ops.X.shape[0] <= DIRECT_MAX_SAMPLES else "cg"
    if choice == "direct":
        return _DirectSolve(ops)
    if choice == "cg":
        return _ConjugateGradientSolve(ops, min(max(CG_TOL_PER_TOL * options.tol, 1e-12), 1e-6))
    raise InputValueError(
        f"linear_solver: expected 'auto', 'direct' or 'cg', got {options.linear_solver!r}"
    )


class _FoldedSquared:
    """The squared loss inside the u-system: no z (an empty part of p), c_F = 1/(n rho)."""

    def __init__(self, y: torch.Tensor, ops: _Operators):
        self.y = y
        self.size = 0
        self._Ft_y = ops.apply_Ft(y)  # e = y is fixed, so F^T e is computed once

    def weight(self, rho: float) -> float:
        return 1.0 / (self.y.shape[0] * rho)

    def prox(self, p_z: torch.Tensor, rho: float) -> torch.Tensor:
        return p_z

    def adjoint_target(self, r_z: torch.Tensor) -> torch.Tensor:
        """F^T e with e = y."""
        return self._Ft_y

    def lift(self, Fu: torch.Tensor) -> torch.Tensor:
        """The z-part of A u (empty: z is not a variable)."""
        return Fu[:0]

    def multiplier(self, a: torch.Tensor, Fu: torch.Tensor, rho: float) -> torch.Tensor:
        return (Fu - self.y) / self.y.shape[0]  # gradient of L at F u


class _SplitLoss:
    """A general loss through z = F u: prox step on z, scaled dual a."""

    def __init__(self, problem: ConvexReLUProblem, ops: _Operators):
        self.loss, self.y = problem.loss, problem.y
        self.size = problem.n_samples
        self.ops = ops

    def weight(self, rho: float) -> float:
        return 1.0

    def prox(self, p_z: torch.Tensor, rho: float) -> torch.Tensor:
        return self.loss.prox(p_z, self.y, rho)

    def adjoint_target(self, r_z: torch.Tensor) -> torch.Tensor:
        """F^T e with e = z - a = 2 z - p_z, the reflection."""
        return self.ops.apply_Ft(r_z)

    def lift(self, Fu: torch.Tensor) -> torch.Tensor:
        return Fu

    def multiplier(self, a: torch.Tensor, Fu: torch.Tensor, rho: float) -> torch.Tensor:
        return rho * a


class _FixedPointMap:
    """p -> T(p) of the over-relaxed ADMM (steps 1-3 of the module docstring).

    Everything lives in flat vectors of p's layout (z part, s part, t part):
    x = prox(p) = (z, s, t), the duals p - x = (a, b, c), the reflection
    2 x - p = (z - a, s - b, t - c) that the u-step reads, A u = (F u, u, G u),
    and T(p) = p + alpha (A u - x).
    """

    def __init__(self, problem: ConvexReLUProblem, options: SolverOptions, sigma: float):
        cone_weight = check_scalar(options.cone_weight, "cone_weight", low=0.0,
                                   low_inclusive=False)
        self.ops = _Operators(problem.X / sigma, problem.D, cone_weight)
        self.solver = _linear_solver(self.ops, options)
        self.block = (_FoldedSquared(problem.y, self.ops) if problem.loss.name == "squared"
                      else _SplitLoss(problem, self.ops))
        self.lam = problem.lam / sigma
        P, n, d = problem.n_patterns, problem.n_samples, problem.n_features
        self.shapes = ((self.block.size,), (2, P, d), (2, P, n))
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.rho = math.nan
        like = {"dtype": problem.X.dtype, "device": problem.X.device}
        self._work = torch.empty(2, P, n, **like)  # scratch of the t part's shape
        self._half = torch.empty(P, n, **like)

    def set_rho(self, rho: float) -> None:
        self.rho = rho
        self.solver.set_weight(self.block.weight(rho))

    def split(self, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The views (z part, s part, t part) of a flat vector."""
        return tuple(part.view(shape) for part, shape in zip(p.split(self.sizes), self.shapes))

    def prox(self, p: torch.Tensor) -> torch.Tensor:
        """Step 1: the flat x = (z, s, t) at p."""
        x = torch.empty_like(p)
        (p_z, p_s, p_t), (z, s, t) = self.split(p), self.split(x)
        z.copy_(self.block.prox(p_z, self.rho))
        s.copy_(group_shrink(p_s, self.lam / self.rho))
        torch.clamp(p_t, min=0.0, out=t)
        return x

    def step(self, p: torch.Tensor, alpha: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T(p), u, u X^T) for the relaxation ``alpha``: steps 1-3 in few passes over t.

        The t part is the large one (2 P n), so it is never formed from x = prox(p):
        its reflection is 2 (p_t)_+ - p_t = |p_t|, G^T reads gamma S |p_t| (a copysign),
        and T(p)_t = p_t - alpha (p_t)_+ + alpha gamma S o (X u).  ``u X^T`` lives in a buffer
        that the next call overwrites.
        """
        ops = self.ops
        p_z, p_s, p_t = self.split(p)
        z = self.block.prox(p_z, self.rho)
        s = group_shrink(p_s, self.lam / self.rho)
        rhs = torch.matmul(torch.copysign(p_t, ops.S, out=self._work), ops.X)  # G^T (t - c) / gamma
        rhs.mul_(ops.cone_weight).add_(2.0 * s - p_s)
        rhs.add_(self.block.adjoint_target(2.0 * z - p_z), alpha=self.solver.weight)
        u, XU = self.solver.solve(rhs)
        p_next = torch.empty_like(p)
        next_z, next_s, next_t = self.split(p_next)
        if self.block.size:
            torch.add(p_z, self.F(XU) - z, alpha=alpha, out=next_z)
        torch.add(p_s, u - s, alpha=alpha, out=next_s)
        torch.addcmul(p_t, ops.GS, XU, value=alpha, out=next_t)
        next_t.sub_(torch.clamp(p_t, min=0.0, out=self._work), alpha=alpha)
        return p_next, u, XU

    def F(self, XU: torch.Tensor) -> torch.Tensor:
        """F u from XU = u X^T (through a buffer)."""
        return self.ops.apply_F(torch.sub(XU[0], XU[1], out=self._half), overwrite=True)

    def image(self, u: torch.Tensor, XU: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A u, F u): the flat A u = (F u, u, G u) (z part empty when the loss is folded)."""
        Fu = self.F(XU)
        Au = torch.empty(sum(self.sizes), dtype=u.dtype, device=u.device)
        Au_z, Au_s, Au_t = self.split(Au)
        Au_z.copy_(self.block.lift(Fu))
        Au_s.copy_(u)
        torch.mul(self.ops.GS, XU, out=Au_t)
        return Au, Fu

    def dual_norms(self, change: torch.Tensor, duals: torch.Tensor, Fu: torch.Tensor
                   ) -> tuple[float, float]:
        """(||F^T dz + ds + G^T dt||, max(||F^T a||, ||b||, ||G^T c||)) for flat (dz, ds, dt)
        and (a, b, c); for the folded squared loss a is its equivalent (F u - y) / (n rho)."""
        ops = self.ops
        folded = self.block.size == 0
        dz, ds, dt = self.split(change)
        a, b, c = self.split(duals)
        total = ops.adjoint(None if folded else dz, dt) + ds
        a = self.block.multiplier(a, Fu, self.rho) / self.rho
        parts = [float(torch.linalg.vector_norm(ops.adjoint(None, c))),
                 float(torch.linalg.vector_norm(b)),
                 float(torch.linalg.vector_norm(ops.apply_Ft(a)))]
        return float(torch.linalg.vector_norm(total)), max(parts)


def anderson_accelerator(options: SolverOptions) -> AndersonAccelerator | None:
    """The accelerator of ``options.anderson_memory`` (validated), or None when it is 0."""
    memory = int(check_scalar(options.anderson_memory, "anderson_memory", low=0, integer=True))
    return AndersonAccelerator(memory) if memory > 0 else None


def anderson_advance(accelerator: AndersonAccelerator | None, it: int, anchor: torch.Tensor,
                     p_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(next p, next anchor): every ANDERSON_INTERVAL iterations, the Anderson step of
    the map T^ANDERSON_INTERVAL from the anchor (the point that many iterations ago)."""
    if accelerator is None or it % ANDERSON_INTERVAL:
        return p_next, anchor
    p = accelerator.step(anchor, p_next)
    return p, p


def _certificate(problem: ConvexReLUProblem, T: _FixedPointMap, x: torch.Tensor,
                 duals: torch.Tensor, Fu: torch.Tensor, sigma: float, nnls_steps: int,
                 **fields) -> ConvexNNResult:
    """The certified result of the prox output ``x`` = (z, s, t) and the scaled duals.

    Dual candidates: the ADMM's multiplier of z = F u and the gradient of L at the
    prediction; cone multipliers mu = -gamma rho c_v, nu = -gamma rho c_w, refitted
    for at most ``nnls_steps`` steps (0: taken as they are, a check costing about
    two iterations).  The ADMM's state may be of a lower precision than ``problem``
    (the float32 phase of :func:`solve_admm`): it is cast to ``problem``'s dtype and
    everything certified is computed there (any v, w and dual candidates give a
    valid certificate, so only its tightness depends on the state's precision).
    """
    dtype = problem.X.dtype
    s, (a, _, c) = T.split(x)[1], T.split(duals)
    v, w = (s[0] / sigma).to(dtype), (s[1] / sigma).to(dtype)
    rho, weight = T.rho, T.ops.cone_weight
    candidates = [T.block.multiplier(a, Fu, rho).to(dtype),
                  problem.loss.gradient(problem.predict_convex(v, w), problem.y)]
    return certify(problem, v, w, duals=candidates, mu=(-rho * weight * c[0]).to(dtype),
                   nu=(-rho * weight * c[1]).to(dtype), nnls_steps=nnls_steps,
                   solver="admm", **fields)


def _meets_cones(problem: ConvexReLUProblem, result: ConvexNNResult, tol: float) -> bool:
    """True when the cone violation of (v, w) is <= tol times its largest |X v_i|, |X w_i|
    entry: the network's neurons keep their patterns to tol."""
    scale = float(torch.cat([result.v, result.w]).matmul(problem.X.T).abs().max())
    return result.residuals["cone_violation"] <= tol * scale


def zero_network_result(problem: ConvexReLUProblem, solver: str) -> ConvexNNResult:
    """The answer when X = 0 (no intercept): every network predicts 0, so the zero
    network is optimal, certified by l = grad L(0) (X^T l = 0 meets every dual norm)."""
    start = time.perf_counter()
    zero = torch.zeros(problem.n_patterns, problem.n_features, dtype=problem.X.dtype,
                       device=problem.X.device)
    gradient = problem.loss.gradient(torch.zeros_like(problem.y), problem.y)
    return certify(problem, zero, zero.clone(), duals=[gradient], mu=None, nu=None,
                   status=Status.OPTIMAL, n_iter=0, solve_time=time.perf_counter() - start,
                   solver=solver)


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """Where an ADMM solve ended, to start another on the same X and patterns.

    ``x`` = (z, s, t) are the prox outputs and ``multipliers`` the unscaled duals
    rho (a, b, c), both flat in the layout of :class:`_FixedPointMap` on data
    rescaled by ``sigma``, at regularisation ``lam``; a new solve at lam' with
    penalty rho' starts from p = x + (lam' / lam) multipliers / rho'.
    """

    x: torch.Tensor
    multipliers: torch.Tensor
    sigma: float
    lam: float


PATH_ADAPTIVE_LOSSES = ("squared",)
"""Losses whose solves along a regularisation path balance rho by the residuals (and
weight the cone block by PATH_CONE_WEIGHT)."""

PATH_CONE_WEIGHT = 3.0
"""The cone weight gamma of those path solves (a penalty gamma^2 rho on the cone
constraints).  With the balanced rho, which settles at 0.02-0.4 lam, the last stretch of
a path solve was spent with its gap certified but its cone violation above tol max |X v_i|;
a heavier cone block closes it sooner (10-point paths, benchmarks/RESULTS.md: gamma = 1,
2, 3, 4 took 34 510, 26 400, 23 100, 24 120 iterations at n = 600, P = 40)."""


def path_options(problem: ConvexReLUProblem, options: SolverOptions) -> SolverOptions:
    """The options of the ADMM solves along a regularisation path (``fit_path``).

    For the squared loss (folded into the u-system) ``adaptive_rho`` is turned on:
    with the fixed default rho = lam a warm-started solve's final phase was as slow as a
    cold one's, and the balanced rho (which settles lower) was the faster along the
    measured paths.
    With that lower rho the cone constraints lag, so the cone block is weighted by
    PATH_CONE_WEIGHT.
    For the split losses (hinge, logistic) balancing drove rho too low and a solve
    stalled far from the optimum, so they keep the fixed rho and cone weight
    (benchmarks/RESULTS.md).
    """
    if problem.loss.name in PATH_ADAPTIVE_LOSSES:
        return dataclasses.replace(options, adaptive_rho=True, cone_weight=PATH_CONE_WEIGHT)
    return options


MIXED_PRECISION_MIN_TOL = 1e-5
"""Smallest tol at which :func:`solve_admm` runs its float32 phase first.  float32's unit
round-off is 6e-8 and the float32 iteration's relative residuals level off at about
1e-6 (measured 5e-7 to 2e-6 on the squared loss: sums over n samples of products that
round at 6e-8).  In the measured solves a certified gap of tol came with relative
primal residuals of tol / 7 (hinge) to tol / 300 (squared, n = 300), so at tol = 1e-5
the float32 phase still does most of the work (at n = 1000: 5850 of 8000 iterations,
21% less CPU time than float64 only) and below it would mostly stall; the solve then
stays float64."""

MIXED_PRECISION_MIN_ENTRIES = 20_000
"""Fewest entries P n of the (P, n) patterns for the float32 phase.  On smaller problems
a float32 step saves less (1.3x at n = 300, P = 20, d = 11, against 1.5-1.85x from
P n = 20 000 up) and the iterations float32 spends stalled weigh more: whole solves
took 1.07-1.5x float64's CPU time in four of five cases at P n = 4000-6000, and
0.53-0.98x at P n = 24 000 and above (benchmarks/RESULTS.md)."""

FLOAT32_SHARE = 0.5
"""Share of ``max_iter`` the float32 phase may take, so the float64 phase always has the
rest (it continues from the float32 point, so the iterations are not lost)."""

FLOAT32_STALL_ITERATIONS = 1000
"""The float32 phase hands over to float64 when in this many iterations neither the
larger of its relative residuals nor its certified gap fell below STALL_FACTOR times
its value at the last such progress: round-off, not the method, sets the pace there
(on logistic data the float32 dual residual levelled off at 1e-3 where float64's went
on halving every 600 iterations; benchmarks/RESULTS.md)."""

STALL_FACTOR = 0.5
"""The decrease that counts as progress for FLOAT32_STALL_ITERATIONS."""


def uses_float32_phase(problem: ConvexReLUProblem, options: SolverOptions) -> bool:
    """True when :func:`solve_admm_from` runs a float32 phase first:
    ``options.mixed_precision`` on float64 data with tol >= MIXED_PRECISION_MIN_TOL, at
    least MIXED_PRECISION_MIN_ENTRIES pattern entries and a budget for both phases."""
    return (check_flag(options.mixed_precision, "mixed_precision")
            and problem.X.dtype == torch.float64
            and options.tol >= MIXED_PRECISION_MIN_TOL
            and problem.n_patterns * problem.n_samples >= MIXED_PRECISION_MIN_ENTRIES
            and int(FLOAT32_SHARE * options.max_iter) >= CERTIFY_EVERY)


def solve_admm(problem: ConvexReLUProblem, options: SolverOptions) -> ConvexNNResult:
    """Run the ADMM on ``problem`` from zero; see :func:`solve_admm_from`."""
    return solve_admm_from(problem, options, None)[0]


def solve_admm_from(problem: ConvexReLUProblem, options: SolverOptions,
                    warm_start: WarmStart | None) -> tuple[ConvexNNResult, WarmStart | None]:
    """Run the ADMM on ``problem`` (on its device) and certify the answer.

    ``warm_start`` (from a solve on the same X, y and patterns, e.g. at another
    lam on a regularisation path) replaces the zero start.  Returns the result and
    the warm start for the next solve (None when the data are zero).

    Stops, status OPTIMAL, when the relative primal residual is <= tol (the point
    meets z = F u, s = u and its cones to tol: it solves the program, not only some
    network) and the certificate proves F - bound <= tol |bound|
    (:func:`~certopt.convexnn.certificate.within_tolerance`, the test of every
    solver), with F not below the bound by more than tol |bound| and the cone
    violation <= tol max_i,k |X v_i|_k, |X w_i|_k either (otherwise the network leaves
    its cones, and F may lie below the program's optimum: the point does not solve
    the program yet; with ``adaptive_rho``, rho is raised by BELOW_BOUND_RHO_FACTOR
    when F is below the bound).  Certificate checks: with the ADMM's own multipliers
    every CERTIFY_EVERY iterations once the primal residual passes, and with the
    multipliers refitted (NNLS) when the dual residual passes too, at iterations
    spaced at least doubling so that the refits stay a small part of the work.
    MAX_ITER (plus a :class:`ConvergenceWarning`) when ``options.max_iter`` ran out
    first, NUMERICAL if the iterates blew up.  The history holds, per residual
    check, the residuals, the objective G of s and rho, and per certificate check its
    certified relative gap (``"gap"``, at iteration ``"gap_iteration"``).

    Mixed precision (``options.mixed_precision``, :func:`uses_float32_phase`): on
    float64 data at a loose tol, the ADMM iterates first on a float32 copy of the
    problem (same patterns, same sigma = ||X||_2 computed in float64, same rho, the
    warm start cast to float32), which halves the bytes of every product and
    element-wise pass.  Its certificate checks are the float64 ones: the iterate
    (v, w), the dual candidates and the cone multipliers are cast to float64 and
    certified on the float64 problem, with the tests above.  A certificate is valid
    for any (v, w) and any dual point, so the float32 iteration only decides how good
    they are, never whether the proof holds: OPTIMAL means a float64 certificate
    proved gap <= tol, as without it.  When the float32 phase cannot certify (it
    stalls, FLOAT32_STALL_ITERATIONS, as round-off sets in, or used FLOAT32_SHARE of
    ``max_iter``), its state (x and the unscaled multipliers) is cast to float64 and
    the ADMM goes on from there on the float64 problem with the rest of the budget:
    the ADMM converges from any start, so this phase finishes the work (NUMERICAL
    float32 iterates: it starts from ``warm_start`` again).  The result and the
    returned warm start are float64; ``n_iter`` counts both phases; the history
    holds both phases' checks in order (``gap_iteration`` counted from the start)
    and ``history["float32_iterations"]`` the float32 ones (no such key when the
    phase did not run).  On float32 data the whole solve stays float32, as before.
    """
    start = time.perf_counter()
    check_scalar(options.max_iter, "max_iter", low=1, integer=True)
    sigma = float(torch.linalg.matrix_norm(problem.X, ord=2))
    if sigma == 0.0:
        return zero_network_result(problem, "admm"), None
    if not uses_float32_phase(problem, options):
        return _finish(problem, _iterate(problem, options, sigma, warm_start), options, sigma,
                       start)
    single = dataclasses.replace(problem, X=problem.X.float(), y=problem.y.float(),
                                 D=problem.D.float())
    single_start = None if warm_start is None else dataclasses.replace(
        warm_start, x=warm_start.x.float(), multipliers=warm_start.multipliers.float())
    budget = int(FLOAT32_SHARE * options.max_iter)
    run = _iterate(single, dataclasses.replace(options, max_iter=budget), sigma, single_start,
                   certified_on=problem, stall_iterations=FLOAT32_STALL_ITERATIONS)
    float32_iterations = run.n_iter
    if run.status is not Status.OPTIMAL:
        if run.status is not Status.NUMERICAL:
            warm_start = WarmStart(run.x.double(), (run.T.rho * run.duals).double(), sigma,
                                   problem.lam)
        rest = dataclasses.replace(options, max_iter=options.max_iter - float32_iterations,
                                   rho=run.T.rho)
        first, run = run, _iterate(problem, rest, sigma, warm_start)
        run.history["gap_iteration"] = [it + first.n_iter
                                        for it in run.history["gap_iteration"]]
        for key, values in run.history.items():
            run.history[key] = first.history[key] + values
        run.n_iter += first.n_iter
    run.history["float32_iterations"] = [float(float32_iterations)]
    return _finish(problem, run, options, sigma, start)


@dataclasses.dataclass
class _Run:
    """Where a stretch of ADMM iterations ended: the state of its last residual check."""

    T: _FixedPointMap
    status: Status
    n_iter: int
    history: dict[str, list[float]]
    x: torch.Tensor  # the prox output (z, s, t) of the last check's T(p), flat
    duals: torch.Tensor  # its scaled duals (a, b, c)
    Fu: torch.Tensor
    primal_rel: float
    dual_rel: float
    certified: ConvexNNResult | None  # the check that passed every stopping test


def _iterate(problem: ConvexReLUProblem, options: SolverOptions, sigma: float,
             warm_start: WarmStart | None, certified_on: ConvexReLUProblem | None = None,
             stall_iterations: int | None = None) -> _Run:
    """The ADMM iterations of :func:`solve_admm_from` on data rescaled by ``sigma``.

    The certificate checks are computed on ``certified_on`` (default ``problem``; the
    same program in a higher precision for the float32 phase of :func:`solve_admm`).
    With ``stall_iterations``, also stops (status INACCURATE) once in that many
    iterations neither max(relative primal, relative dual residual) nor the certified
    gap fell below STALL_FACTOR times its value at the last such progress.
    """
    certified_on = problem if certified_on is None else certified_on
    T = _FixedPointMap(problem, options, sigma)
    T.set_rho(float(options.rho) if options.rho is not None else default_rho(problem))
    alpha = RELAXATION
    accelerator = anderson_accelerator(options)
    like = {"dtype": problem.X.dtype, "device": problem.X.device}
    if warm_start is None:
        p = anchor = torch.zeros(sum(T.sizes), **like)
    else:
        if warm_start.x.shape[0] != sum(T.sizes) or warm_start.sigma != sigma:
            raise InputValueError("warm_start: expected the state of a solve on the same X, "
                                  "loss and patterns")
        # the multipliers scaled by the ratio of the lams (the group duals have norm lam)
        scale = problem.lam / (warm_start.lam * T.rho)
        p = anchor = torch.add(warm_start.x, warm_start.multipliers, alpha=scale)
    status, n_iter, last_rho_change = Status.MAX_ITER, 0, 0
    primal_rel = dual_rel = math.inf
    progress_residual = progress_gap = math.inf
    last_progress = 0
    next_refit = 0
    below = False
    certified: ConvexNNResult | None = None
    history: dict[str, list[float]] = {"primal_residual": [], "dual_residual": [],
                                       "relative_primal_residual": [],
                                       "relative_dual_residual": [], "objective": [], "rho": [],
                                       "gap": [], "gap_iteration": []}
    with progress(options.max_iter, options.verbose, desc="admm") as bar:
        for it in range(1, options.max_iter + 1):
            n_iter = it
            p_next, u, XU = T.step(p, alpha)
            if it % CHECK_EVERY and it != options.max_iter:
                p, anchor = anderson_advance(accelerator, it, anchor, p_next)
                bar.update(1)
                continue
            Au, Fu = T.image(u, XU)
            x, x_next = T.prox(p), T.prox(p_next)
            duals = p_next - x_next
            primal_res = float(torch.linalg.vector_norm(Au - x_next))
            primal_scale = max(float(torch.linalg.vector_norm(Au)),
                               float(torch.linalg.vector_norm(x_next)))
            change_norm, dual_size = T.dual_norms(x_next - x, duals, Fu)
            dual_res, dual_scale = T.rho * change_norm, T.rho * dual_size
            s = T.split(x_next)[1]
            history["primal_residual"].append(primal_res)
            history["dual_residual"].append(dual_res)
            history["objective"].append(problem.convex_objective(s[0] / sigma, s[1] / sigma))
            history["rho"].append(T.rho)
            bar.update(1, primal=primal_res, dual=dual_res)
            if not (math.isfinite(primal_res) and math.isfinite(dual_res)):
                status = Status.NUMERICAL
                break
            primal_rel = primal_res / max(primal_scale, 1e-300)
            dual_rel = dual_res / max(dual_scale, 1e-300)
            history["relative_primal_residual"].append(primal_rel)
            history["relative_dual_residual"].append(dual_rel)
            feasible = primal_rel <= options.tol
            refit = feasible and dual_rel <= options.tol and it >= next_refit
            if refit or (feasible and it % CERTIFY_EVERY == 0):
                check = _certificate(certified_on, T, x_next, duals, Fu, sigma,
                                     NNLS_STEPS if refit else 0, status=Status.OPTIMAL,
                                     n_iter=it, solve_time=0.0)
                if refit:
                    next_refit = 2 * it
                history["gap"].append(check.gap / max(abs(check.bound), 1e-300))
                history["gap_iteration"].append(it)
                below = check.objective < check.bound - options.tol * abs(check.bound)
                if (within_tolerance(check.objective, check.bound, options.tol) and not below
                        and _meets_cones(certified_on, check, options.tol)):
                    status, certified = Status.OPTIMAL, check
                    break
                if 0.0 < history["gap"][-1] <= STALL_FACTOR * progress_gap:
                    progress_gap, last_progress = history["gap"][-1], it
            if max(primal_rel, dual_rel) <= STALL_FACTOR * progress_residual:
                progress_residual, last_progress = max(primal_rel, dual_rel), it
            if stall_iterations is not None and it - last_progress >= stall_iterations:
                status = Status.INACCURATE
                break
            if it == options.max_iter:
                break
            imbalance = min(max(math.sqrt(primal_rel / max(dual_rel, 1e-300)),
                                1.0 / RHO_MAX_FACTOR), RHO_MAX_FACTOR)
            if below:  # a network below the bound: the cones lag, so raise rho
                imbalance = BELOW_BOUND_RHO_FACTOR
            if (options.adaptive_rho and it - last_rho_change >= RHO_MIN_INTERVAL
                    and (below or not 1.0 / RHO_IMBALANCE <= imbalance ** 2 <= RHO_IMBALANCE)):
                below = False
                # keep z, s, t and the unscaled multipliers: scaled duals times rho_old/rho_new
                p_next = torch.add(x_next, duals, alpha=1.0 / imbalance)
                duals = p_next - x_next
                T.set_rho(T.rho * imbalance)
                last_rho_change = it
                if accelerator is not None:
                    accelerator.reset()
                p = anchor = p_next
                continue
            p, anchor = anderson_advance(accelerator, it, anchor, p_next)
    return _Run(T, status, n_iter, history, x_next, duals, Fu, primal_rel, dual_rel, certified)


def _finish(problem: ConvexReLUProblem, run: _Run, options: SolverOptions, sigma: float,
            start: float) -> tuple[ConvexNNResult, WarmStart | None]:
    """The certified result of ``run`` (solve time counted from ``start``), the warning
    its status calls for, and the warm start for a next solve (None if NUMERICAL)."""
    history = run.history
    fields = {"status": run.status, "n_iter": run.n_iter, "history": history,
              "residuals": {"primal": history["primal_residual"][-1],
                            "dual": history["dual_residual"][-1]}}
    result = _certificate(problem, run.T, run.x, run.duals, run.Fu, sigma, NNLS_STEPS,
                          **fields, solve_time=time.perf_counter() - start)
    certified = run.certified
    if certified is not None and certified.bound > result.bound:  # the refit lost ground
        result = dataclasses.replace(certified, **fields, solve_time=result.solve_time)
    if run.status is Status.MAX_ITER:
        warnings.warn(
            f"admm: stopped at max_iter={options.max_iter} before certifying tol={options.tol} "
            f"(certified relative gap {result.gap / max(abs(result.bound), 1e-300):.2e}; "
            f"relative residuals {run.primal_rel:.2e}, {run.dual_rel:.2e})",
            ConvergenceWarning, stacklevel=3,
        )
    elif run.status is Status.NUMERICAL:
        warnings.warn("admm: the iterates are not finite", ConvergenceWarning, stacklevel=3)
        return result, None
    dtype = problem.X.dtype  # the state of a float32 phase goes on in the problem's dtype
    return result, WarmStart(run.x.to(dtype), (run.T.rho * run.duals).to(dtype), sigma,
                             problem.lam)
