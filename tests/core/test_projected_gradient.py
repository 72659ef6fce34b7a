import numpy as np
import pytest
import scipy.optimize
import torch

from certopt.core.projected_gradient import accelerated_projected_gradient


def nonnegative_least_squares(A, b, steps, stop=None):
    """min ||A x - b||^2 / 2 over x >= 0 (one block) and a free second block z with
    min ||z - c||^2 / 2 (checks that blocks are carried independently)."""
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)

    def gradient(blocks):
        x, z = blocks
        residual = A @ x - b
        return [A.T @ residual, z - c], residual

    def project(blocks):
        return [blocks[0].clamp(min=0.0), blocks[1]]

    start = [torch.zeros(A.shape[1], dtype=A.dtype), torch.zeros(2, dtype=A.dtype)]
    step = 1.0 / float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    return accelerated_projected_gradient(gradient, project, start, step, steps, stop), c


def test_solves_a_nonnegative_least_squares_problem_like_scipy():
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((30, 8)), rng.standard_normal(30)
    expected, _ = scipy.optimize.nnls(A, b)
    (x, z), c = nonnegative_least_squares(torch.from_numpy(A), torch.from_numpy(b), 3000)
    assert (expected == 0).any() and (expected > 0).any()   # the bound is active somewhere
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-8)
    torch.testing.assert_close(z, c)                          # step 1/||A||^2 <= 1 on z


def test_stop_sees_the_gradients_info_and_ends_the_loop():
    rng = np.random.default_rng(1)
    A, b = torch.from_numpy(rng.standard_normal((20, 5))), torch.from_numpy(rng.standard_normal(20))
    seen = []

    def stop(k, residual):
        seen.append((k, float(residual.norm())))
        return k == 7

    nonnegative_least_squares(A, b, 100, stop)
    assert [k for k, _ in seen] == list(range(8))
    assert seen[0][1] == pytest.approx(float(b.norm()))       # the residual at the start
