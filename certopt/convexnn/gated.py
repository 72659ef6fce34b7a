"""Gated-ReLU networks fitted to global optimality: the sampled path's gated program.

Model, with x~ = [x, 1] (``fit_intercept``) and fixed gates g_i (P, d~):

    f(x) = sum_i 1[x~^T g_i >= 0] x~^T u_i

Training minimises the convex group lasso (math note, section 6),
D_i = diag(1[X~ g_i >= 0]):

    min_u  L(sum_i D_i X~ u_i) + lam sum_i ||u_i||,   L(z) = (1/n) sum_k l(z_k, y_k)

with the squared loss (:class:`GatedReLURegressor`) or the hinge or logistic
loss on labels in {-1, +1} (:class:`GatedReLUClassifier`, one program per class
for more than two classes, one-vs-rest), by FISTA
(:func:`certopt.convexnn.sampled.fista`), or, for the hinge loss up to
n P d~ = ``GATED_IP_MAX_SIZE["hinge"]``, by cvxpy + Clarabel (the
exact SOCP, :func:`certopt.convexnn.reference.solve_gated_cvxpy`, whose
multiplier of z = sum_i D_i X~ u_i is the dual candidate).  The hinge loss enters FISTA through
its Moreau envelope of width s (:class:`~certopt.convexnn.sampled.GatedProgram`),
which is within s / 2 of it; each round divides s by GATED_SMOOTHING_DECAY.
Certificate (section 4 without cones): for any l with ||X~^T D_i l|| <= lam for
every i, -L*(l) is a lower bound on the optimum; the (smoothed) loss gradient at
the solution, scaled into that set, gives it.  Status OPTIMAL when F - bound <=
tol |bound| for F the exact (unsmoothed) objective (the test of every certopt
solver); FISTA's own tolerance is tightened tenfold up to ``GATED_ROUNDS[loss]``
times until it is (INACCURATE or MAX_ITER, with a ConvergenceWarning, when not).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from certopt.convexnn.certificate import scaled_dual_bound, within_tolerance
from certopt.convexnn.estimators import _validate, one_vs_rest_targets, predicted_labels
from certopt.convexnn.losses import get_loss
from certopt.convexnn.problem import (
    ConvexReLUProblem,
    SolverOptions,
    check_flag,
    check_gates,
    check_pattern_memory,
    random_generator,
)
from certopt.convexnn.reference import solve_gated_cvxpy
from certopt.convexnn.sampled import GatedProgram, fista
from certopt.core.arrays import ArraySpec, check_scalar, spec_of
from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.result import SolverResult, Status, duality_gap

CLASSIFICATION_LOSSES = ("hinge", "logistic")
"""The losses of :class:`GatedReLUClassifier`."""
GATED_ROUNDS = {"squared": 4, "logistic": 4, "hinge": 5}
"""FISTA runs at most per loss (each at a tenth of the previous first-order tolerance and,
for the hinge loss, a tenth of the smoothing width)."""
GATED_IP_MAX_SIZE = {"hinge": 5_000_000}
"""Largest n P d~ whose gated program goes to the interior point, per loss (others: FISTA).
Measured for the hinge at the defaults (benchmarks/RESULTS.md, gated hinge): Clarabel
certified gaps <= 1.3e-6 in 3-13 CPU s up to n P d~ = 4.2e6, where FISTA through
narrowing smoothings stalled at certified gaps of 1e-3 to 5e-3 after 22-63 CPU s."""
GATED_SMOOTHING = 0.1
"""Initial width (margin units) of the hinge loss's Moreau smoothing."""
GATED_SMOOTHING_DECAY = 10.0
"""Factor by which each round narrows the hinge loss's smoothing."""


