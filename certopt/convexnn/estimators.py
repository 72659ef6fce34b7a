"""scikit-learn estimators that train two-layer ReLU networks globally.

``fit`` builds a :class:`~certopt.convexnn.problem.ConvexReLUProblem` (patterns
sampled, all, or from given gates), solves its convex program with the solver
named by ``solver`` (:data:`~certopt.convexnn.solvers.SOLVERS`; ``"auto"`` by
size), turns the solution into a ReLU network f(x) = sum_j alpha_j (u_j^T [x, 1])_+
and keeps the certificate; ``fit_path`` does so along a regularisation path.

Fitted attributes: ``hidden_weights_`` (m, d + fit_intercept), the rows u_j
(bias last); ``output_weights_`` (m, n_outputs), the alpha_j (for one-vs-rest
multi-class or multi-output regression, column k holds output k's neurons,
zeros elsewhere); ``objective_`` (F of the network, math note section 1;
summed over the one-vs-rest or per-output programs); ``certificate_`` (a
:class:`~certopt.convexnn.result.ConvexNNResult`); ``n_neurons_``;
``n_iter_`` (solver iterations, at least 1).
Outputs follow X: numpy in, numpy out; a tensor in, a tensor on its device out;
float32 in, float32 out (float64 for non-float input).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from certopt.convexnn.admm import WarmStart, path_options, solve_admm_from
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions, check_flag
from certopt.convexnn.result import ConvexNNResult, combine_results
from certopt.convexnn.solvers import SOLVERS, choose_solver, solve
from certopt.core.arrays import ArraySpec, as_tensor, check_scalar, resolve_device, spec_of
from certopt.core.errors import InputValueError


def one_vs_rest_targets(y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(classes, the +-1 targets of each binary program) for labels y (n,): for two
    classes one program with ``classes[1]`` as +1, for k > 2 one per class (one-vs-rest).
    Fewer than two classes is an error naming y."""
    check_classification_targets(y)
    classes = np.unique(y)
    if classes.shape[0] < 2:
        raise InputValueError(
            f"y: a classifier needs samples of at least two classes, got one class "
            f"({classes[0]!r})"
        )
    positives = classes[1:] if classes.shape[0] == 2 else classes
    return classes, [np.where(y == c, 1.0, -1.0) for c in positives]


def predicted_labels(classes: np.ndarray, values: torch.Tensor, spec: ArraySpec
                     ) -> np.ndarray | torch.Tensor:
    """The labels of network outputs ``values``, (n,) (> 0 means ``classes[1]``) or (n, k)
    (the largest wins): a tensor on X's device when X (``spec``) is a tensor and the labels
    are numeric (torch has no strings), else a numpy array."""
    index = (values > 0).long() if values.dim() == 1 else values.argmax(dim=1)
    labels = classes[index.numpy()]
    if spec.is_torch and labels.dtype.kind in "biuf":
        return torch.as_tensor(labels, device=spec.device)
    return labels


