"""Multi-output regression: one program with a group per pattern and output."""

import cvxpy as cp
import numpy as np
import pytest
import torch

from certopt.convexnn import ConvexReLURegressor
from certopt.convexnn.problem import ConvexReLUProblem
from certopt.core.result import Status


def _data(n=40, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = np.c_[np.abs(X[:, 0]) - X[:, 1], np.maximum(X @ rng.standard_normal(d), 0.0)]
    return X, Y


def test_equals_independent_fits_and_the_joint_cvxpy_program():
    X, Y = _data()
    settings = {"lam": 1e-2, "n_patterns": 12, "random_state": 0, "tol": 1e-6}
    joint = ConvexReLURegressor(**settings).fit(X, Y)
    assert joint.certificate_.status is Status.OPTIMAL
    singles = [ConvexReLURegressor(**settings).fit(X, Y[:, k]) for k in range(2)]
    assert joint.objective_ == pytest.approx(sum(s.objective_ for s in singles), rel=1e-6)
    prediction = joint.predict(X)
    assert prediction.shape == (40, 2)
    for k, single in enumerate(singles):
        np.testing.assert_allclose(prediction[:, k], single.predict(X), atol=1e-6)
    net = joint.to_torch()
    np.testing.assert_allclose(net(torch.from_numpy(X)).detach().numpy(), prediction,
                               atol=1e-12)
    # the joint program written plainly: groups per pattern and output, summed losses
    problem = ConvexReLUProblem.from_data(X, Y[:, 0], n_patterns=12, random_state=0)
    A, D = problem.X.numpy(), problem.D.numpy()
    V = [cp.Variable((D.shape[0], A.shape[1])) for _ in range(4)]
    objective, constraints = 0, []
    for k in range(2):
        v, w = V[2 * k], V[2 * k + 1]
        pred = cp.sum(cp.multiply(D.T, A @ (v - w).T), axis=1)
        objective += cp.sum_squares(pred - Y[:, k]) / (2 * len(Y))
        objective += 1e-2 * (cp.sum(cp.norm(v, 2, axis=1)) + cp.sum(cp.norm(w, 2, axis=1)))
        constraints += [cp.multiply(2 * D.T - 1, A @ g.T) >= 0 for g in (v, w)]
    reference = cp.Problem(cp.Minimize(objective), constraints).solve(solver="CLARABEL")
    assert joint.objective_ == pytest.approx(reference, rel=1e-5)
    assert joint.certificate_.bound <= reference * (1 + 1e-8)