class GatedReLUNet(torch.nn.Module):
    """f(x) = sum_i 1[x~^T g_i >= 0] x~^T u_i with fixed ``gates`` (P, d~) and ``weights``
    (P, d~) (output (n,)) or (k, P, d~) (k outputs, output (n, k))."""

    def __init__(self, gates: torch.Tensor, weights: torch.Tensor, fit_intercept: bool):
        super().__init__()
        self.fit_intercept = fit_intercept
        self.register_buffer("gates", gates)
        self.weights = torch.nn.Parameter(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n,) outputs, or (n, k) for k output weight blocks."""
        x_aug = ConvexReLUProblem.augment(x, self.fit_intercept)
        values = x_aug @ self.weights.transpose(-1, -2)          # (n, P) or (k, n, P)
        outputs = ((x_aug @ self.gates.T >= 0) * values).sum(dim=-1)
        return outputs.T if outputs.dim() == 2 else outputs


def _gates_and_patterns(X_aug: torch.Tensor, gates: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gates with distinct, non-empty patterns (the first gate of each) and those patterns."""
    masks = (X_aug @ gates.T >= 0).T
    _, first = np.unique(masks.numpy(), axis=0, return_index=True)
    keep = [int(i) for i in np.sort(first) if bool(masks[int(i)].any())]
    if not keep:
        raise InputValueError("X: every gate's activation pattern is empty; expected more "
                              "n_patterns, other patterns or another random_state")
    return gates[keep], masks[keep].to(X_aug.dtype)


def _certified(problem: ConvexReLUProblem, u: torch.Tensor, duals: list[torch.Tensor]
               ) -> tuple[float, float]:
    """(F, bound): the exact gated objective at u and the best scaled bound of ``duals``."""
    zero = torch.zeros_like(u)
    no_cones = torch.zeros_like(problem.D)
    bounds = [scaled_dual_bound(problem, dual, no_cones, no_cones)[0] for dual in duals]
    return problem.convex_objective(u, zero), max(bounds, default=float("-inf"))


def _fista_rounds(problem: ConvexReLUProblem, options: SolverOptions
                  ) -> tuple[torch.Tensor, Status, list[torch.Tensor], int]:
    """FISTA in rounds, warm started, each at a tenth of the previous first-order tolerance
    (and hinge smoothing width), until the certificate meets ``options.tol``; returns (u,
    status of the last run, its dual candidate, steps)."""
    u = torch.zeros(problem.n_patterns, problem.n_features, dtype=problem.X.dtype)
    zero = torch.zeros_like(u)
    n_iter, first_order_tol, smoothing = 0, options.tol, GATED_SMOOTHING
    for _ in range(GATED_ROUNDS[problem.loss.name]):
        program = GatedProgram(problem, smoothing)
        u, status, steps = fista(program, dataclasses.replace(options, tol=first_order_tol),
                                 start=u)
        n_iter += steps
        duals = [program.smoothed_loss(problem.predict_convex(u, zero))[1]]
        if within_tolerance(*_certified(problem, u, duals), options.tol) \
                or status is Status.NUMERICAL:
            break
        first_order_tol /= 10.0
        smoothing /= GATED_SMOOTHING_DECAY
    return u, status, duals, n_iter


def solve_gated_program(problem: ConvexReLUProblem, options: SolverOptions
                        ) -> tuple[torch.Tensor, SolverResult]:
    """(u (P, d~), certified result) of the gated program of ``problem`` (its D, loss, lam).

    The hinge loss up to n P d~ = ``GATED_IP_MAX_SIZE["hinge"]`` is solved exactly by
    cvxpy (:func:`~certopt.convexnn.reference.solve_gated_cvxpy`); otherwise (or when
    cvxpy returns no solution) FISTA in rounds until F - bound <= tol |bound| (module
    docstring).
    """
    start = time.perf_counter()
    duals: list[torch.Tensor] = []
    if problem.size <= GATED_IP_MAX_SIZE.get(problem.loss.name, 0):
        u, status, duals, n_iter = solve_gated_cvxpy(problem, options)
    if not duals:  # too large for the interior point, or it returned no solution
        u, status, duals, n_iter = _fista_rounds(problem, options)
    objective, bound = _certified(problem, u, duals)
    if within_tolerance(objective, bound, options.tol):  # the certificate is the proof
        status = Status.OPTIMAL
    elif status is not Status.NUMERICAL:
        status = Status.MAX_ITER if status is Status.MAX_ITER else Status.INACCURATE
    if status is not Status.OPTIMAL:
        warnings.warn(f"gated: certified relative gap {(objective - bound) / abs(bound):.2e} "
                      f"> tol={options.tol} after {n_iter} iterations", ConvergenceWarning,
                      stacklevel=3)
    result = SolverResult(objective=objective, bound=bound, gap=duality_gap(objective, bound),
                          status=status,
                          residuals={"support_size": float((u.norm(dim=1) > 0).sum())},
                          n_iter=n_iter, solve_time=time.perf_counter() - start)
    return u, result


