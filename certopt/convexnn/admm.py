"""ADMM for the convex ReLU program (math note, section 5), in torch on any device.

Splitting, with u = (v, w) stacked as a (2, P, d) tensor:

    minimize   L(z) + lam sum_i ||s_i|| + 1_{>=0}(t)
    subject to z = F u,   s = u,   t = G u

where F u = sum_i D_i X (v_i - w_i) and G u = (S_i X v_i, S_i X w_i).
Scaled dual variables a (n), b (2, P, d), c (2, P, n); one iteration:

1. u = (c_F F^T F + I + G^T G)^{-1} (c_F F^T e + (s - b) + G^T (t - c));
2. z = prox_{L/rho}(F^ + a) (closed form / safeguarded Newton, batched);
3. s = group soft-thresholding of u^ + b at lam / rho;
4. t = (G^ + c)_+;
5. a += F^ - z;  b += u^ - s;  c += G^ - t,

with the over-relaxed outputs F^ = alpha F u + (1 - alpha) z, u^ = alpha u +
(1 - alpha) s, G^ = alpha G u + (1 - alpha) t (previous z, s, t; Boyd et al.
2011, section 3.4.3; alpha = RELAXATION = 1.8 needs 1.5-1.8x fewer iterations
than alpha = 1 on the benchmark and test problems).  a, b, c remain the scaled
multipliers of z = F u, s = u, t = G u, so the certificate below is unchanged.

For the squared loss there is no z: the loss is folded into step 1 with
c_F = 1/(n rho) and e = y (the seed paper's form); otherwise c_F = 1 and
e = z - a.  The u-system is solved through the Woodbury identity: with
K = I + X^T X, G^T G is block diagonal with blocks X^T X, and

    F (I + G^T G)^{-1} F^T = 2 (X K^{-1} X^T) o (D^T D)      (n x n),

so one d x d inverse and one n x n Cholesky factor are computed up front
; every iteration
is then four batched (2P x n) by (n x d) products and one n x n solve.

The data are rescaled internally by sigma = ||X||_2 (X -> X/sigma, lam ->
lam/sigma, u -> sigma u: the same program) so the three constraint blocks are
balanced.  Stopping (checked every ``check_every`` iterations): primal residual
||(F u - z, u - s, G u - t)|| <= tol max(||(F u, u, G u)||, ||(z, s, t)||)
and dual residual rho ||F^T dz + ds + G^T dt|| <= tol rho max(||F^T a||, ||b||, ||G^T c||)
(the sum F^T a + b + G^T c vanishes at every iterate, so its parts give the scale).
rho is fixed (residual balancing was tried and slowed convergence on the
test problems).  The returned point is s (exactly group sparse),
certified by :func:`certopt.convexnn.certificate.certify` with the cone
multipliers mu = -rho c_v, nu = -rho c_w.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from certopt.convexnn.certificate import certify
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.result import ConvexNNResult
from certopt.core.errors import ConvergenceWarning
from certopt.core.progress import progress
from certopt.core.result import Status

CHECK_EVERY = 10
"""Iterations between residual checks (each check costs about one iteration)."""

class _Operators:
    """F, G and their adjoints on the rescaled data; the u-system solve."""

    def __init__(self, X: torch.Tensor, D: torch.Tensor):
        self.X, self.D, self.S = X, D, 2.0 * D - 1.0
        eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
        self.K_inv = torch.cholesky_inverse(torch.linalg.cholesky(eye + X.T @ X))
        gram = (X @ self.K_inv @ X.T) * (D.T @ D)
        self.coupling = 2.0 * gram  # F (I + G^T G)^{-1} F^T
        self.weight = math.nan
        self.factor: torch.Tensor | None = None

    def set_weight(self, weight: float) -> None:
        """Factor I + weight * F (I + G^T G)^{-1} F^T for the system with c_F = weight."""
        eye = torch.eye(self.coupling.shape[0], dtype=self.X.dtype, device=self.X.device)
        self.factor = torch.linalg.cholesky(eye + weight * self.coupling)
        self.weight = weight

    def forward(self, XU: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F u, G u) from XU = u X^T of shape (2, P, n)."""
        return (self.D * (XU[0] - XU[1])).sum(dim=0), self.S * XU

    def adjoint(self, e: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
        """F^T e + G^T q, shape (2, P, d) (e may be None: G^T q only)."""
        blocks = self.S * q
        if e is not None:
            blocks = blocks + torch.stack([self.D * e, -self.D * e])
        return blocks @ self.X

    def solve(self, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u = (weight F^T F + I + G^T G)^{-1} rhs by Woodbury; returns (u, u X^T)."""
        u = rhs @ self.K_inv
        XU = u @ self.X.T
        Fu, _ = self.forward(XU)
        e = torch.cholesky_solve(Fu[:, None], self.factor)[:, 0]
        correction = ((self.D * e) @ self.X) @ self.K_inv  # (P, d)
        shift = self.weight * torch.stack([correction, -correction])
        return u - shift, XU - shift @ self.X.T

class _FoldedSquared:
    """The squared loss inside the u-system: no z, c_F = 1/(n rho), e = y."""

    def __init__(self, y: torch.Tensor):
        self.y = y
        self.dual = torch.zeros_like(y)

    def weight(self, rho: float) -> float:
        return 1.0 / (self.y.shape[0] * rho)

    def target(self) -> torch.Tensor:
        return self.y

    def update(self, Fu: torch.Tensor, rho: float, alpha: float) -> None:
        self.dual = (Fu - self.y) / self.y.shape[0]  # gradient of L at F u

    def primal_terms(self, Fu: torch.Tensor) -> tuple[float, float, float]:
        return 0.0, 0.0, 0.0

    def dual_terms(self) -> tuple[None, None]:
        return None, None

    def multiplier(self, rho: float) -> torch.Tensor:
        return self.dual

class _SplitLoss:
    """A general loss through z = F u: prox step on z, scaled dual a."""

    def __init__(self, problem: ConvexReLUProblem):
        self.loss, self.y = problem.loss, problem.y
        self.z = torch.zeros_like(problem.y)
        self.a = torch.zeros_like(problem.y)
        self.z_change = torch.zeros_like(problem.y)

    def weight(self, rho: float) -> float:
        return 1.0

    def target(self) -> torch.Tensor:
        return self.z - self.a

    def update(self, Fu: torch.Tensor, rho: float, alpha: float) -> None:
        Fu_relaxed = alpha * Fu + (1.0 - alpha) * self.z
        z_new = self.loss.prox(Fu_relaxed + self.a, self.y, rho)
        self.z_change = z_new - self.z
        self.z = z_new
        self.a = self.a + Fu_relaxed - z_new

    def primal_terms(self, Fu: torch.Tensor) -> tuple[float, float, float]:
        """(||F u - z||^2, ||F u||^2, ||z||^2)."""
        return (float(((Fu - self.z) ** 2).sum()), float((Fu ** 2).sum()),
                float((self.z ** 2).sum()))

    def dual_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(change of z, scaled dual a) for the dual residual and its scale."""
        return self.z_change, self.a

    def multiplier(self, rho: float) -> torch.Tensor:
        return rho * self.a

RELAXATION = 1.8
"""Over-relaxation parameter alpha in (0, 2) (Boyd et al. 2011, section 3.4.3)."""


def group_shrink(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Block soft-thresholding of the last axis: x (1 - threshold/||x||)_+."""
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * torch.relu(1.0 - threshold / norms.clamp(min=1e-300))

RHO_PER_LAM = {"squared": 1.0, "logistic": 1.0, "hinge": 0.1}
"""Default rho / lam per loss (best of 0.1, 1, 10 on the tests' and benchmark's data)."""


def default_rho(problem: ConvexReLUProblem) -> float:
    """The default penalty rho = RHO_PER_LAM[loss] * lam."""
    return RHO_PER_LAM.get(problem.loss.name, 1.0) * problem.lam

def solve_admm(problem: ConvexReLUProblem, options: SolverOptions) -> ConvexNNResult:
    """Run the ADMM on ``problem`` (on its device) and certify the answer.

    Returns a :class:`ConvexNNResult` with status OPTIMAL when the residual
    test passed, MAX_ITER (plus a :class:`ConvergenceWarning`) when
    ``options.max_iter`` ran out first, NUMERICAL if the iterates blew up.
    """
    start = time.perf_counter()
    sigma = float(torch.linalg.matrix_norm(problem.X, ord=2))
    X, D, lam = problem.X / sigma, problem.D, problem.lam / sigma
    ops = _Operators(X, D)
    block = _FoldedSquared(problem.y) if problem.loss.name == "squared" else _SplitLoss(problem)
    rho = float(options.rho) if options.rho is not None else default_rho(problem)
    ops.set_weight(block.weight(rho))
    alpha = RELAXATION

    P, n, d = problem.n_patterns, problem.n_samples, problem.n_features
    like = {"dtype": X.dtype, "device": X.device}
    u, s, b = (torch.zeros(2, P, d, **like) for _ in range(3))
    t, c = (torch.zeros(2, P, n, **like) for _ in range(2))
    status, n_iter = Status.MAX_ITER, 0
    history: dict[str, list[float]] = {"primal_residual": [], "dual_residual": [],
                                       "objective": []}
    with progress(options.max_iter, options.verbose, desc="admm") as bar:
        for it in range(1, options.max_iter + 1):
            n_iter = it
            rhs = ops.adjoint(block.weight(rho) * block.target(), t - c) + (s - b)
            u, XU = ops.solve(rhs)
            Fu, Gu = ops.forward(XU)
            block.update(Fu, rho, alpha)
            u_relaxed = alpha * u + (1.0 - alpha) * s
            Gu_relaxed = alpha * Gu + (1.0 - alpha) * t
            s_new = group_shrink(u_relaxed + b, lam / rho)
            t_new = torch.relu(Gu_relaxed + c)
            b = b + u_relaxed - s_new
            c = c + Gu_relaxed - t_new
            s_change, t_change, s, t = s_new - s, t_new - t, s_new, t_new
            if it % CHECK_EVERY and it != options.max_iter:
                bar.update(1)
                continue
            loss_gap, loss_Au, loss_z = block.primal_terms(Fu)
            primal = math.sqrt(loss_gap + float(((u - s) ** 2).sum() + ((Gu - t) ** 2).sum()))
            primal_scale = math.sqrt(max(loss_Au + float((u ** 2).sum() + (Gu ** 2).sum()),
                                         loss_z + float((s ** 2).sum() + (t ** 2).sum())))
            z_change, a = block.dual_terms()
            dual = rho * float(torch.linalg.vector_norm(ops.adjoint(z_change, t_change)
                                                        + s_change))
            dual_scale = rho * max(float(torch.linalg.vector_norm(ops.adjoint(a, c * 0.0))),
                                   float(torch.linalg.vector_norm(ops.adjoint(None, c))),
                                   float(torch.linalg.vector_norm(b)))
            history["primal_residual"].append(primal)
            history["dual_residual"].append(dual)
            history["objective"].append(problem.convex_objective(s[0] / sigma, s[1] / sigma))
            bar.update(1, primal=primal, dual=dual)
            if not (math.isfinite(primal) and math.isfinite(dual)):
                status = Status.NUMERICAL
                break
            primal_rel = primal / max(primal_scale, 1e-300)
            dual_rel = dual / max(dual_scale, 1e-300)
            if primal_rel <= options.tol and dual_rel <= options.tol:
                status = Status.OPTIMAL
                break
    if status is Status.MAX_ITER:
        warnings.warn(
            f"admm: stopped at max_iter={options.max_iter} before reaching tol={options.tol} "
            f"(relative residuals {primal_rel:.2e}, {dual_rel:.2e})",
            ConvergenceWarning, stacklevel=2,
        )
    elif status is Status.NUMERICAL:
        warnings.warn("admm: the iterates are not finite", ConvergenceWarning, stacklevel=2)
    v, w = s[0] / sigma, s[1] / sigma
    duals = [block.multiplier(rho), problem.loss.gradient(problem.predict_convex(v, w), problem.y)]
    return certify(
        problem, v, w, duals=duals, mu=-rho * c[0], nu=-rho * c[1], status=status,
        n_iter=n_iter, solve_time=time.perf_counter() - start, solver="admm",
        residuals={"primal": history["primal_residual"][-1],
                   "dual": history["dual_residual"][-1]},
        history=history,
    )
