"""The gated-ReLU estimator: its program against cvxpy, its certificate, its torch module."""

import cvxpy as cp
import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from certopt.convexnn import GatedReLURegressor
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


@parametrize_with_checks([GatedReLURegressor(n_patterns=10, random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)