class _GatedReLUBase(BaseEstimator):
    """Fitting, prediction and export shared by the gated estimators."""

    _loss: str

    def _fit_targets(self, X: np.ndarray, targets: list[np.ndarray]) -> None:
        """Sample (or check) the gates and solve one gated program per target vector."""
        loss = get_loss(self._loss)
        lam = check_scalar(self.lam, "lam", low=0.0, low_inclusive=False)
        tol = check_scalar(self.tol, "tol", low=0.0, low_inclusive=False)
        max_iter = check_scalar(self.max_iter, "max_iter", low=1, integer=True)
        fit_intercept = check_flag(self.fit_intercept, "fit_intercept")
        options = SolverOptions(max_iter=max_iter, tol=tol,
                                verbose=check_flag(self.verbose, "verbose"))
        X_aug = ConvexReLUProblem.augment(torch.from_numpy(X), fit_intercept)
        if self.patterns is not None:
            gates = check_gates(self.patterns, X.shape[1], X_aug.shape[1], "patterns")
        else:
            count = check_scalar(self.n_patterns, "n_patterns", low=1, integer=True)
            gates = torch.randn(count, X_aug.shape[1], dtype=torch.float64,
                                generator=random_generator(self.random_state))
        check_pattern_memory(gates.shape[0], X.shape[0])
        self.gates_, D = _gates_and_patterns(X_aug, gates)
        weights, results = [], []
        for target in targets:
            problem = ConvexReLUProblem(X_aug, torch.as_tensor(target, dtype=torch.float64), D,
                                        loss, lam, fit_intercept)
            u, result = solve_gated_program(problem, options)
            weights.append(u)
            results.append(result)
        self.weights_ = (weights[0] if len(weights) == 1 else torch.stack(weights)).numpy()
        self.certificate_ = results[0] if len(results) == 1 else _sum_results(results)
        self.objective_ = self.certificate_.objective
        self.n_iter_ = max(1, self.certificate_.n_iter)

    def _outputs(self, X: Any) -> tuple[torch.Tensor, ArraySpec]:
        """Network outputs, (n,) or (n, k), float64, and the kind of X."""
        check_is_fitted(self, "weights_")
        spec = spec_of(X)
        X = _validate(self, X, reset=False)
        with torch.no_grad():
            return self.to_torch()(torch.from_numpy(X)), spec

    def to_torch(self) -> GatedReLUNet:
        """The fitted network as a torch module with fixed gates (float64)."""
        check_is_fitted(self, "weights_")
        return GatedReLUNet(self.gates_.clone(), torch.from_numpy(self.weights_.copy()),
                            bool(self.fit_intercept))


def _sum_results(results: list[SolverResult]) -> SolverResult:
    """The certificate of a sum of separate programs: sums of objectives and bounds; OPTIMAL
    when every part is (each part meets tol relative to its own bound, so the sum does)."""
    objective = sum(r.objective for r in results)
    bound = sum(r.bound for r in results)
    worst = next((r.status for r in results if r.status is not Status.OPTIMAL), Status.OPTIMAL)
    return SolverResult(objective=objective, bound=bound, gap=duality_gap(objective, bound),
                        status=worst,
                        residuals={"support_size": sum(r.residuals["support_size"]
                                                       for r in results)},
                        n_iter=sum(r.n_iter for r in results),
                        solve_time=sum(r.solve_time for r in results))


