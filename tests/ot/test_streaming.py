"""Streamed passes over C (online log-sum-exp, running top-k) against the dense computations.

Each streamed pass is compared with the same quantity computed on the
materialised matrix by plain torch (``torch.logsumexp``, one ``topk`` over
whole columns, the k-sparse projection of whole columns), in float64, for
block sizes that do and do not divide n and m, down to one entry per block.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certopt.ot import streaming
from certopt.ot.geometry import DenseCost
from certopt.ot.problem import TransportProblem
from certopt.ot.projections import project_sorted, top_k_last
from certopt.ot.sparse import ColumnDuals
from tests.ot.conftest import point_cloud_problem

SHAPES = [(1, 1), (7, 5), (13, 29), (40, 17)]
ENTRIES = [1, 3, 7, 50, 10**6]


def _cost(n, m, seed):
    C = torch.tensor(np.random.default_rng(seed).uniform(0.0, 2.0, (n, m)))
    return C, DenseCost(C, None)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("entries", ENTRIES)
def test_tile_plan_covers_every_entry_once_within_the_block(shape, entries):
    kept, reduced = shape
    seen = torch.zeros(kept, reduced, dtype=torch.long)
    for kept_chunk, reduced_chunks in streaming.tile_plan(kept, reduced, entries):
        for chunk in reduced_chunks:
            seen[kept_chunk, chunk] += 1
            size = (kept_chunk.stop - kept_chunk.start) * (chunk.stop - chunk.start)
            assert size <= max(entries, 1)
    assert bool((seen == 1).all())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("entries", ENTRIES)
@pytest.mark.parametrize("dim", [0, 1])
def test_online_logsumexp_equals_the_dense_logsumexp(shape, entries, dim):
    n, m = shape
    C, cost = _cost(n, m, seed=n * m + entries)
    rng = np.random.default_rng(entries)
    potential = torch.tensor(rng.normal(0, 3, n if dim == 0 else m))
    potential[0] = -torch.inf                       # a zero-weight row/column
    reg = 0.07
    streamed = streaming.logsumexp_pass(cost, potential, reg, dim=dim, entries=entries)
    shaped = potential.unsqueeze(1) if dim == 0 else potential.unsqueeze(0)
    dense = torch.logsumexp((shaped - C) / reg, dim=dim)
    finite = torch.isfinite(dense)
    assert torch.equal(finite, torch.isfinite(streamed))
    torch.testing.assert_close(streamed[finite], dense[finite], rtol=1e-12, atol=1e-12)


def test_online_logsumexp_of_an_all_minus_inf_potential_is_minus_inf():
    C, cost = _cost(6, 4, seed=1)
    potential = torch.full((6,), -torch.inf, dtype=torch.float64)
    out = streaming.logsumexp_pass(cost, potential, 0.1, dim=0, entries=5)
    assert bool(torch.isneginf(out).all())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 23), m=st.integers(1, 9), k=st.integers(1, 25),
       entries=st.integers(1, 60), seed=st.integers(0, 2**16))
def test_running_top_k_equals_top_k_of_whole_columns(n, m, k, entries, seed):
    C, cost = _cost(n, m, seed)
    alpha = torch.tensor(np.random.default_rng(seed + 1).normal(size=n))
    dense_values, dense_rows = top_k_last(alpha - C.T, min(k, n))
    covered = torch.zeros(m, dtype=torch.long)
    for cols, values, rows in streaming.column_top_k_pass(cost, alpha, min(k, n), entries):
        assert torch.equal(values, dense_values[cols])     # same arithmetic: bitwise
        assert torch.equal(rows, dense_rows[cols])
        covered[cols] += 1
    assert bool((covered == 1).all())


def _dense_semi_dual(a, b, C, k, reg, alpha):
    """The semi-dual evaluated on whole columns of the materialised alpha - C^T."""
    values, rows = top_k_last(alpha - C.T, k)
    masses, tau = project_sorted(values / reg, b)
    conjugate = (values * masses).sum() - 0.5 * reg * (masses * masses).sum()
    plan = torch.zeros(C.shape[1], C.shape[0], dtype=C.dtype).scatter_(1, rows, masses).T
    return alpha @ a - conjugate, a - plan.sum(1), plan, -reg * tau


def _dense_dual(a, b, C, k, reg, alpha, beta):
    values, rows = top_k_last(alpha - C.T, k)
    masses = (values + beta.unsqueeze(1)).clamp_min(0) / reg
    plan = torch.zeros(C.shape[1], C.shape[0], dtype=C.dtype).scatter_(1, rows, masses).T
    value = alpha @ a + beta @ b - 0.5 * reg * (masses * masses).sum()
    return value, (a - plan.sum(1), b - plan.sum(0)), plan


@pytest.mark.parametrize(("n", "m", "k"), [(13, 11, 3), (20, 9, 20), (9, 14, 1)])
@pytest.mark.parametrize("entries", [1, 7, 40, 10**6])
@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_duals_equal_the_dense_evaluation(n, m, k, entries, seed):
    a, b, C = point_cloud_problem(n, m, seed=seed)
    problem = TransportProblem.from_inputs(a, b, C)
    duals = ColumnDuals(problem, k, 0.1, entries=entries)
    a_t, b_t, C_t = problem.a, problem.b, problem.geometry.dense()
    rng = np.random.default_rng(seed)
    alpha, beta = (torch.tensor(rng.normal(0, 0.5, size)) for size in (n, m))
    close = {"rtol": 1e-12, "atol": 1e-12}

    value, grad, plan, tau_beta = _dense_semi_dual(a_t, b_t, C_t, min(k, n), 0.1, alpha)
    streamed = duals.semi_dual(alpha)
    torch.testing.assert_close(streamed.value, value, **close)
    torch.testing.assert_close(streamed.grad, grad, **close)
    torch.testing.assert_close(streamed.beta, tau_beta, **close)
    torch.testing.assert_close(streamed.plan.dense(), plan, **close)

    value, grads, plan = _dense_dual(a_t, b_t, C_t, min(k, n), 0.1, alpha, beta)
    streamed = duals.dual(alpha, beta)
    torch.testing.assert_close(streamed.value, value, **close)
    for ours, theirs in zip(streamed.grad, grads):
        torch.testing.assert_close(ours, theirs, **close)
    torch.testing.assert_close(streamed.plan.dense(), plan, **close)


@pytest.mark.parametrize("entries", [1, 7, 10**6])
def test_assemble_and_inner_product_block_by_block(entries):
    C, cost = _cost(9, 13, seed=3)
    plan = torch.tensor(np.random.default_rng(4).random((9, 13)))
    built = streaming.assemble(cost, lambda block, rows, cols: block * plan[rows, cols], entries)
    torch.testing.assert_close(built, C * plan, rtol=0, atol=0)
    torch.testing.assert_close(streaming.inner_product(cost, plan, entries), (C * plan).sum(),
                               rtol=1e-13, atol=0)

