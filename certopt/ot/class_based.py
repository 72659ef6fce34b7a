"""Class-based optimal transport with a sum-of-norms regulariser (Rahbar et al., ICML 2023).

Source points carry class labels; ``I_c`` are the rows of class ``c``.  The
problem (math note, section 3) is convex::

    min_{T >= 0, T 1 = a, T^T 1 = b}  <C, T> + reg * sum_j sum_c ||T[I_c, j]||_2
                                      + (gamma/2) ||T||_F^2 .

The group norms push every target column to take its mass from as few
source classes as possible.

Solver (``method="accelerated"``).  Dualising the two marginal constraints
with potentials ``alpha`` (n,) and ``beta`` (m,) gives the smooth concave dual

    D(alpha, beta) = <alpha, a> + <beta, b>
        - (1/(2 gamma)) sum_{c,j} [ ||[alpha_{I_c} + beta_j - C_{I_c, j}]_+|| - reg ]_+^2 ,

whose inner minimiser is the per-class block shrinkage of
:mod:`certopt.ot.group_shrinkage` and whose gradient is the pair of marginal
residuals ``(a - T 1, b - T^T 1)`` (Lipschitz constant at most
``(n + m) / gamma``).  It is maximised by the shared loop
:func:`certopt.ot.dual_ascent.maximize` (L-BFGS or FISTA with adaptive step
and restarts); every evaluation is a few passes over ``C`` in torch, on the
CPU or the GPU alike.

Certificate.  The plan ``T(alpha, beta)`` of a dual point meets the
marginals only approximately.  It is therefore *rounded* onto ``U(a, b)``
(:mod:`certopt.ot.rounding`; Altschuler, Weed & Rigollet 2017, Alg. 2: scale rows down to at most
``a``, columns down to at most ``b``, then add the rank-one correction
``err_r err_c^T / ||err_r||_1``), which moves at most
``2 (||T1 - a||_1 + ||T^T 1 - b||_1)`` of mass.  The returned plan is thus
exactly feasible (up to round-off) and its objective is a true upper bound
on the optimum, while ``D(alpha, beta)`` is a true lower bound (weak
duality): ``gap = objective - dual_value`` is a certified optimality gap.
The marginal error of the un-rounded dual plan is reported as the residual
``dual_plan_marginal``.  The rank-one correction gives tiny masses (of the
order of that error) to entries outside the dual plan's support.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import torch

from certopt.core.arrays import ArrayLike, check_scalar
from certopt.core.errors import InputTypeError, InputValueError
from certopt.ot.dual_ascent import METHODS as OPTIMIZERS
from certopt.ot.dual_ascent import maximize
from certopt.ot.group_shrinkage import group_norm_sum, group_shrinkage
from certopt.ot.problem import TransportProblem
from certopt.ot.result import TransportResult, make_result, rounded_plan_tol
from certopt.ot.rounding import round_to_marginals

Method = Literal["accelerated", "cvxpy"]
METHODS: tuple[str, ...] = ("accelerated", "cvxpy")


def class_labels(labels: ArrayLike, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Validate class labels of the ``n`` source points; return codes ``0..K-1`` and ``K``.

    Any integer values are accepted (floats only if integral); they are
    renumbered in increasing order.
    """
    if isinstance(labels, torch.Tensor):
        values = labels.detach().cpu().numpy()
    elif isinstance(labels, (np.ndarray, list, tuple)):
        values = np.asarray(labels)
    else:
        raise InputTypeError(
            f"labels: expected an integer array of length {n}, got {type(labels).__name__}")
    if values.ndim != 1 or values.shape[0] != n:
        raise InputValueError(
            f"labels: expected shape ({n},), one class per source point (row of C), "
            f"got shape {values.shape}")
    if np.issubdtype(values.dtype, np.floating):
        if not (np.all(np.isfinite(values)) and np.all(values == np.round(values))):
            raise InputTypeError("labels: expected integer class labels, got non-integer values")
    elif not np.issubdtype(values.dtype, np.integer):
        raise InputTypeError(f"labels: expected integer class labels, got dtype {values.dtype}")
    classes, codes = np.unique(values, return_inverse=True)
    return torch.as_tensor(codes.reshape(-1), dtype=torch.int64, device=device), len(classes)


