"""Adversarially robust convex training of two-layer ReLU networks (ell_inf ball).

Math (``shared/math/convexnn.md`` section 7).  Training inputs x_k (rows of
the augmented X, the last column being the bias 1 when ``fit_intercept``) may
be perturbed by ``||delta_k||_inf <= eps`` on the *feature* coordinates only
(the bias is never perturbed).  With patterns D_1..D_P and the feature part
``v_f`` of a vector v, the robust convex program is::

    min_{v, w}  (1/n) sum_k l_wc(y_k, zhat_k, eps ||r_k||_1)
                + lam sum_i (||v_i||_2 + ||w_i||_2)
    s.t.  (2 D_i - I) X v_i >= eps ||v_{i,f}||_1 1,   (same for w_i)

    zhat = sum_i D_i X (v_i - w_i),   r_k = sum_i [D_i]_kk (v_i - w_i)_f.

with the worst-case loss l_wc of :mod:`.losses` (hinge: max(0, 1 -
y zhat + spread); squared: (|y - zhat| + spread)^2 / 2).  The robust cone
constraints keep every pattern valid on the whole ball, so the network's
output there is affine with range ``zhat_k -+ eps ||r_k||_1``: the objective
is exactly the worst-case mean loss plus the weight decay of the returned
ReLU network.

Evidence reported for any candidate network (never the solver's internal
state): :func:`certified_margins` is a *sound* lower bound of the worst-case
margin of an arbitrary two-layer ReLU network over the ball (exact when no
neuron changes sign in the ball, which the robust cones guarantee; with
y = -+1 it bounds the output from both sides), and
:meth:`GroupOperators.dual_bound` a lower bound on the robust program's
optimum from any dual guess, by scaling (as in section 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from certopt.convexnn.attack import check_norm
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.result import ConvexNNResult
from certopt.convexnn.robust.losses import RobustLoss, get_robust_loss
from certopt.core.arrays import check_scalar
from certopt.core.errors import InputTypeError, InputValueError
from certopt.core.result import duality_gap


def certified_margins(
    X: torch.Tensor,
    y: torch.Tensor,
    U: torch.Tensor,
    alpha: torch.Tensor,
    eps: float,
    features: torch.Tensor,
) -> torch.Tensor:
    """Sound lower bounds on ``min_{||delta||_inf <= eps} y_k f(x_k + delta)``.

    ``f(x) = sum_j alpha_j (u_j^T x)_+`` with neurons ``U`` (m, d) and output
    weights ``alpha`` (m,); ``delta`` perturbs only the coordinates where
    ``features`` (d,) is True.  Each pre-activation ranges over
    ``[l, h] = u_j^T x_k -+ eps ||u_{j,f}||_1``.  Stable neurons are exactly
    linear (or zero) on the ball; an unstable one is bounded below by z
    (when h >= -l) or by 0 (otherwise) when its weight ``y_k alpha_j`` is
    positive, and by the triangle relaxation ``(z)_+ <= h (z - l) / (h - l)``
    when negative.  The resulting affine
    lower bound is minimised over the box in closed form.  Exact when every
    neuron is stable on every ball.

    Returns (n,) margins, same dtype/device as ``X``.
    """
    pre = X @ U.T                                              # (n, m)
    U_f = U[:, features]
    radius = eps * U_f.abs().sum(dim=1)                        # (m,)
    low, high = pre - radius, pre + radius
    weight = y[:, None] * alpha[None, :]                       # (n, m)
    unstable = (low < 0) & (high > 0)
    active = (low >= 0) | (unstable & (weight >= 0) & (high >= -low))
    relaxed = unstable & (weight < 0)
    width = (high - low).clamp_min(torch.finfo(X.dtype).tiny)
    slope = torch.where(active, torch.ones_like(pre),
                        torch.where(relaxed, high / width, torch.zeros_like(pre)))
    intercept = torch.where(relaxed, -high * low / width, torch.zeros_like(pre))
    coef = weight * slope                                       # d(margin)/d(z_j)
    centre = (coef * pre + weight * intercept).sum(dim=1)
    direction = coef @ U_f                                      # (n, d_f)
    return centre - eps * direction.abs().sum(dim=1)


@dataclass(frozen=True, eq=False)
class RobustProblem:
    """The robust program over the patterns of a :class:`ConvexReLUProblem`.

    Attributes
    ----------
    base : the (hinge or squared loss) convex ReLU problem: X (n, d)
        augmented, y (labels in {-1, +1} for hinge), patterns D (P, n), lam.
    eps : radius of the ell_inf ball, >= 0.
    """

    base: ConvexReLUProblem
    eps: float

    @classmethod
    def from_problem(cls, problem: ConvexReLUProblem, eps: Any, norm: Any = "inf"
                     ) -> RobustProblem:
        """Check the adversarial settings against ``problem`` and build the robust program."""
        if not isinstance(problem, ConvexReLUProblem):
            raise InputTypeError(
                f"problem: expected a ConvexReLUProblem, got {type(problem).__name__}"
            )
        return cls(problem, check_robust_settings(eps, norm, problem.loss.name))

    @property
    def features(self) -> torch.Tensor:
        """(d,) bool mask of the perturbable coordinates (all but the bias column)."""
        mask = torch.ones(self.base.n_features, dtype=torch.bool, device=self.base.X.device)
        if self.base.fit_intercept:
            mask[-1] = False
        return mask

    @property
    def loss(self) -> RobustLoss:
        """The worst-case loss of the base problem's loss."""
        return get_robust_loss(self.base.loss.name)

    def operators(self) -> GroupOperators:
        """The program's linear maps on the unscaled data."""
        return GroupOperators(self.base.X, self.base.D, self.features)

    def program_objective(self, v: torch.Tensor, w: torch.Tensor) -> float:
        """The robust program's objective at (v, w), through the patterns D.

        Equals :meth:`objective` when the robust cones hold; the cones are not
        checked here (see :meth:`cone_violation`).
        """
        zhat, r, _, _ = self.operators().forward(torch.cat([v, w]))
        losses = self.loss.worst_case(self.base.y, zhat, self.eps * r.abs().sum(dim=1))
        decay = torch.linalg.vector_norm(torch.cat([v, w]), dim=1).sum()
        return float(losses.mean() + self.base.lam * decay)

    def output_bounds(self, v: torch.Tensor, w: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Certified (sound) (low, high) of the network's output over each ball, (n,) each."""
        U, alpha = self.base.network(v, w)
        ones = torch.ones_like(self.base.y)
        low = certified_margins(self.base.X, ones, U, alpha, self.eps, self.features)
        high = -certified_margins(self.base.X, -ones, U, alpha, self.eps, self.features)
        return low, high

    def robust_loss(self, v: torch.Tensor, w: torch.Tensor) -> float:
        """Certified worst-case mean loss of the network of (v, w) over the ball."""
        return float(self.loss.certified(self.base.y, *self.output_bounds(v, w)).mean())

    def objective(self, v: torch.Tensor, w: torch.Tensor) -> float:
        """Certified robust objective of the network: worst-case mean loss + weight decay."""
        decay = torch.linalg.vector_norm(torch.cat([v, w]), dim=1).sum()
        return self.robust_loss(v, w) + self.base.lam * float(decay)

    def cone_violation(self, v: torch.Tensor, w: torch.Tensor) -> float:
        """Largest violation of the robust cone constraints (0 when feasible)."""
        _, _, t, q = self.operators().forward(torch.cat([v, w]))
        slack = t - self.eps * q.abs().sum(dim=1)[None, :]
        return float(torch.relu(-slack).amax()) if slack.numel() else 0.0


class GroupOperators:
    """The linear maps of the robust program on u = (v_1..v_P, w_1..w_P), (2P, d).

    ``forward(u) = (z, r, t, q)`` with z = F u = sum_i D_i X (v_i - w_i) (n,),
    r = R u, r_k = sum_i [D_i]_kk (v_i - w_i)_f (n, d_f),
    t = G u, the S_i X v_i and S_i X w_i as columns (n, 2P), and
    q = Q u = the feature parts (u_j)_f (2P, d_f).  The worst-case margin is
    ``y_k z_k - eps ||r_k||_1`` and the robust cone reads ``t_j >= eps ||q_j||_1``.
    ``adjoint`` is the transpose of ``forward``.
    """

    def __init__(self, X: torch.Tensor, D: torch.Tensor, features: torch.Tensor):
        P = D.shape[0]
        self.X, self.features = X, features
        self.D = torch.cat([D, D]).T                                           # (n, 2P)
        self.S = 2 * self.D - 1
        self.sign = torch.cat([torch.ones(P), -torch.ones(P)]).to(X)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        XU = self.X @ u.T                                                      # (n, 2P)
        z = (XU * self.D) @ self.sign
        u_f = u[:, self.features]
        r = self.D @ (self.sign[:, None] * u_f)
        return z, r, self.S * XU, u_f

    def adjoint(self, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                q: torch.Tensor) -> torch.Tensor:
        out = (self.X.T @ (self.D * z[:, None] * self.sign + self.S * t)).T   # (2P, d)
        out[:, self.features] += self.sign[:, None] * (self.D.T @ r) + q
        return out

    def gram(self, weights: tuple[float, float, float, float, float] = (1.0,) * 5
             ) -> torch.Tensor:
        """Dense (2P d, 2P d) matrix ``a F^T F + b R^T R + c G^T G + e Q^T Q + g I``
        for ``weights`` = (a, b, c, e, g)."""
        a, b, c, e, g = weights
        n, d = self.X.shape
        groups = self.D.shape[1]
        A = ((self.D * self.sign)[:, :, None] * self.X[:, None, :]).reshape(n, groups * d)
        f = torch.diag(self.features.to(self.X.dtype))
        overlap = (self.D.T @ self.D) * torch.outer(self.sign, self.sign)
        eye = torch.eye(d, dtype=self.X.dtype, device=self.X.device)
        block = c * self.X.T @ self.X + e * f + g * eye
        return (a * A.T @ A + b * torch.kron(overlap, f)
                + torch.block_diag(*[block] * groups))

    def dual_bound(self, loss: RobustLoss, y: torch.Tensor, lam: float, eps: float,
                   a: torch.Tensor, r_dual: torch.Tensor, t_dual: torch.Tensor,
                   q_dual: torch.Tensor) -> tuple[float, float]:
        """(bound, scale): a lower bound on the robust program's optimum, by scaling.

        Weak duality for the program written with these maps: with the loss's
        dual terms (a, r_dual) in its domain (:mod:`.losses`),
        ``t_dual <= 0``, ``||q_dual_j||_inf <= eps sum_k (-t_dual_kj)`` and, for
        every group j, ``||(F^T a + R^T r_dual + G^T t_dual + Q^T q_dual)_j||_2
        <= lam``, the optimum is >= ``-L*(a, r_dual)``.  The guess is clipped
        to the first sets, then scaled by the best s in [0, s_max], s_max the
        largest scale meeting the last one (every set is a cone).
        """
        a, r_dual, s_cap = loss.clip_dual(a, r_dual, y, eps)
        t_dual = t_dual.clamp(max=0)
        q_cap = eps * (-t_dual).sum(dim=0)[:, None]
        q_dual = torch.maximum(torch.minimum(q_dual, q_cap), -q_cap)
        gamma = self.adjoint(a, r_dual, t_dual, q_dual)
        worst = float(torch.linalg.vector_norm(gamma, dim=1).max())
        s_max = min(s_cap, lam / worst) if worst > 0 else s_cap
        return loss.scaled_bound(a, r_dual, y, eps, s_max)


def check_robust_settings(eps: Any, norm: Any, loss: str) -> float:
    """Validate the adversarial settings; return eps as a float.

    Raises InputValueError for eps < 0 or non-finite, or a norm other than
    ell_inf; UnsupportedError for a loss other than hinge or squared.
    """
    eps = check_scalar(eps, "adversarial_eps", low=0.0)
    if check_norm(norm, "adversarial_norm") != "inf":
        raise InputValueError(
            f"adversarial_norm: only 'inf' is supported for robust training, got {norm!r}"
        )
    get_robust_loss(loss)
    return eps


@dataclass(frozen=True, kw_only=True)
class RobustResult(ConvexNNResult):
    """Solution of the robust program and its certificate.

    ``objective`` is the certified robust objective of the returned network
    (``robust_loss`` + weight decay, an upper bound on its true worst-case
    objective over the ball, for any network); ``convex_objective`` the robust
    program's objective at (v, w); ``bound`` a dual lower bound on the robust
    program's optimum over the given patterns; ``gap = objective - bound``.  The
    two objectives agree when the robust cones hold; ``residuals["robust_cone"]``
    is their largest violation.  The ADMM may return a network outside the
    cones (its unstable neurons certified by the triangle relaxation of
    :func:`certified_margins`) whose certified objective lies below the
    program's optimum, so the gap may be negative: status OPTIMAL then says the
    network is certified at least as good as the program's optimum, up to tol.

    Attributes (besides :class:`ConvexNNResult`'s)
    ----------------------------------------------
    robust_loss : certified worst-case mean training loss over the ball.
    eps : radius of the ell_inf ball.
    """

    robust_loss: float
    eps: float


def make_robust_result(problem: RobustProblem, v: torch.Tensor, w: torch.Tensor, *,
                       bound: float, solver: str, dual_scale: float = float("nan"),
                       residuals: Mapping[str, float] | None = None,
                       **fields: Any) -> RobustResult:
    """Assemble a :class:`RobustResult`, measuring the evidence on (v, w) itself."""
    objective = problem.objective(v, w)
    all_residuals = {"robust_cone": problem.cone_violation(v, w)}
    all_residuals.update(residuals or {})
    return RobustResult(
        v=v, w=w, eps=problem.eps, robust_loss=problem.robust_loss(v, w),
        objective=objective, bound=bound, gap=duality_gap(objective, bound),
        convex_objective=problem.program_objective(v, w), is_global=False,
        n_patterns=problem.base.n_patterns, n_neurons=int(problem.base.network(v, w)[1].numel()),
        solver=solver, dual_scale=dual_scale, residuals=all_residuals, **fields,
    )


ROBUST_IP_MAX_SIZE = 20_000
"""``solver="auto"`` solves the robust program by cvxpy up to this n P d: Clarabel was
the faster at n P d ~ 10^3 and the robust ADMM at ~ 10^5 (benchmarks/RESULTS.md)."""


def fit_robust(problem: ConvexReLUProblem, eps: float, norm: Any = "inf", solver: str = "admm",
               options: SolverOptions | None = None) -> RobustResult:
    """Train the robust network of section 7 over ``problem``'s patterns.

    Parameters
    ----------
    problem : a hinge or squared loss :class:`ConvexReLUProblem` (data, targets, patterns, lam).
    eps : radius of the ell_inf ball (>= 0; 0 gives the standard program).
    norm : ``"inf"`` (the only ball supported).
    solver : ``"admm"`` (:mod:`.admm`, torch, any device), ``"cvxpy"``
        (:mod:`.reference`, small problems) or ``"auto"`` (cvxpy when n P d <=
        ROBUST_IP_MAX_SIZE, else the ADMM).
    options : max_iter, tol, rho, verbose, cvxpy_solver.
    """
    robust = RobustProblem.from_problem(problem, eps, norm)
    options = options if options is not None else SolverOptions()
    if solver == "auto":
        solver = "cvxpy" if problem.size <= ROBUST_IP_MAX_SIZE else "admm"
    if solver == "admm":
        from certopt.convexnn.robust.admm import robust_admm
        return robust_admm(robust, options)
    if solver == "cvxpy":
        from certopt.convexnn.robust.reference import solve_robust_cvxpy
        return solve_robust_cvxpy(robust, options)
    raise InputValueError(
        f"solver: expected 'auto', 'admm' or 'cvxpy' for adversarial training, got {solver!r}"
    )
