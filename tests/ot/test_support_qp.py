"""The QP on a fixed support: the direct interior point and the Newton finish from it.

Reference: the cvxpy QP restricted to the same support (``quadratic_reference``
with ``support=``), on data generated here with a seed.
"""

import numpy as np
import torch

from certopt.core.result import Status
from certopt.ot.column_duals import ColumnDuals, l1_marginal_error
from certopt.ot.newton import semismooth_newton
from certopt.ot.problem import TransportProblem
from certopt.ot.reference import quadratic_reference
from certopt.ot.support_qp import restricted_qp_potentials
from tests.ot.conftest import point_cloud_problem


def _restricted(n, k, seed, reg):
    """Non-uniform weights; column j's support: rows j, j + 1 and j + 2 + a random offset."""
    a, b, C = point_cloud_problem(n, n, seed=seed)
    rng = np.random.default_rng(seed)
    columns = np.arange(n)
    rows = np.stack([columns, (columns + 1) % n,
                     (columns + 2 + rng.integers(0, n - 3, n)) % n][:k], axis=1)
    support = torch.as_tensor(rows)
    duals = ColumnDuals(TransportProblem.from_inputs(a, b, C, None), k, reg, support=support)
    mask = np.zeros((n, n), dtype=bool)
    mask[rows, np.arange(n)[:, None]] = True
    return duals, quadratic_reference(a, b, C, reg, support=mask)


def test_direct_potentials_let_newton_finish_the_restricted_qp_to_round_off():
    duals, ref = _restricted(80, 3, seed=0, reg=0.05)
    assert ref.status is Status.OPTIMAL
    potentials = restricted_qp_potentials(duals.a, duals.b, duals.support, duals.support_cost,
                                          duals.reg)
    assert potentials is not None
    start = duals.dual(*potentials)
    assert abs(float(start.value) - ref.value) <= 1e-5 * abs(ref.value)
    assert l1_marginal_error(start.grad) <= 1e-4
    out = semismooth_newton(duals, *potentials, tol=1e-12, max_eval=200, max_steps=50,
                            stall_steps=None)
    assert out.status is Status.OPTIMAL and out.criterion <= 1e-12
    np.testing.assert_allclose(out.evaluation.plan.dense().numpy(), ref.plan, atol=1e-6)
    assert abs(float(out.evaluation.value) - ref.value) <= 1e-6 * abs(ref.value)


def test_a_support_that_admits_no_plan_gives_no_potentials():
    duals, _ = _restricted(20, 2, seed=0, reg=0.1)
    crowded = torch.zeros_like(duals.support)
    crowded[:, 1] = 1            # every column on rows 0 and 1: the other rows have no entry
    blocked = ColumnDuals(TransportProblem.from_inputs(duals.a, duals.b, duals.cost.dense(),
                                                       None), 2, 0.1, support=crowded)
    assert restricted_qp_potentials(blocked.a, blocked.b, blocked.support,
                                    blocked.support_cost, blocked.reg) is None