def _validate(estimator: BaseEstimator, X: Any, y: Any = "no_validation", *, reset: bool,
              y_numeric: bool = False, multi_output: bool = False) -> Any:
    """sklearn's validation, with its ValueErrors re-raised as InputValueError."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    try:
        if isinstance(y, str) and y == "no_validation":
            return validate_data(estimator, X, reset=reset, dtype=np.float64)
        return validate_data(estimator, X, y, reset=reset, dtype=np.float64,
                             y_numeric=y_numeric, multi_output=multi_output)
    except InputValueError:
        raise
    except ValueError as exc:
        raise InputValueError(f"X, y: {exc}") from exc


def _check_path(lams: Any) -> list[float]:
    """The regularisation path as distinct positive floats, largest first."""
    values = as_tensor(lams, "lams", ndim=1)
    if values.numel() == 0 or not bool((values > 0).all()):
        raise InputValueError(f"lams: expected a non-empty 1-D array of values > 0, got {lams!r}")
    return sorted({float(v) for v in values}, reverse=True)


class _ConvexReLUBase(BaseEstimator):
    """Shared fitting and prediction of the two estimators."""

    _loss: str

    def _options(self) -> SolverOptions:
        max_iter = check_scalar(self.max_iter, "max_iter", low=1, integer=True)
        tol = check_scalar(self.tol, "tol", low=0.0, low_inclusive=False)
        return SolverOptions(max_iter=max_iter, tol=tol,
                             verbose=check_flag(self.verbose, "verbose"))

    def _check_solver(self) -> str:
        if not isinstance(self.solver, str) or self.solver not in SOLVERS:
            raise InputValueError(
                f"solver: expected one of {sorted(SOLVERS)}, got {self.solver!r}"
            )
        return self.solver

    def _problems(self, X: np.ndarray, targets: list[np.ndarray]) -> list[ConvexReLUProblem]:
        """One convex program per column of targets (the same patterns for each)."""
        device = resolve_device(self.device)
        return [ConvexReLUProblem.from_data(
            X, target, lam=self.lam, loss=self._loss, n_patterns=self.n_patterns,
            fit_intercept=self.fit_intercept, random_state=self.random_state, device=device,
            gates=self.patterns,
        ) for target in targets]

    def _store(self, problems: list[ConvexReLUProblem], results: list[ConvexNNResult]) -> None:
        """Set the fitted network and certificate from one result per program."""
        hidden, outputs = [], []
        for column, (problem, result) in enumerate(zip(problems, results)):
            U, alpha = problem.network(result.v, result.w)
            hidden.append(U.detach().to("cpu", torch.float64))
            block = torch.zeros(alpha.shape[0], len(results), dtype=torch.float64)
            block[:, column] = alpha.detach().to("cpu", torch.float64)
            outputs.append(block)
        self.hidden_weights_ = torch.cat(hidden).numpy()
        self.output_weights_ = torch.cat(outputs).numpy()
        self.certificate_ = results[0] if len(results) == 1 else combine_results(results)
        self.objective_ = float(sum(r.objective for r in results))
        self.n_neurons_ = int(self.hidden_weights_.shape[0])
        self.n_iter_ = max(1, self.certificate_.n_iter)

    def _fit_targets(self, X: np.ndarray, targets: list[np.ndarray]) -> None:
        """Solve one convex program per column of targets; store the network."""
        solver, options = self._check_solver(), self._options()
        problems = self._problems(X, targets)
        self._store(problems, [self._solve(problem, solver, options) for problem in problems])

    def _fit_path_targets(self, X: np.ndarray, targets: list[np.ndarray], lams: Any
                          ) -> list[Any]:
        """One fitted copy of this estimator per lam (decreasing), the ADMM warm started
        (with the options of :func:`~certopt.convexnn.admm.path_options`)."""
        solver, options = self._check_solver(), self._options()
        lams = _check_path(lams)
        problems = self._problems(X, targets)
        starts: list[WarmStart | None] = [None] * len(problems)
        fitted = []
        for lam in lams:
            at_lam = [dataclasses.replace(problem, lam=lam) for problem in problems]
            results = []
            for k, problem in enumerate(at_lam):
                name = choose_solver(problem, options) if solver == "auto" else solver
                if name == "admm" and not self._robust_eps():
                    result, starts[k] = solve_admm_from(problem, path_options(problem, options),
                                                         starts[k])
                else:
                    result = self._solve(problem, solver, options)
                results.append(result)
            estimator = clone(self).set_params(lam=lam)
            for name in ("n_features_in_", "feature_names_in_", "classes_", "n_outputs_"):
                if hasattr(self, name):
                    setattr(estimator, name, getattr(self, name))
            estimator._store(at_lam, results)
            fitted.append(estimator)
        return fitted

    def _robust_eps(self) -> float:
        """The adversarial radius (0: standard training; the classifier overrides it)."""
        return 0.0

    def _solve(self, problem: ConvexReLUProblem, solver: str,
               options: SolverOptions) -> ConvexNNResult:
        return solve(problem, options, solver)

    def _decision(self, X: Any) -> tuple[torch.Tensor, ArraySpec]:
        """(n, n_outputs) float64 outputs and the kind, dtype and device of X."""
        check_is_fitted(self, "hidden_weights_")
        spec = spec_of(X)
        X = _validate(self, X, reset=False)
        X_aug = ConvexReLUProblem.augment(torch.from_numpy(X), self.fit_intercept)
        hidden = torch.relu(X_aug @ torch.from_numpy(self.hidden_weights_).T)
        return hidden @ torch.from_numpy(self.output_weights_), spec

    def to_torch(self) -> torch.nn.Sequential:
        """The network as ``Sequential(Linear(d, m, bias=fit_intercept), ReLU(), Linear(m, k))``.

        k = 1 for regression and binary classification (k = n_classes for
        one-vs-rest); float64; its output equals ``decision_function`` (``predict``
        for the regressor; a column for k = 1).
        """
        check_is_fitted(self, "hidden_weights_")
        U = torch.from_numpy(self.hidden_weights_)
        A = torch.from_numpy(self.output_weights_)
        m, d = U.shape[0], U.shape[1] - int(self.fit_intercept)
        first = torch.nn.Linear(d, m, bias=self.fit_intercept, dtype=torch.float64)
        second = torch.nn.Linear(m, A.shape[1], bias=False, dtype=torch.float64)
        with torch.no_grad():
            first.weight.copy_(U[:, :d])
            if self.fit_intercept:
                first.bias.copy_(U[:, d])
            second.weight.copy_(A.T)
        return torch.nn.Sequential(first, torch.nn.ReLU(), second)


class ConvexReLURegressor(RegressorMixin, _ConvexReLUBase):
    """Two-layer ReLU regression trained to global optimality by a convex program.

    Minimises F(U, alpha) = (1/2n) sum_k (f(x_k) - y_k)^2 + (lam/2) sum_j
    (||u_j||^2 + alpha_j^2) through the equivalent convex program over
    ``n_patterns`` sampled activation patterns (or ``"all"`` of them, rank of
    [X, 1] at most 4, which makes the solution globally optimal over
    networks of every width).

    Parameters
    ----------
    lam : regularisation lam > 0.
    n_patterns : int (sampled Gaussian gates) or ``"all"``.
    solver : a key of :data:`SOLVERS`: ``"auto"`` (by size, :mod:`.solvers`),
        ``"admm"``, ``"cvxpy"`` (interior point) or ``"sampled"``.
    fit_intercept : append a bias to the hidden layer (regularised like the weights).
    max_iter : iteration limit of iterative solvers.
    tol : the certified relative gap every solver stops at: F <= (1 + tol) times the
        optimum of the program (status OPTIMAL), as proved by ``certificate_``.
    device : torch device of the solve (``None``: CPU).
    random_state : seed of the sampled patterns.
    verbose : progress bar.
    patterns : custom gate vectors g (as pyscnn's ``G``, one per row), (G, d) or
        (G, d + 1) with the bias weight last: the activation patterns are then
        1[[x, 1]^T g >= 0], deduplicated (``n_patterns`` is ignored).
    """

    _loss = "squared"

    def __init__(self, lam: float = 1e-3, n_patterns: int | str = 100, solver: str = "auto",
                 fit_intercept: bool = True, max_iter: int = 10_000, tol: float = 1e-4,
                 device: str | None = None, random_state: Any = None, verbose: bool = False,
                 patterns: Any = None):
        self.lam = lam
        self.n_patterns = n_patterns
        self.solver = solver
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.patterns = patterns

    def fit(self, X: Any, y: Any) -> ConvexReLURegressor:
        """Fit to X (n, d) and real targets y, (n,) or (n, k) (multi-output).

        With k outputs the program has one group per pattern *and output*: the
        sum over outputs of the single-output programs, on shared patterns.  It
        separates into k programs (solved one after the other, certified by the
        sum of their bounds), and the network is their union (each neuron feeds
        one output).  Why per output: the weight decay (lam/2) sum_j (||u_j||^2 +
        ||alpha_j||^2) of a vector-output network does not reduce to a group lasso
        over outputs, so grouping outputs together would train another model.
        """
        self._fit_targets(*self._targets(X, y))
        return self

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _targets(self, X: Any, y: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        """Validated X and one target vector per output; sets ``n_outputs_``."""
        X, y = _validate(self, X, y, reset=True, y_numeric=True, multi_output=True)
        self.n_outputs_ = 1 if y.ndim == 1 else int(y.shape[1])
        return X, [y] if y.ndim == 1 else list(y.T)

    def fit_path(self, X: Any, y: Any, lams: Any) -> list[ConvexReLURegressor]:
        """Fit along a regularisation path: one fitted copy per lam, largest lam first.

        The programs share X, y and the patterns; each lam's ADMM solve starts where
        the previous one ended (warm start; for the squared loss it also balances rho
        by its residuals and weights the cone block more,
        :func:`~certopt.convexnn.admm.path_options`), and each copy
        carries its own ``certificate_`` at ``tol``.  Other solvers (``"cvxpy"``, ``"sampled"``, or
        ``"auto"`` choosing them) solve each lam independently.
        """
        return self._fit_path_targets(*self._targets(X, y), lams)

    def predict(self, X: Any) -> np.ndarray | torch.Tensor:
        """Network outputs f(x), shape (n,), or (n, k) when fitted to k outputs.

        (A regressor has no ``decision_function``: scikit-learn forbids it;
        ``to_torch()`` reproduces ``predict``.)
        """
        values, spec = self._decision(X)
        return spec.wrap(values[:, 0] if self.n_outputs_ == 1 else values)


class ConvexReLUClassifier(ClassifierMixin, _ConvexReLUBase):
    """Two-layer ReLU classifier trained to global optimality by a convex program.

    Binary labels are mapped to y in {-1, +1} (``classes_[1]`` is +1) and the
    network minimises F with the ``"hinge"``, ``"logistic"`` or ``"squared"``
    loss; more classes are fitted one-vs-rest.  ``adversarial_eps > 0``
    trains against ell_inf perturbations of radius eps (math note section 7,
    hinge or squared loss, binary labels) through
    :func:`certopt.convexnn.robust.fit_robust` and sets ``robust_loss_``, the
    certified worst-case mean training loss of the returned network (exact when
    the network meets the robust cones, as ``solver="cvxpy"``'s does; the ADMM
    may return a network outside them, certified by sound output bounds, whose
    ``robust_loss_`` is then an upper bound).  Other
    parameters as :class:`ConvexReLURegressor`.
    """

    def __init__(self, loss: str = "hinge", lam: float = 1e-3, n_patterns: int | str = 100,
                 solver: str = "auto", fit_intercept: bool = True, max_iter: int = 10_000,
                 tol: float = 1e-4, device: str | None = None, random_state: Any = None,
                 verbose: bool = False, adversarial_eps: float = 0.0,
                 adversarial_norm: str = "inf", patterns: Any = None):
        self.loss = loss
        self.lam = lam
        self.n_patterns = n_patterns
        self.solver = solver
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.adversarial_eps = adversarial_eps
        self.adversarial_norm = adversarial_norm
        self.patterns = patterns

    @property
    def _loss(self) -> str:
        return self.loss

    def _robust_eps(self) -> float:
        from certopt.convexnn.robust import check_robust_settings

        if self.adversarial_eps == 0:
            return 0.0
        return check_robust_settings(self.adversarial_eps, self.adversarial_norm, self.loss)

    def _solve(self, problem: ConvexReLUProblem, solver: str,
               options: SolverOptions) -> ConvexNNResult:
        eps = self._robust_eps()
        if eps == 0.0:
            return solve(problem, options, solver)
        from certopt.convexnn.robust import fit_robust

        result = fit_robust(problem, eps, self.adversarial_norm, solver, options)
        self.robust_loss_ = result.robust_loss
        return result

    def fit(self, X: Any, y: Any) -> ConvexReLUClassifier:
        """Fit to X (n, d) and labels y (n,) of at least two classes."""
        self._fit_targets(*self._targets(X, y))
        return self

    def _targets(self, X: Any, y: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        """Validated X and the +-1 targets of each binary program (one-vs-rest); sets
        ``classes_``."""
        X, y = _validate(self, X, y, reset=True)
        self.classes_, targets = one_vs_rest_targets(y)
        if self._robust_eps() > 0 and self.classes_.shape[0] > 2:
            raise InputValueError("adversarial_eps > 0 supports binary labels only")
        return X, targets

    def fit_path(self, X: Any, y: Any, lams: Any) -> list[ConvexReLUClassifier]:
        """Fit along a regularisation path: one fitted copy per lam, largest lam first
        (see :meth:`ConvexReLURegressor.fit_path`)."""
        X, targets = self._targets(X, y)
        return self._fit_path_targets(X, targets, lams)

    def decision_function(self, X: Any) -> np.ndarray | torch.Tensor:
        """Network outputs: (n,) for two classes (> 0 means ``classes_[1]``), else (n, k)."""
        values, spec = self._decision(X)
        return spec.wrap(values[:, 0] if values.shape[1] == 1 else values)

    def predict(self, X: Any) -> np.ndarray | torch.Tensor:
        """Predicted labels, shape (n,): a tensor on X's device when X is a tensor and the
        labels are numeric (torch has no strings), else a numpy array."""
        values, spec = self._decision(X)
        return predicted_labels(self.classes_, values[:, 0] if values.shape[1] == 1 else values,
                                spec)
