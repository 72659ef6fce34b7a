import numpy as np
import torch

from certopt.core.lbfgs import LBFGSMemory


def quadratic(dim: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return torch.from_numpy(q @ np.diag(np.linspace(1.0, 20.0, dim)) @ q.T)


def test_full_memory_of_conjugate_pairs_inverts_a_quadratic_hessian():
    """With dim A-conjugate steps of h(x) = x^T A x / 2, BFGS's H is exactly A^{-1}."""
    A = quadratic(6, 0)
    memory = LBFGSMemory(size=6)
    steps = torch.linalg.eigh(A).eigenvectors.T
    for s in steps:
        memory.push(s, A @ s)
    v = torch.arange(1.0, 7.0, dtype=torch.float64)
    assert torch.allclose(memory.apply(v), torch.linalg.solve(A, v), atol=1e-10)


def test_secant_equation_holds_for_the_newest_pair():
    A = quadratic(5, 1)
    memory = LBFGSMemory(size=3)
    rng = torch.Generator().manual_seed(0)
    for _ in range(4):
        s = torch.randn(5, dtype=torch.float64, generator=rng)
        memory.push(s, A @ s)
    assert len(memory) == 3
    assert torch.allclose(memory.apply(A @ s), s, atol=1e-10)


def test_empty_memory_scales_and_bad_pairs_are_skipped():
    memory = LBFGSMemory()
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    assert torch.equal(memory.apply(g, first_scale=0.5), 0.5 * g)
    memory.push(torch.tensor([1.0, 0.0], dtype=torch.float64),
                torch.tensor([-1.0, 0.0], dtype=torch.float64))   # negative curvature
    memory.push(torch.tensor([1.0, 0.0], dtype=torch.float64),
                torch.tensor([0.0, 1.0], dtype=torch.float64))    # zero curvature
    assert len(memory) == 0
    memory.push(g, 2 * g)
    memory.clear()
    assert len(memory) == 0