class ClassBasedDual:
    """The smooth dual of class-based OT and the evaluation of its plans.

    Holds a validated problem, class codes ``labels`` (n,), ``n_classes``,
    ``reg`` and ``gamma``.  Potentials are the pair ``(alpha, beta)``.
    """

    def __init__(self, problem: TransportProblem, labels: torch.Tensor, n_classes: int,
                 reg: float, gamma: float):
        self.problem = problem
        self.cost = problem.dense_cost("class_based")
        self.labels = labels
        self.n_classes = n_classes
        self.reg = float(reg)
        self.gamma = float(gamma)
        self.cost_scale = float(self.cost.abs().max())
        self.max_mass = float(torch.maximum(problem.a.max(), problem.b.max()))
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def plan_and_value(self, alpha: torch.Tensor, beta: torch.Tensor, gamma: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The inner minimiser ``T(alpha, beta)`` and the dual value (0-d tensor).

        ``gamma`` overrides the quadratic weight (used for the gamma = 0 bound).
        """
        scores = alpha[:, None] + beta[None, :] - self.cost
        plan, conjugate = group_shrinkage(scores, self.labels, self.n_classes, self.reg,
                                          self.gamma if gamma is None else gamma)
        return plan, alpha @ self.problem.a + beta @ self.problem.b - conjugate

    def value_and_grad(self, potentials: tuple[torch.Tensor, torch.Tensor]
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``D(alpha, beta)`` and its gradient ``(a - T 1, b - T^T 1)``."""
        plan, value = self.plan_and_value(*potentials)
        self._last = (potentials[0].clone(), potentials[1].clone(), plan)
        return value, (self.problem.a - plan.sum(1), self.problem.b - plan.sum(0))

    def regulariser(self, plan: torch.Tensor) -> float:
        """``reg * sum_{c,j} ||T[I_c, j]|| + (gamma/2) ||T||_F^2``."""
        group = group_norm_sum(plan, self.labels, self.n_classes)
        return float(self.reg * group + 0.5 * self.gamma * (plan * plan).sum())

    def objective(self, plan: torch.Tensor) -> float:
        """The primal objective ``<C, T> + regulariser(T)``."""
        return self.problem.cost(plan) + self.regulariser(plan)

    def gap_bound(self, potentials: tuple[torch.Tensor, torch.Tensor],
                  grad: tuple[torch.Tensor, torch.Tensor]) -> float:
        """An upper bound on the certified gap of the rounded plan at ``potentials``.

        With ``T = T(alpha, beta)``, ``P(T) - D = -<(alpha, beta), grad>``
        exactly, and rounding moves ``||dT||_1 <= 2 ||grad||_1`` of mass; the
        objective changes by at most ``(max|C| + reg + gamma * max entry)``
        per unit of moved mass.  Cheap: no pass over ``C``.
        """
        alpha, beta = potentials
        moved = 2.0 * float(grad[0].abs().sum() + grad[1].abs().sum())
        lagrangian_gap = -float(alpha @ grad[0] + beta @ grad[1])
        max_entry = self.max_mass + moved
        return lagrangian_gap + moved * (self.cost_scale + self.reg + self.gamma * max_entry)

    def rounded_gap(self, potentials: tuple[torch.Tensor, torch.Tensor], value: float) -> float:
        """``objective(round(T)) - D``: the certified gap at ``potentials``.

        Reuses the plan of the last :meth:`value_and_grad` call when it was at
        the same potentials (the ascent loop measures right after evaluating).
        """
        alpha, beta = potentials
        if self._last is not None and torch.equal(alpha, self._last[0]) and torch.equal(
                beta, self._last[1]):
            plan = self._last[2]
        else:
            plan, _ = self.plan_and_value(alpha, beta)
        feasible = round_to_marginals(plan, self.problem.a, self.problem.b)
        return self.objective(feasible) - float(value)

    def criterion(self, tol: float):
        """The stopping measure for :func:`maximize`: an upper bound on the relative gap.

        Returns ``gap / max(1, |D|)`` where ``gap`` is the cheap
        :meth:`gap_bound` when that already meets ``tol``, else the exact
        certified gap of the rounded plan (one more pass over ``C``).
        """
        def relative_gap(potentials, value, grad) -> float:
            scale = max(1.0, abs(float(value)))
            bound = self.gap_bound(potentials, grad) / scale
            if bound <= tol:
                return bound
            return min(bound, self.rounded_gap(potentials, value) / scale)
        return relative_gap

    def column_start(self, alpha: torch.Tensor, steps: int = 60) -> torch.Tensor:
        """``beta`` such that every column of ``T(alpha, beta)`` carries its mass ``b_j``.

        A column's mass grows continuously and monotonically with ``beta_j``,
        from 0 at ``beta_j = min_i (C_ij - alpha_i)`` to at least ``b_j`` at
        that value ``+ reg + gamma b_j`` (its best entry alone then carries
        ``b_j``); ``steps`` bisection steps run on all columns at once.
        """
        low = (self.cost - alpha[:, None]).min(0).values
        high = low + self.reg + self.gamma * self.problem.b
        for _ in range(steps):
            middle = 0.5 * (low + high)
            plan, _ = self.plan_and_value(alpha, middle)
            short = plan.sum(0) < self.problem.b
            low, high = torch.where(short, middle, low), torch.where(short, high, middle)
        return high

    def zero_gamma_bound(self, alpha: torch.Tensor, beta: torch.Tensor) -> float:
        """A certified lower bound on the gamma = 0 optimum from any potentials.

        For gamma' > 0, ``OPT_0 >= OPT_gamma' - (gamma'/2) max_{T in U(a,b)} ||T||_F^2
        >= D_gamma'(alpha, beta) - (gamma'/2) min(max a, max b) sum(a)``
        (entries of a feasible plan are at most ``min(a_i, b_j)``); the best
        of a geometric grid of ``gamma'`` is returned.
        """
        a, b = self.problem.a, self.problem.b
        largest_norm = float(torch.minimum(a.max(), b.max()) * a.sum())
        best = -float("inf")
        for trial in np.geomspace(1e-12, 1e2, 57):
            _, value = self.plan_and_value(alpha, beta, gamma=float(trial))
            best = max(best, float(value) - 0.5 * float(trial) * largest_norm)
        return best


def class_based(
    a: ArrayLike | None,
    b: ArrayLike | None,
    C: ArrayLike,
    labels: ArrayLike,
    reg: float = 0.1,
    gamma: float = 1e-3,
    max_iter: int = 20000,
    tol: float = 1e-7,
    device: str | torch.device | None = None,
    verbose: bool = False,
    method: Method = "accelerated",
    optimizer: str = "lbfgs",
) -> TransportResult:
    """Class-based OT: a sum-of-norms penalty keeps the source classes apart in each column.

    Solves::

        min_{T >= 0, T 1 = a, T^T 1 = b}  <C, T> + reg * sum_j sum_c ||T[I_c, j]||_2
                                          + (gamma/2) ||T||_F^2

    where ``I_c = {i : labels[i] == c}`` (see the module docstring for the
    dual and the certificate).

    Parameters
    ----------
    a, b : (n,), (m,) arrays or None
        Source and target weights (nonnegative, equal totals); None: uniform.
    C : (n, m) array
        Cost matrix, numpy or torch; the plan comes back as the same kind,
        dtype and device.
    labels : (n,) integer array
        Class of every source point (any integer values).
    reg : float >= 0
        Weight of the group norms (lambda of the math note).
    gamma : float >= 0
        Quadratic term making the dual smooth; must be > 0 for
        ``method="accelerated"`` (gamma = 0 only with ``method="cvxpy"``).
        The dual's smoothness constant grows like ``(n + m) / gamma``.  Plan
        entries are about ``sum(a) / n``, so with normalised weights and
        costs of order 1 a gamma far below 1 makes the quadratic term
        negligible and the dual ill-conditioned (many more iterations);
        measured at n = 400: gamma = 1 converges in a few hundred
        evaluations, gamma = 1e-3 not within 3000.
    max_iter : int
        Budget of dual evaluations (each is a few passes over ``C``).
    tol : float
        Stop when the certified gap of the rounded plan is at most
        ``tol * max(1, |dual_value|)``.  Float32 (CUDA) computations cannot
        certify much below ``1e-6``.
    device : "cpu", "cuda", torch.device or None (``C``'s device)
    verbose : bool
        Progress bar with the dual value and the criterion.
    method : "accelerated" (smooth dual, torch) or "cvxpy" (conic reference, small sizes)
    optimizer : "lbfgs" or "fista"
        Ascent algorithm of :func:`certopt.ot.dual_ascent.maximize` for the
        accelerated method.

    Returns
    -------
    TransportResult
        ``plan`` (n, m), exactly feasible after rounding; ``cost`` = <C, plan>;
        ``objective`` = cost + reg * sum of group norms + (gamma/2)||plan||^2;
        ``dual_value`` = D(alpha, beta), a certified lower bound (for gamma = 0
        via :meth:`ClassBasedDual.zero_gamma_bound`); ``gap``;
        ``potentials`` = (alpha, beta); ``residuals`` with
        ``source_marginal``, ``target_marginal`` (of the returned plan) and
        ``dual_plan_marginal`` (of the plan before rounding); ``status``
        OPTIMAL when the tolerance was met, MAX_ITER or INACCURATE (with a
        :class:`~certopt.core.errors.ConvergenceWarning`) otherwise.
    """
    reg = check_scalar(reg, "reg", low=0)
    gamma = check_scalar(gamma, "gamma", low=0)
    if method not in METHODS:
        raise InputValueError(f"method: expected one of {METHODS}, got {method!r}")
    if optimizer not in OPTIMIZERS:
        raise InputValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if method == "accelerated" and gamma == 0:
        raise InputValueError(
            "gamma: method='accelerated' needs gamma > 0 (the quadratic term makes the dual "
            "smooth); use a small gamma > 0 or method='cvxpy' for gamma = 0")
    max_iter = check_scalar(max_iter, "max_iter", low=1, integer=True)
    tol = check_scalar(tol, "tol", low=0, low_inclusive=False)
    problem = TransportProblem.from_inputs(a, b, C, device)
    codes, n_classes = class_labels(labels, problem.shape[0], problem.a.device)
    dual = ClassBasedDual(problem, codes, n_classes, reg, gamma)
    if method == "cvxpy":
        return _solve_cvxpy(dual)
    return _solve_accelerated(dual, max_iter=max_iter, tol=tol, verbose=verbose,
                              optimizer=optimizer)


def _solve_accelerated(dual: ClassBasedDual, *, max_iter: int, tol: float, verbose: bool,
                       optimizer: str) -> TransportResult:
    start = time.perf_counter()
    problem = dual.problem
    n, m = problem.shape
    alpha0 = problem.a.new_zeros(n)
    out = maximize(dual.value_and_grad, (alpha0, dual.column_start(alpha0)), dual.criterion(tol),
                   tol=tol, max_iter=max_iter, method=optimizer, lipschitz=1.0 / dual.gamma,
                   verbose=verbose, desc="class-based OT")
    alpha, beta = out.x
    plan, value = dual.plan_and_value(alpha, beta)
    dual_plan_marginal = problem.marginal_error(plan)
    feasible = round_to_marginals(plan, problem.a, problem.b)
    return make_result(
        problem, feasible,
        regulariser=dual.regulariser(feasible),
        dual_value=float(value),
        potentials=(alpha, beta),
        status=out.status,
        n_iter=out.n_iter,
        solve_time=time.perf_counter() - start,
        history=out.history,
        extra={"dual_plan_marginal": dual_plan_marginal},
        marginal_tol=rounded_plan_tol(problem),
    )


def _solve_cvxpy(dual: ClassBasedDual) -> TransportResult:
    from certopt.ot.reference import class_based_reference

    start = time.perf_counter()
    problem = dual.problem
    cpu = {"dtype": torch.float64, "device": "cpu"}
    ref = class_based_reference(*(t.to(**cpu).numpy() for t in (problem.a, problem.b, dual.cost)),
                                dual.labels.cpu().numpy(), dual.reg, dual.gamma)
    work = {"dtype": problem.a.dtype, "device": problem.a.device}
    if not np.all(np.isfinite(ref.plan)):      # the conic solver failed: report its status
        n, m = problem.shape
        nan = float("nan")
        return make_result(problem, torch.full((n, m), nan, **work), regulariser=nan,
                           dual_value=nan, potentials=(torch.full((n,), nan, **work),
                                                       torch.full((m,), nan, **work)),
                           status=ref.status, n_iter=0, solve_time=time.perf_counter() - start)
    plan = torch.as_tensor(ref.plan, **work).clamp_min(0)
    alpha, beta = torch.as_tensor(ref.alpha, **work), torch.as_tensor(ref.beta, **work)
    solver_marginal = problem.marginal_error(plan)
    feasible = round_to_marginals(plan, problem.a, problem.b)
    if dual.gamma > 0:
        bound = float(dual.plan_and_value(alpha, beta)[1])
    else:
        bound = dual.zero_gamma_bound(alpha, beta)
    return make_result(
        problem, feasible,
        regulariser=dual.regulariser(feasible),
        dual_value=bound,
        potentials=(alpha, beta),
        status=ref.status,
        n_iter=0,
        solve_time=time.perf_counter() - start,
        extra={"dual_plan_marginal": solver_marginal},
        marginal_tol=rounded_plan_tol(problem),
    )
