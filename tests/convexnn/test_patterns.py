"""Activation patterns: exhaustive enumeration vs brute force, sampling, limits."""

import pytest
import torch

from certopt.convexnn.patterns import (
    all_patterns,
    cell_count_bound,
    sample_patterns,
    unique_patterns,
)
from certopt.core.errors import InputValueError


def _augmented(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=g, dtype=torch.float64)
    return torch.cat([A, torch.ones(n, 1, dtype=torch.float64)], dim=1)


def _rows(masks):
    return set(map(tuple, masks.to(torch.int64).tolist()))


def test_all_patterns_count_matches_general_position_formula():
    # 24 points in 2-D + bias: 2 (1 + 23 + 253) = 554 cells, minus the all-zero one.
    D = all_patterns(_augmented(24, 2, 0))
    assert D.shape == (553, 24)
    assert cell_count_bound(24, 3) - 1 == 553


@pytest.mark.parametrize("n, d", [(9, 1), (12, 2), (10, 3)])
def test_brute_force_sampling_finds_no_pattern_outside_the_enumeration(n, d):
    X = _augmented(n, d, n + d)
    D = all_patterns(X)
    g = torch.Generator().manual_seed(1)
    gates = torch.randn(X.shape[1], 30_000, generator=g, dtype=torch.float64)
    sampled = unique_patterns((X @ gates >= 0).T)
    assert _rows(sampled) <= _rows(D)
    # in general position the enumeration is exactly every nonzero cell
    assert D.shape[0] == cell_count_bound(n, d + 1) - 1


def test_sampled_patterns_are_seeded_deduplicated_and_nonzero():
    X = _augmented(30, 3, 2)
    one = sample_patterns(X, 50, torch.Generator().manual_seed(7))
    two = sample_patterns(X, 50, torch.Generator().manual_seed(7))
    assert torch.equal(one, two)
    assert one.shape[0] <= 50 and one.shape[1] == 30
    assert len(_rows(one)) == one.shape[0]
    assert bool(one.any(dim=1).all())
    assert one.dtype == X.dtype


def test_all_patterns_rejects_high_rank_and_too_many_cells():
    with pytest.raises(InputValueError, match="rank 6"):
        all_patterns(_augmented(20, 5, 0))
    with pytest.raises(InputValueError, match="limit"):
        all_patterns(_augmented(300, 3, 0))
