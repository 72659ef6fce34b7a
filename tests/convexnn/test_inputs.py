"""Ordinary but awkward inputs: degenerate X, dtypes and kinds of outputs, sizes, flags."""

import warnings

import numpy as np
import pytest
import torch

from certopt.convexnn import ConvexReLUClassifier, ConvexReLURegressor
from certopt.convexnn.problem import MAX_PATTERN_BYTES, ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.core.errors import ConvergenceWarning, InputTypeError, InputValueError
from certopt.core.result import Status

RNG = np.random.default_rng(0)
Y = RNG.standard_normal(30)
DEGENERATE = {
    "zero": np.zeros((30, 3)),
    "rank one": np.outer(RNG.standard_normal(30), [1.0, 2.0, 3.0]),
    "zero column": np.c_[RNG.standard_normal((30, 2)), np.zeros(30)],
    "constant": np.ones((30, 3)),
}


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("name", sorted(DEGENERATE))
@pytest.mark.parametrize("solver", ["auto", "admm"])
def test_degenerate_X_is_solved_to_the_cvxpy_optimum(name, fit_intercept, solver):
    X = DEGENERATE[name]
    est = ConvexReLURegressor(lam=1e-2, n_patterns=20, solver=solver, random_state=0,
                              fit_intercept=fit_intercept).fit(X, Y)
    cert = est.certificate_
    assert cert.status is Status.OPTIMAL
    assert cert.gap <= 1e-4 * abs(cert.bound)
    problem = ConvexReLUProblem.from_data(X, Y, lam=1e-2, n_patterns=20, random_state=0,
                                          fit_intercept=fit_intercept)
    if not problem.X.any():  # every network predicts 0: the optimum is L(0) = mean(y^2) / 2
        assert est.objective_ == pytest.approx(0.5 * np.mean(Y ** 2), rel=1e-12)
        assert cert.bound == pytest.approx(est.objective_, rel=1e-12)
        return
    reference = solve_cvxpy(problem, SolverOptions(tol=1e-6))
    assert est.objective_ == pytest.approx(reference.objective, rel=1e-3)
    assert cert.bound <= reference.objective * (1 + 1e-9)


def test_zero_X_with_the_interior_point_and_the_sampled_path():
    for solver in ("cvxpy", "sampled"):
        est = ConvexReLURegressor(fit_intercept=False, solver=solver).fit(np.zeros((30, 3)), Y)
        assert est.certificate_.status is Status.OPTIMAL
        assert est.n_neurons_ == 0
        np.testing.assert_array_equal(est.predict(np.ones((4, 3))), np.zeros(4))


def _fitted_classifier():
    X = RNG.standard_normal((40, 2))
    return ConvexReLUClassifier(n_patterns=10, random_state=0).fit(X, X[:, 0] > 0), X


def test_outputs_follow_the_input_kind_and_dtype():
    est = ConvexReLURegressor(n_patterns=10, random_state=0).fit(DEGENERATE["zero column"], Y)
    X = RNG.standard_normal((5, 3))
    expected = est.predict(X)
    assert expected.dtype == np.float64
    out32 = est.predict(X.astype(np.float32))
    assert isinstance(out32, np.ndarray) and out32.dtype == np.float32
    np.testing.assert_allclose(out32, expected, rtol=1e-5)
    tensor = est.predict(torch.from_numpy(X).float())
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    assert est.predict(X.astype(np.int64)).dtype == np.float64
    clf, Xc = _fitted_classifier()
    scores = clf.decision_function(torch.from_numpy(Xc).float())
    assert isinstance(scores, torch.Tensor) and scores.dtype == torch.float32
    labels = clf.predict(torch.from_numpy(Xc))
    assert isinstance(labels, torch.Tensor)
    np.testing.assert_array_equal(labels.numpy(), clf.predict(Xc))


def test_string_labels_stay_numpy_for_tensor_input():
    X = RNG.standard_normal((40, 2))
    clf = ConvexReLUClassifier(n_patterns=10, random_state=0).fit(
        X, np.where(X[:, 0] > 0, "yes", "no"))
    labels = clf.predict(torch.from_numpy(X))
    assert isinstance(labels, np.ndarray) and set(labels) <= {"yes", "no"}


def test_too_many_patterns_for_memory_is_refused_with_the_estimate():
    X = RNG.standard_normal((30, 3))
    with pytest.raises(InputValueError, match=r"n_patterns: 10000000 patterns .* MiB"):
        ConvexReLURegressor(n_patterns=10 ** 7).fit(X, Y)
    limit = MAX_PATTERN_BYTES // (8 * 30)
    ConvexReLUProblem.from_data(X, Y, n_patterns=min(limit, 2000), random_state=0)


@pytest.mark.parametrize("name", ["fit_intercept", "verbose"])
@pytest.mark.parametrize("value", ["no", 1, None])
def test_flags_must_be_booleans(name, value):
    with pytest.raises(InputTypeError, match=name):
        ConvexReLURegressor(n_patterns=5, random_state=0, **{name: value}).fit(
            DEGENERATE["constant"], Y)
    ConvexReLURegressor(n_patterns=5, random_state=0, **{name: np.bool_(False)}).fit(
        DEGENERATE["constant"], Y)


def test_unknown_solver_names_the_choices():
    with pytest.raises(InputValueError, match="solver: expected one of .*auto"):
        ConvexReLURegressor(solver="newton").fit(DEGENERATE["constant"], Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ConvexReLURegressor(n_patterns=5, random_state=0).fit(DEGENERATE["constant"], Y)


def test_custom_gate_vectors_give_their_patterns():
    X = RNG.standard_normal((40, 2))
    y = np.abs(X[:, 0]) + 0.1 * X[:, 1]
    gates = RNG.standard_normal((12, 3))  # with the bias weight
    est = ConvexReLURegressor(lam=1e-2, patterns=gates).fit(X, y)
    problem = ConvexReLUProblem.from_data(X, y, lam=1e-2, gates=gates)
    X_aug = np.c_[X, np.ones(40)]
    expected = np.unique((X_aug @ gates.T >= 0).T, axis=0)
    expected = expected[expected.any(axis=1)]
    assert problem.n_patterns == est.certificate_.n_patterns == expected.shape[0]
    np.testing.assert_array_equal(problem.D.numpy().astype(bool),
                                  expected[np.lexsort(expected.T[::-1])])
    assert est.certificate_.status is Status.OPTIMAL
    reference = solve_cvxpy(problem, SolverOptions(tol=1e-6))
    assert est.objective_ == pytest.approx(reference.objective, rel=1e-3)
    two_columns = ConvexReLUProblem.from_data(X, y, gates=gates[:, :2])  # zero bias weight
    assert two_columns.n_patterns >= 1
    with pytest.raises(InputValueError, match=r"gates: expected shape \(G, 2\) or \(G, 3\)"):
        ConvexReLUProblem.from_data(X, y, gates=np.ones((3, 5)))