_PARAMETERS = """
    Parameters
    ----------
    lam : group-lasso weight lam > 0.
    n_patterns : number of Gaussian gates to sample (duplicated patterns dropped).
    patterns : custom gate vectors (G, d) or (G, d + 1) (bias weight last), instead.
    fit_intercept : append a constant 1 to x (the gates and weights then have a bias).
    max_iter : FISTA steps per round; tol : the certified relative gap to reach.
    random_state : seed of the sampled gates.  verbose : progress bar.
"""


class GatedReLURegressor(RegressorMixin, _GatedReLUBase):
    __doc__ = """Two-layer gated-ReLU regression, globally optimal for its gates, with a
    certificate (squared loss, (1/2n) ||f(X) - y||^2 + lam sum_i ||u_i||).
    """ + _PARAMETERS + """
    Fitted: ``gates_`` and ``weights_`` (P, d~), ``objective_``, ``certificate_`` (a
    :class:`~certopt.core.result.SolverResult`), ``n_iter_``.  ``to_torch()`` returns the
    network as a :class:`GatedReLUNet` with fixed gates.  Outputs follow X's kind and dtype.
    """

    _loss = "squared"

    def __init__(self, lam: float = 1e-3, n_patterns: int = 100, patterns: Any = None,
                 fit_intercept: bool = True, max_iter: int = 10_000, tol: float = 1e-4,
                 random_state: Any = None, verbose: bool = False):
        self.lam = lam
        self.n_patterns = n_patterns
        self.patterns = patterns
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X: Any, y: Any) -> GatedReLURegressor:
        """Fit to X (n, d) and real targets y (n,)."""
        X, y = _validate(self, X, y, reset=True, y_numeric=True)
        self._fit_targets(X, [y])
        return self

    def predict(self, X: Any) -> np.ndarray | torch.Tensor:
        """Network outputs f(x), shape (n,), in X's kind and dtype."""
        values, spec = self._outputs(X)
        return spec.wrap(values)


class GatedReLUClassifier(ClassifierMixin, _GatedReLUBase):
    __doc__ = """Two-layer gated-ReLU classifier, globally optimal for its gates, with a
    certificate: L(f(X)) + lam sum_i ||u_i|| with the ``"hinge"`` or ``"logistic"`` loss
    on labels mapped to {-1, +1} (``classes_[1]`` is +1); more classes one-vs-rest (one
    program per class on the same gates, certified by the sums of objectives and bounds).
    """ + _PARAMETERS + """    loss : ``"hinge"`` or ``"logistic"``.

    Fitted: ``classes_``, ``gates_``, ``weights_`` ((P, d~), or (k, P, d~) for k > 2
    classes), ``objective_``, ``certificate_``, ``n_iter_``.  ``to_torch()`` returns the
    network (its output is ``decision_function``).  Outputs follow X's kind and dtype.
    """

    def __init__(self, loss: str = "hinge", lam: float = 1e-3, n_patterns: int = 100,
                 patterns: Any = None, fit_intercept: bool = True, max_iter: int = 10_000,
                 tol: float = 1e-4, random_state: Any = None, verbose: bool = False):
        self.loss = loss
        self.lam = lam
        self.n_patterns = n_patterns
        self.patterns = patterns
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose

    @property
    def _loss(self) -> str:
        if self.loss not in CLASSIFICATION_LOSSES:
            raise InputValueError(
                f"loss: expected one of {CLASSIFICATION_LOSSES}, got {self.loss!r}")
        return self.loss

    def fit(self, X: Any, y: Any) -> GatedReLUClassifier:
        """Fit to X (n, d) and labels y (n,) of at least two classes."""
        X, y = _validate(self, X, y, reset=True)
        self.classes_, targets = one_vs_rest_targets(y)
        self._fit_targets(X, targets)
        return self

    def decision_function(self, X: Any) -> np.ndarray | torch.Tensor:
        """Network outputs: (n,) for two classes (> 0 means ``classes_[1]``), else (n, k)."""
        values, spec = self._outputs(X)
        return spec.wrap(values)

    def predict(self, X: Any) -> np.ndarray | torch.Tensor:
        """Predicted labels, shape (n,): a tensor on X's device when X is a tensor and the
        labels are numeric, else a numpy array."""
        values, spec = self._outputs(X)
        return predicted_labels(self.classes_, values, spec)
