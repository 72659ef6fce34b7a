"""Regularisation paths: warm-started ADMM solves, each with its own certificate."""

import numpy as np
import pytest

from certopt.convexnn import ConvexReLUClassifier, ConvexReLUProblem, ConvexReLURegressor
from certopt.convexnn.admm import PATH_CONE_WEIGHT, path_options
from certopt.convexnn.problem import SolverOptions
from certopt.core.errors import InputValueError
from certopt.core.result import Status

LAMS = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3]


def _data(n=80, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.maximum(X @ rng.standard_normal(d), 0.0) - 0.5 * X[:, 1]


@pytest.mark.parametrize("solver", ["admm", "auto"])
def test_each_lam_matches_an_independent_fit_and_is_certified(solver):
    X, y = _data()
    est = ConvexReLURegressor(n_patterns=20, solver=solver, tol=1e-6, random_state=0)
    path = est.fit_path(X, y, LAMS[::-1])  # any order: solved largest first
    assert [member.lam for member in path] == LAMS
    for member in path:
        cert = member.certificate_
        single = ConvexReLURegressor(lam=member.lam, n_patterns=20, solver=solver, tol=1e-6,
                                     random_state=0).fit(X, y)
        assert cert.status is Status.OPTIMAL and single.certificate_.status is Status.OPTIMAL
        # warm starts never give a worse certificate than the tolerance both promise, and
        # (the ADMM's two-sided stop) no network below the bound by more than tol either
        assert abs(cert.gap) <= 1e-6 * abs(cert.bound)
        assert member.objective_ == pytest.approx(single.objective_, rel=1e-5)
        np.testing.assert_allclose(member.predict(X), single.predict(X), atol=1e-2)


def test_classifier_path_one_vs_rest_and_bad_lams():
    X, y = _data(seed=2)
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    path = ConvexReLUClassifier(loss="logistic", n_patterns=10,
                                random_state=0).fit_path(X, labels, [1e-2, 1e-3])
    assert len(path) == 2 and all(m.certificate_.status is Status.OPTIMAL for m in path)
    assert set(path[1].predict(X)) <= {0, 1, 2} and path[1].score(X, labels) > 0.8
    for bad in ([], [1e-2, -1.0], [[1e-2]]):
        with pytest.raises(InputValueError, match="lams"):
            ConvexReLURegressor().fit_path(X, y, bad)


def test_path_options_balance_rho_for_the_squared_loss_only():
    X, y = _data()
    squared = ConvexReLUProblem.from_data(X, y, n_patterns=5, random_state=0)
    logistic = ConvexReLUProblem.from_data(X, np.sign(y - np.median(y)), loss="logistic",
                                           n_patterns=5, random_state=0)
    options = SolverOptions(tol=1e-5)
    assert path_options(squared, options) == SolverOptions(tol=1e-5, adaptive_rho=True,
                                                           cone_weight=PATH_CONE_WEIGHT)
    assert path_options(logistic, options) is options
