"""The problem object: F == G on cone-feasible points, the dual bound, input errors."""

import numpy as np
import pytest
import torch

from certopt.convexnn.problem import ConvexReLUProblem
from certopt.core.errors import InputValueError


def _problem(loss="squared", n=15, d=3, P=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    if loss != "squared":
        y = np.where(y > 0, 1.0, -1.0)
    return ConvexReLUProblem.from_data(X, y, lam=0.05, loss=loss, n_patterns=P, random_state=0)


def _feasible_point(problem, seed=1):
    """(v, w) with every v_i, w_i inside its cone: the patterns are rebuilt from them."""
    g = torch.Generator().manual_seed(seed)
    P, d = problem.n_patterns, problem.n_features
    v = torch.randn(P, d, generator=g, dtype=torch.float64)
    w = torch.randn(P, d, generator=g, dtype=torch.float64)
    # keep the pattern D_i and zero the blocks that violate it
    ok_v = (problem.signs * (v @ problem.X.T) >= 0).all(dim=1)
    ok_w = (problem.signs * (w @ problem.X.T) >= 0).all(dim=1)
    return v * ok_v[:, None], w * ok_w[:, None]


@pytest.mark.parametrize("loss", ["squared", "hinge", "logistic"])
def test_network_of_a_feasible_point_has_F_equal_G(loss):
    problem = _problem(loss)
    # feasible by construction: each pattern is the sign pattern of its own gate
    X = problem.X
    g = torch.Generator().manual_seed(5)
    gates = torch.randn(40, X.shape[1], generator=g, dtype=torch.float64)
    D = (gates @ X.T >= 0).to(torch.float64)
    problem = ConvexReLUProblem(X, problem.y, D, problem.loss, problem.lam)
    scales = torch.rand(40, 2, generator=g, dtype=torch.float64)
    v, w = gates * scales[:, :1], gates * scales[:, 1:]
    assert problem.cone_violation(v, w) == 0.0
    U, alpha = problem.network(v, w)
    assert U.shape == (80, X.shape[1])
    assert problem.nonconvex_objective(U, alpha) == pytest.approx(
        problem.convex_objective(v, w), rel=1e-12)


def test_dual_bound_is_below_every_feasible_objective():
    problem = _problem("squared")
    v, w = _feasible_point(problem)
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        dual = 0.1 * torch.randn(problem.n_samples, generator=g, dtype=torch.float64)
        mu = torch.rand(problem.n_patterns, problem.n_samples, generator=g, dtype=torch.float64)
        bound = problem.dual_bound(dual, mu, mu.flip(0))
        assert bound <= problem.convex_objective(v, w) + 1e-12
        assert bound <= problem.convex_objective(0 * v, 0 * w) + 1e-12


@pytest.mark.parametrize("kwargs, match", [
    ({"X": np.full((4, 2), np.nan)}, "NaN"),
    ({"y": np.array([0.0, np.inf, 1.0, 2.0])}, "NaN/inf"),
    ({"y": np.zeros(3)}, "same number of rows"),
    ({"lam": 0.0}, "lam"),
    ({"lam": -1.0}, "lam"),
    ({"n_patterns": "some"}, "n_patterns"),
    ({"n_patterns": 0}, "n_patterns"),
    ({"X": np.random.default_rng(0).standard_normal((10, 6)), "n_patterns": "all",
      "y": np.arange(10.0)}, "rank"),
    ({"loss": "hinge"}, "labels"),
])
def test_bad_input_raises_clear_errors(kwargs, match):
    args = {"X": np.arange(8.0).reshape(4, 2) ** 1.5, "y": np.arange(4.0), "lam": 0.1,
            "n_patterns": 5}
    args.update(kwargs)
    X, y = args.pop("X"), args.pop("y")
    with pytest.raises(InputValueError, match=match):
        ConvexReLUProblem.from_data(X, y, **args)
