"""The shared dual-ascent loop on concave functions with known maximisers."""

import math

import numpy as np
import pytest
import torch

from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.result import Status
from certopt.ot.class_based import class_based
from certopt.ot.dual_ascent import maximize
from tests.ot.conftest import point_cloud_problem


def _quadratic(seed: int = 0, n: int = 30, cond: float = 1e3):
    """f(x) = -1/2 (x - x*)^T H (x - x*) with eigenvalues in [1, cond]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = torch.tensor(q @ np.diag(np.geomspace(1.0, cond, n)) @ q.T)
    x_star = torch.tensor(rng.standard_normal(n))

    def value_and_grad(x):
        d = x - x_star
        return float(-0.5 * d @ H @ d), -(H @ d)

    return value_and_grad, x_star


@pytest.mark.parametrize("method", ["fista", "lbfgs"])
def test_reaches_the_maximiser_of_a_concave_quadratic(method):
    value_and_grad, x_star = _quadratic()
    x0 = torch.zeros(30, dtype=torch.float64)
    out = maximize(value_and_grad, x0, lambda x, f, g: float(g.abs().sum()), tol=1e-8,
                   max_iter=20000, method=method)
    assert out.status is Status.OPTIMAL
    assert out.criterion <= 1e-8
    # |grad|_1 <= 1e-8 and smallest eigenvalue 1 => |x - x*|_2 <= 1e-8
    assert torch.allclose(out.x, x_star, atol=1e-8, rtol=0)
    assert out.value == pytest.approx(0.0, abs=1e-14)
    assert torch.equal(x0, torch.zeros(30, dtype=torch.float64))   # x0 untouched
    assert len(out.history["value"]) >= 1
    assert out.history["value"] == sorted(out.history["value"])    # monotone ascent


@pytest.mark.parametrize("method", ["fista", "lbfgs"])
def test_tuple_variables_keep_their_structure(method):
    a_star, b_star = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor(
        [[3.0], [0.5]], dtype=torch.float64)

    def value_and_grad(x):
        a, b = x
        return (float(-((a - a_star) ** 2).sum() - 4 * ((b - b_star) ** 2).sum()),
                (-2 * (a - a_star), -8 * (b - b_star)))

    x0 = (torch.zeros(2, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64))
    out = maximize(value_and_grad, x0,
                   lambda x, f, g: float(sum(t.abs().sum() for t in g)), tol=1e-10,
                   max_iter=2000, method=method, lipschitz=100.0)
    a, b = out.x
    assert b.shape == (2, 1)
    assert torch.allclose(a, a_star, atol=1e-10) and torch.allclose(b, b_star, atol=1e-10)


def test_budget_exhaustion_is_a_status_and_a_warning():
    value_and_grad, _ = _quadratic(cond=1e6)
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        out = maximize(value_and_grad, torch.zeros(30, dtype=torch.float64),
                       lambda x, f, g: float(g.abs().sum()), tol=1e-12, max_iter=5,
                       method="fista")
    assert out.status is Status.MAX_ITER
    assert out.n_iter <= 5


def test_unknown_method_is_rejected():
    with pytest.raises(InputValueError, match="method"):
        maximize(lambda x: (0.0, x), torch.zeros(1), lambda *a: 0.0, tol=1.0, max_iter=1,
                 method="newton")


@pytest.mark.parametrize("lipschitz", [1.0, 1e6])
def test_fista_is_accelerated_on_an_ill_conditioned_quadratic(lipschitz):
    """Condition number kappa = 1e3 in dimension 50: FISTA with restarts needs
    O(sqrt(kappa) log(|g0| / tol)) evaluations (about 830 here, measured ~1500 with
    two evaluations per iteration); plain gradient ascent would need about
    kappa log(|g0| / tol) ~ 26000.  A 1e6 starting ``lipschitz`` (L_f = 1e3) must
    not cost more than a few halvings."""
    kappa, n, tol = 1e3, 50, 1e-8
    value_and_grad, x_star = _quadratic(seed=3, n=n, cond=kappa)
    x0 = torch.zeros(n, dtype=torch.float64)
    g0 = float(value_and_grad(x0)[1].abs().sum())
    budget = 3 * math.sqrt(kappa) * math.log(g0 / tol)
    out = maximize(value_and_grad, x0, lambda x, f, g: float(g.abs().sum()), tol=tol,
                   max_iter=20000, method="fista", lipschitz=lipschitz)
    assert out.status is Status.OPTIMAL
    assert out.n_iter <= budget, (out.n_iter, budget)
    assert torch.allclose(out.x, x_star, atol=1e-8, rtol=0)   # smallest eigenvalue 1
    assert out.history["value"] == sorted(out.history["value"])
    assert out.history["evaluations"][-1] == out.n_iter       # returned point was evaluated
    assert value_and_grad(out.x)[0] == out.value


def test_fista_matches_lbfgs_on_the_class_based_dual():
    """Both methods on the same seeded class-based problem (n=24, m=18, 3 classes,
    gamma=1e-2): the certified objectives agree to 1e-6 relative; FISTA within 5000
    evaluations (it needed 20000+ before the Beck-Teboulle backtracking)."""
    a, b, C = point_cloud_problem(24, 18, seed=4)
    labels = np.arange(24) % 3
    results = {opt: class_based(a, b, C, labels, reg=0.1, gamma=1e-2, tol=1e-7, optimizer=opt)
               for opt in ("lbfgs", "fista")}
    fista, lbfgs = results["fista"], results["lbfgs"]
    assert fista.status is Status.OPTIMAL and lbfgs.status is Status.OPTIMAL
    assert fista.n_iter <= 5000
    assert fista.objective == pytest.approx(lbfgs.objective, rel=1e-6)
    assert fista.dual_value == pytest.approx(lbfgs.dual_value, rel=1e-6)
    assert fista.gap <= 1e-7 * max(1.0, abs(fista.dual_value))
