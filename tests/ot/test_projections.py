"""k-sparse simplex projection against brute force over supports."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certopt.core.errors import InputValueError
from certopt.ot.projections import sparse_simplex_projection, top_k_last


def _simplex_projection_by_bisection(x: np.ndarray, radius: float) -> np.ndarray:
    """Projection onto {t >= 0, sum t = radius}: [x - tau]_+ with tau found by bisection."""
    low, high = x.min() - radius, x.max()
    for _ in range(100):
        tau = 0.5 * (low + high)
        if np.maximum(x - tau, 0).sum() > radius:
            low = tau
        else:
            high = tau
    return np.maximum(x - 0.5 * (low + high), 0)


def _brute_force_distance(x: np.ndarray, k: int, radius: float) -> float:
    """min over supports S with |S| = min(k, n) of the distance to the simplex on S."""
    best = np.inf
    for support in itertools.combinations(range(len(x)), min(k, len(x))):
        idx = list(support)
        t = np.zeros_like(x)
        t[idx] = _simplex_projection_by_bisection(x[idx], radius)
        best = min(best, float(np.linalg.norm(t - x)))
    return best


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=7),
    k=st.integers(1, 8),
    radius=st.floats(0.01, 5.0),
)
def test_projection_matches_brute_force_over_supports(x, k, radius):
    x = np.array(x)
    t = sparse_simplex_projection(x, k, radius).numpy()
    assert (t >= 0).all()
    assert np.count_nonzero(t) <= k
    assert t.sum() == pytest.approx(radius, abs=1e-12 * max(1.0, radius))
    # the argmin may not be unique (ties): compare distances
    assert np.linalg.norm(t - x) <= _brute_force_distance(x, k, radius) + 1e-9


def test_rows_are_projected_independently_and_input_is_kept():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((5, 6)))
    copy = x.clone()
    t = sparse_simplex_projection(x, 2, radius=0.5)
    assert torch.equal(x, copy)
    for row, out in zip(x, t):
        assert torch.allclose(out, sparse_simplex_projection(row, 2, radius=0.5), atol=0)
    assert torch.allclose(t.sum(1), torch.full((5,), 0.5, dtype=torch.float64), atol=1e-15)


def test_top_k_is_sorted_and_full_k_sorts_the_row():
    x = torch.tensor([[3.0, -1.0, 7.0, 2.0]])
    values, rows = top_k_last(x, 2)
    assert values.tolist() == [[7.0, 3.0]] and rows.tolist() == [[2, 0]]
    values, rows = top_k_last(x, 9)
    assert values.tolist() == [[7.0, 3.0, 2.0, -1.0]]


def test_bad_k_is_rejected():
    with pytest.raises(InputValueError, match="k"):
        sparse_simplex_projection(np.ones(3), 0)
