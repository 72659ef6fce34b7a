"""A gated-ReLU network fitted to global optimality: the sampled path's gated program.

Model, with x~ = [x, 1] (``fit_intercept``) and fixed gates g_i (P, d~):

    f(x) = sum_i 1[x~^T g_i >= 0] x~^T u_i

Training minimises the convex group lasso (math note, section 6, with the
squared loss), D_i = diag(1[X~ g_i >= 0]):

    min_u  (1/2n) ||sum_i D_i X~ u_i - y||^2 + lam sum_i ||u_i||

by FISTA (:func:`certopt.convexnn.sampled.fista`).  Certificate (section 4
without cones): for any l with ||X~^T D_i l|| <= lam for every i, -L*(l) is a
lower bound on the optimum; the gradient of the loss at the solution, scaled
into that set, gives it.  Status OPTIMAL when objective - bound <= tol |bound|
(the test of every certopt solver); FISTA's own tolerance is tightened tenfold
up to GATED_ROUNDS times until it is.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from certopt.convexnn.certificate import scaled_dual_bound, within_tolerance
from certopt.convexnn.estimators import _validate
from certopt.convexnn.losses import get_loss
from certopt.convexnn.problem import (
    ConvexReLUProblem,
    SolverOptions,
    check_flag,
    check_gates,
    check_pattern_memory,
    random_generator,
)
from certopt.convexnn.sampled import GatedProgram, fista
from certopt.core.arrays import check_scalar, spec_of
from certopt.core.errors import InputValueError
from certopt.core.result import SolverResult, Status, duality_gap

GATED_ROUNDS = 4
"""FISTA runs at most (each at a tenth of the previous first-order tolerance)."""


class GatedReLUNet(torch.nn.Module):
    """f(x) = sum_i 1[x~^T g_i >= 0] x~^T u_i with fixed ``gates`` and weights (P, d~)."""

    def __init__(self, gates: torch.Tensor, weights: torch.Tensor, fit_intercept: bool):
        super().__init__()
        self.fit_intercept = fit_intercept
        self.register_buffer("gates", gates)
        self.weights = torch.nn.Parameter(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n,) outputs."""
        x_aug = ConvexReLUProblem.augment(x, self.fit_intercept)
        return ((x_aug @ self.gates.T >= 0) * (x_aug @ self.weights.T)).sum(dim=1)


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


class GatedReLURegressor(RegressorMixin, BaseEstimator):
    """Two-layer gated-ReLU regression, globally optimal for its gates, with a certificate.

    Parameters
    ----------
    lam : group-lasso weight lam > 0.
    n_patterns : number of Gaussian gates to sample (duplicated patterns dropped).
    patterns : custom gate vectors (G, d) or (G, d + 1) (bias weight last), instead.
    fit_intercept : append a constant 1 to x (the gates and weights then have a bias).
    max_iter : FISTA steps per round; tol : the certified relative gap to reach.
    random_state : seed of the sampled gates.  verbose : progress bar.

    Fitted: ``gates_`` and ``weights_`` (P, d~), ``objective_``, ``certificate_`` (a
    :class:`~certopt.core.result.SolverResult`), ``n_iter_``.  ``to_torch()`` returns the
    network as a :class:`GatedReLUNet` with fixed gates.  Outputs follow X's kind and dtype.
    """

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
        problem = ConvexReLUProblem(X_aug, torch.as_tensor(y, dtype=torch.float64), D,
                                    get_loss("squared"), lam,
                                    fit_intercept)
        self.certificate_ = self._solve(problem, options)
        self.objective_ = self.certificate_.objective
        self.n_iter_ = max(1, self.certificate_.n_iter)
        return self

    def _solve(self, problem: ConvexReLUProblem, options: SolverOptions) -> SolverResult:
        start = time.perf_counter()
        u = torch.zeros(problem.n_patterns, problem.n_features, dtype=problem.X.dtype)
        no_cones = torch.zeros_like(problem.D)
        n_iter, first_order_tol = 0, options.tol
        for _ in range(GATED_ROUNDS):
            round_options = dataclasses.replace(options, tol=first_order_tol)
            u, status, steps = fista(GatedProgram(problem), round_options, start=u)
            n_iter += steps
            objective = problem.convex_objective(u, torch.zeros_like(u))
            dual = problem.loss.gradient(problem.predict_convex(u, torch.zeros_like(u)),
                                         problem.y)
            bound, _ = scaled_dual_bound(problem, dual, no_cones, no_cones)
            if within_tolerance(objective, bound, options.tol) or status is Status.NUMERICAL:
                break
            first_order_tol /= 10.0
        if status is not Status.NUMERICAL:
            status = (Status.OPTIMAL if within_tolerance(objective, bound, options.tol)
                      else Status.MAX_ITER)
        self.weights_ = u.numpy()
        return SolverResult(objective=objective, bound=bound,
                            gap=duality_gap(objective, bound), status=status,
                            residuals={"support_size": float((u.norm(dim=1) > 0).sum())},
                            n_iter=n_iter, solve_time=time.perf_counter() - start)

    def predict(self, X: Any) -> np.ndarray | torch.Tensor:
        """Network outputs f(x), shape (n,), in X's kind and dtype."""
        check_is_fitted(self, "weights_")
        spec = spec_of(X)
        X = _validate(self, X, reset=False)
        with torch.no_grad():
            return spec.wrap(self.to_torch()(torch.from_numpy(X)))

    def to_torch(self) -> GatedReLUNet:
        """The fitted network as a torch module with fixed gates (float64)."""
        check_is_fitted(self, "weights_")
        return GatedReLUNet(self.gates_.clone(), torch.from_numpy(self.weights_.copy()),
                            bool(self.fit_intercept))
