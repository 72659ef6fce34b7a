"""Shared OT test data."""

import numpy as np


def point_cloud_problem(n: int, m: int, seed: int = 0, uniform: bool = False):
    """Random marginals and a squared-Euclidean cost (scaled to max 1) between two clouds."""
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((n, 3))
    target = rng.standard_normal((m, 3)) + 1.0
    cost = ((source[:, None, :] - target[None, :, :]) ** 2).sum(-1)
    cost /= cost.max()
    if uniform:
        return np.full(n, 1 / n), np.full(m, 1 / m), cost
    a = rng.uniform(0.5, 1.5, n)
    b = rng.uniform(0.5, 1.5, m)
    return a / a.sum(), b / b.sum(), cost
