"""The robust losses' exact proximal maps against a cvxpy model of the same problem."""

import cvxpy as cp
import numpy as np
import pytest
import torch

from certopt.convexnn.robust.losses import RobustHinge, RobustSquared


def cvxpy_prox(name, a, b, y, eps, rho):
    """argmin over (z, r) of mean_k worst_case_k + (rho/2) ||(z - a, r - b)||^2 in cvxpy."""
    n, d_f = b.shape
    z, r = cp.Variable(n), cp.Variable((n, d_f))
    spread = eps * cp.sum(cp.abs(r), axis=1)
    if name == "hinge":
        losses = cp.pos(1 - cp.multiply(y, z) + spread)
    else:
        losses = 0.5 * cp.square(cp.abs(z - y) + spread)
    objective = cp.sum(losses) / n + 0.5 * rho * (cp.sum_squares(z - a) + cp.sum_squares(r - b))
    cp.Problem(cp.Minimize(objective)).solve(solver=cp.CLARABEL, tol_gap_abs=1e-11,
                                             tol_gap_rel=1e-11, tol_feas=1e-11)
    return z.value, r.value


@pytest.mark.parametrize("loss", [RobustHinge(), RobustSquared()], ids=["hinge", "squared"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
@pytest.mark.parametrize("rho", [0.4, 5.0])
def test_prox_equals_the_cvxpy_prox(loss, eps, rho):
    rng = np.random.default_rng(3)
    n, d_f = 7, 3
    a, b = rng.normal(size=n), rng.normal(size=(n, d_f))
    y = np.sign(rng.normal(size=n)) if loss.name == "hinge" else rng.normal(size=n)
    z, r = loss.prox(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(y), eps, rho)
    z_ref, r_ref = cvxpy_prox(loss.name, a, b, y, eps, rho)
    np.testing.assert_allclose(z.numpy(), z_ref, atol=1e-6)
    np.testing.assert_allclose(r.numpy(), r_ref, atol=1e-6)
