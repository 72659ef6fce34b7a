"""The gated-ReLU estimator: its program against cvxpy, its certificate, its torch module."""

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from sklearn.utils.estimator_checks import parametrize_with_checks

from certopt.convexnn import GatedReLUClassifier, GatedReLURegressor, gated
from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.result import Status


def _data(n=60, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.maximum(X @ rng.standard_normal(d), 0.0) + 0.05 * rng.standard_normal(n)


def test_gated_program_equals_cvxpy_and_is_certified():
    X, y = _data()
    est = GatedReLURegressor(lam=1e-2, n_patterns=15, tol=1e-6, random_state=0).fit(X, y)
    cert = est.certificate_
    assert cert.status is Status.OPTIMAL and 0 <= cert.gap <= 1e-6 * cert.bound * 1.0001
    X_aug = np.c_[X, np.ones(len(X))]
    D = (X_aug @ est.gates_.numpy().T >= 0).astype(float)  # (n, P)
    U = cp.Variable(est.gates_.shape)
    prediction = cp.sum(cp.multiply(D, X_aug @ U.T), axis=1)
    objective = (cp.sum_squares(prediction - y) / (2 * len(y))
                 + 1e-2 * cp.sum(cp.norm(U, 2, axis=1)))
    reference = cp.Problem(cp.Minimize(objective)).solve(solver="CLARABEL")
    assert est.objective_ == pytest.approx(reference, rel=1e-5)
    assert cert.bound <= reference * (1 + 1e-8)
    # the torch module with fixed gates reproduces predict, which follows X's kind and dtype
    net = est.to_torch()
    out = net(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(out, est.predict(X), atol=1e-12)
    assert est.predict(X.astype(np.float32)).dtype == np.float32
    assert isinstance(est.predict(torch.from_numpy(X)), torch.Tensor)
    F = 0.5 * np.mean((out - y) ** 2) + 1e-2 * np.linalg.norm(est.weights_, axis=1).sum()
    assert est.objective_ == pytest.approx(F, rel=1e-12)


def test_custom_gates_are_kept():
    X, y = _data(seed=1)
    gates = np.random.default_rng(2).standard_normal((8, 3))
    est = GatedReLURegressor(lam=1e-2, patterns=gates).fit(X, y)
    kept = est.gates_.numpy()
    assert 1 <= kept.shape[0] <= 8 and np.all(kept[:, 3] == 0)  # a zero bias weight added
    assert all(any(np.array_equal(row, gate) for gate in gates) for row in kept[:, :3])
    assert est.certificate_.status is Status.OPTIMAL


def _gated_cvxpy(X, y, gates, lam, loss):
    """The optimum of the gated program from an independent model of it: the hinge program
    (an SOCP) by ECOS, since the estimator itself solves it with Clarabel; the logistic one
    (exponential cones, solved by FISTA in the estimator) by Clarabel."""
    X_aug = np.c_[X, np.ones(len(X))]
    D = (X_aug @ gates.T >= 0).astype(float)  # (n, P)
    U = cp.Variable(gates.shape)
    prediction = cp.sum(cp.multiply(D, X_aug @ U.T), axis=1)
    data = (cp.sum(cp.pos(1 - cp.multiply(y, prediction))) if loss == "hinge"
            else cp.sum(cp.logistic(-cp.multiply(y, prediction))))
    objective = data / len(y) + lam * cp.sum(cp.norm(U, 2, axis=1))
    return cp.Problem(cp.Minimize(objective)).solve(
        solver="ECOS" if loss == "hinge" else "CLARABEL")


@pytest.mark.parametrize("loss, tol, accuracy", [("hinge", 1e-4, 1e-6),
                                                 ("logistic", 1e-7, 1e-6)])
def test_gated_classifier_equals_cvxpy_and_exports(loss, tol, accuracy):
    # the hinge loss at this size goes to the interior point: OPTIMAL at the default tol
    # (1e-4) with a 10x margin and no ConvergenceWarning; logistic by FISTA to 1e-7
    X, target = _data(n=40, seed=3)
    labels = np.where(target > np.median(target), "b", "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = GatedReLUClassifier(loss=loss, lam=1e-2, n_patterns=8, tol=tol,
                                  random_state=0).fit(X, labels)
    cert = est.certificate_
    assert list(est.classes_) == ["a", "b"] and cert.status is Status.OPTIMAL
    assert cert.gap <= tol * abs(cert.bound) * (0.1 if loss == "hinge" else 1.0001)
    y = np.where(labels == "b", 1.0, -1.0)
    reference = _gated_cvxpy(X, y, est.gates_.numpy(), 1e-2, loss)
    assert est.objective_ == pytest.approx(reference, rel=accuracy)
    assert cert.bound <= reference * (1 + 1e-8)
    net = est.to_torch()
    out = net(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(out, est.decision_function(X), atol=1e-12)
    np.testing.assert_array_equal(est.predict(X), np.where(out > 0, "b", "a"))
    assert est.score(X, labels) > 0.9
    assert est.decision_function(X.astype(np.float32)).dtype == np.float32


def test_gated_hinge_classifier_is_optimal_with_defaults():
    # a README-sized example (two moons, 300 points) at every default: certified gap 6.7e-8,
    # a 10x margin below tol = 1e-4 is demanded; F equals Clarabel's optimum to 1e-6
    X, y = make_moons(300, noise=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = GatedReLUClassifier(random_state=0).fit(X, y)
    cert = est.certificate_
    assert cert.status is Status.OPTIMAL and cert.gap <= 1e-5 * abs(cert.bound)
    reference = _gated_cvxpy(X, 2.0 * y - 1.0, est.gates_.numpy(), 1e-3, "hinge")
    assert est.objective_ == pytest.approx(reference, rel=1e-6)
    assert est.score(X, y) > 0.95


def test_gated_hinge_falls_back_to_fista(monkeypatch):
    # when cvxpy returns no solution (here: pretended), FISTA through smoothings solves the
    # hinge program; it certifies 1e-3 (measured gap 1.1e-4, F 5.8e-5 above Clarabel's)
    def no_solution(problem, options):
        zero = torch.zeros(problem.n_patterns, problem.n_features, dtype=problem.X.dtype)
        return zero, Status.NUMERICAL, [], 0

    monkeypatch.setattr(gated, "solve_gated_cvxpy", no_solution)
    X, target = _data(n=40, seed=3)
    y = np.where(target > np.median(target), 1.0, -1.0)
    est = GatedReLUClassifier(lam=1e-2, n_patterns=8, tol=1e-3, random_state=0).fit(X, y)
    cert = est.certificate_
    assert cert.status is Status.OPTIMAL and cert.n_iter > 100  # FISTA steps, not IP's
    reference = _gated_cvxpy(X, y, est.gates_.numpy(), 1e-2, "hinge")
    assert est.objective_ == pytest.approx(reference, rel=1e-3)


def test_gated_classifier_one_vs_rest_and_bad_loss():
    X, target = _data(n=45, seed=4)
    labels = np.digitize(target, np.quantile(target, [1 / 3, 2 / 3]))
    est = GatedReLUClassifier(loss="logistic", lam=1e-2, n_patterns=8,
                              random_state=0).fit(X, labels)
    assert est.weights_.shape == (3, *est.gates_.shape)
    assert est.certificate_.status is Status.OPTIMAL
    assert est.decision_function(X).shape == (45, 3)
    singles = [GatedReLUClassifier(loss="logistic", lam=1e-2, n_patterns=8, random_state=0)
               .fit(X, labels == k).objective_ for k in range(3)]
    assert est.objective_ == pytest.approx(sum(singles), rel=1e-3)
    predicted = est.predict(torch.from_numpy(X))
    assert isinstance(predicted, torch.Tensor) and set(predicted.tolist()) <= {0, 1, 2}
    with pytest.raises(InputValueError, match="loss"):
        GatedReLUClassifier(loss="squared").fit(X, labels)


@parametrize_with_checks([GatedReLURegressor(n_patterns=10, random_state=0),
                          GatedReLUClassifier(loss="logistic", lam=1e-2, n_patterns=10,
                                              max_iter=300, random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
