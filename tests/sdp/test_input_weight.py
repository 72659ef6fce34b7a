"""ℓ∞ input weights at fixed multipliers (certopt.sdp.input_weight) against cvxpy."""

import cvxpy as cp
import numpy as np
import pytest

from certopt.sdp import lipschitz_bound
from certopt.sdp.input_weight import best_input_weight
from certopt.sdp.maxmin_nets import load_maxmin_mat
from certopt.sdp.verify import scaled_top_eigenvalue
from tests.sdp.test_orthogonal import DATA


def _reference(matrix: np.ndarray) -> float:
    """``min Σγ s.t. diag(γ) ⪰ R`` by a plain cvxpy SDP."""
    gamma = cp.Variable(matrix.shape[0])
    problem = cp.Problem(cp.Minimize(cp.sum(gamma)), [cp.diag(gamma) - matrix >> 0])
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)


@pytest.mark.parametrize("reduced", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_input_weight_is_near_the_sdp_optimum(seed, reduced):
    rng = np.random.default_rng(seed)
    n0, r = 24, 5
    rows = rng.standard_normal((n0, r)) * rng.uniform(0.1, 2.0, size=(n0, 1))
    if reduced:  # R = Q·R̃·Qᵀ on an orthonormal basis Q of the row space
        basis, upper = np.linalg.qr(rows)
        demand = upper @ upper.T
    else:
        basis, demand = None, rows @ rows.T
    full = rows @ rows.T
    before = demand.copy()
    weight = best_input_weight(demand, basis)
    np.testing.assert_array_equal(demand, before)  # the caller's array is left alone
    assert weight.shape == (n0,) and np.all(weight > 0)
    value = scaled_top_eigenvalue(demand, weight, basis) * weight.sum()
    naive = scaled_top_eigenvalue(demand, np.sqrt(np.diag(full)), basis) * np.sqrt(
        np.diag(full)).sum()  # the rank-one-exact start √diag R
    optimum = _reference(full)
    # sound (never below the SDP's optimum), within the 1% stopping gap, better than its start
    assert optimum * (1 - 1e-6) <= value <= optimum * 1.03
    assert value < naive * 0.98


def test_best_input_weight_is_exact_on_rank_one():
    rows = np.random.default_rng(3).standard_normal((10, 1))
    weight = best_input_weight(rows @ rows.T, None)
    value = scaled_top_eigenvalue(rows @ rows.T, weight, None) * weight.sum()
    assert value == pytest.approx(np.abs(rows).sum() ** 2, rel=1e-12)


@pytest.mark.skipif(not (DATA / "weights_linf_2fc_16.mat").exists(),
                    reason="needs maxmin_nets data")
def test_fast_linf_bound_is_tightened_by_the_input_weights():
    """weights_linf_2fc_16, ℓ∞ of logit 8: fast was 88.02 with γ ∝ √diag R (RESULTS.md); the
    best γ at the same multipliers gives 76.4; the SDP's value is 69.54."""
    net = load_maxmin_mat(DATA / "weights_linf_2fc_16.mat", output_rows=[8])
    fast = lipschitz_bound(net, norm="inf", method="fast", attack=False)
    assert fast.verified
    assert 69.5 < fast.bound < 78.0 < 88.0 < fast.naive
