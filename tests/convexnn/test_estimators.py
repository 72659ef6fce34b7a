"""The scikit-learn estimators: exported network, certificate, labels, errors, sklearn checks."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from certopt.convexnn import ConvexReLUClassifier, ConvexReLURegressor
from certopt.convexnn.problem import ConvexReLUProblem
from certopt.core.errors import ConvergenceWarning, InputValueError


def _data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.maximum(X @ rng.standard_normal(d), 0.0) - 0.5 * X[:, 0]


def _fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def test_regressor_network_objective_and_certificate():
    X, y = _data()
    est = _fit(ConvexReLURegressor(lam=0.01, n_patterns=20, max_iter=2000, random_state=0), X, y)
    net = est.to_torch()
    assert isinstance(net[0], torch.nn.Linear) and net[0].bias is not None
    assert net[2].bias is None and net[0].out_features == est.n_neurons_
    out = net(torch.from_numpy(X)).detach().numpy()[:, 0]
    np.testing.assert_allclose(out, est.predict(X), rtol=0, atol=1e-12)
    # objective_ is F (section 1) of the exported network, evaluated independently here
    U = torch.cat([net[0].weight, net[0].bias[:, None]], dim=1).detach()
    alpha = net[2].weight.detach()[0]
    F = 0.5 * np.mean((out - y) ** 2) + 0.005 * float((U ** 2).sum() + (alpha ** 2).sum())
    assert est.objective_ == pytest.approx(F, rel=1e-12)
    cert = est.certificate_
    assert cert.objective == est.objective_
    assert cert.lower_bound <= cert.objective and cert.gap == cert.objective - cert.lower_bound
    assert not cert.is_global and cert.n_iter > 0 and cert.solve_time > 0
    assert est.score(X, y) > 0.9
    # torch input gives torch output
    assert isinstance(est.predict(torch.from_numpy(X)), torch.Tensor)


def test_regressor_all_patterns_is_global_and_matches_cvxpy():
    X, y = _data(n=8, d=1, seed=3)
    admm = _fit(ConvexReLURegressor(lam=0.05, n_patterns="all", max_iter=6000, tol=1e-8), X, y)
    ref = ConvexReLURegressor(lam=0.05, n_patterns="all", solver="cvxpy").fit(X, y)
    assert admm.certificate_.is_global and ref.certificate_.is_global
    assert admm.objective_ == pytest.approx(ref.objective_, rel=1e-4)
    assert admm.certificate_.lower_bound <= ref.objective_ + 1e-9


@pytest.mark.parametrize("loss", ["hinge", "logistic", "squared"])
def test_binary_classifier_labels_and_decision(loss):
    X, y = _data(seed=1)
    labels = np.where(y > np.median(y), "yes", "no")
    est = _fit(ConvexReLUClassifier(loss=loss, lam=0.01, n_patterns=15, max_iter=1500,
                                    random_state=0), X, labels)
    assert list(est.classes_) == ["no", "yes"]
    decision = est.decision_function(X)
    assert decision.shape == (40,)
    np.testing.assert_array_equal(est.predict(X), np.where(decision > 0, "yes", "no"))
    np.testing.assert_allclose(est.to_torch()(torch.from_numpy(X)).detach().numpy()[:, 0],
                               decision, atol=1e-12)
    assert est.score(X, labels) >= 0.9
    assert est.certificate_.lower_bound <= est.objective_


def test_multiclass_one_vs_rest():
    X, y = _data(n=45, seed=2)
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    est = _fit(ConvexReLUClassifier(lam=0.01, n_patterns=10, max_iter=800, random_state=0),
               X, labels)
    assert est.decision_function(X).shape == (45, 3)
    assert est.to_torch()[2].out_features == 3
    cert = est.certificate_
    assert cert.objective == pytest.approx(est.objective_)
    assert cert.lower_bound <= cert.objective and cert.v.shape[0] == 3


def test_same_random_state_same_network():
    X, y = _data()
    one = _fit(ConvexReLURegressor(n_patterns=8, max_iter=300, random_state=5), X, y)
    two = _fit(ConvexReLURegressor(n_patterns=8, max_iter=300, random_state=5), X, y)
    np.testing.assert_array_equal(one.hidden_weights_, two.hidden_weights_)


@pytest.mark.parametrize("estimator, X, y, match", [
    (ConvexReLURegressor(), np.array([[0.0, np.nan]] * 4), np.arange(4.0), "NaN"),
    (ConvexReLURegressor(), np.array([[0.0, np.inf]] * 4), np.arange(4.0), "inf"),
    (ConvexReLURegressor(), np.ones((4, 2)), np.arange(3.0), "inconsistent"),
    (ConvexReLURegressor(lam=0.0), np.eye(4), np.arange(4.0), "lam"),
    (ConvexReLURegressor(lam=-1.0), np.eye(4), np.arange(4.0), "lam"),
    (ConvexReLURegressor(n_patterns="all"), np.eye(6), np.arange(6.0), "rank"),
    (ConvexReLURegressor(solver="newton"), np.eye(4), np.arange(4.0), "solver"),
    (ConvexReLUClassifier(), np.eye(4), np.ones(4), "one class"),
    (ConvexReLUClassifier(loss="absolute"), np.eye(4), np.arange(4) % 2, "loss"),
])
def test_bad_input_raises_clear_errors(estimator, X, y, match):
    with pytest.raises(InputValueError, match=match):
        estimator.fit(X, y)


def test_problem_and_estimator_agree_on_augmentation():
    X, y = _data()
    est = _fit(ConvexReLURegressor(n_patterns=5, max_iter=200, random_state=0), X, y)
    problem = ConvexReLUProblem.from_data(X, y, lam=est.lam, n_patterns=5, random_state=0)
    U = torch.from_numpy(est.hidden_weights_)
    alpha = torch.from_numpy(est.output_weights_[:, 0])
    assert problem.nonconvex_objective(U, alpha) == pytest.approx(est.objective_, rel=1e-12)


# scikit-learn's own estimator checks on small, fast configurations.  Expected failures:
# none; warnings of early stops are silenced by the small max_iter being intended.
@parametrize_with_checks([
    ConvexReLURegressor(lam=0.01, n_patterns=6, max_iter=60, tol=1e-4, random_state=0),
    ConvexReLUClassifier(lam=0.01, n_patterns=6, max_iter=60, tol=1e-4, random_state=0),
])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
