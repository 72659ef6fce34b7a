"""The two baselines every Lipschitz result reports (math note, section 9).

* :func:`naive_bound`: the triangle-inequality bound propagated through the
  program's :attr:`~certopt.sdp.program.Program.lipschitz_steps`.  Step
  ``ψ = h(c)``, ``c = Σ_k C[k] ξ_k``, ``h`` ``gain``-Lipschitz, gets
  ``L_ψ = gain · Σ_k ‖C[k]‖ L_k`` and the output ``Σ_k ‖A_out[k]‖ L_k`` with
  ``L_0 = 1``.  Sound by induction: ``‖Δc‖ <= Σ_k ‖C[k]‖ ‖Δξ_k‖``.  Steps
  are the activation stages and the quantities a rule declared one Lipschitz
  function of another: a reflection layer ``(I − VᵀV) z + Vᵀ|Vz|`` (MaxMin,
  Householder, each GroupSort sorting-network round) is one step of gain 1
  on ``z``, not two added terms.  For a plain feedforward net (ReLU, MaxMin,
  GroupSort, Householder) this is ``∏ ‖W_k‖₂ × ∏ max(|α|, |β|)`` (section 9);
  a residual ``x + g(x)`` gets ``1 + L_g``.  For the ℓ∞ input norm the input
  blocks use ``‖C[0]‖_{∞→2} <= min(√n_0 ‖C[0]‖₂, ‖(‖row_i‖₁)_i‖₂)``.
* :func:`attack_lower_bound`: a lower bound on the true constant, the
  largest of (a) ``‖J_f(x)‖`` at random points (ℓ2: spectral norm; ℓ∞:
  ``‖J s‖₂`` for sign vectors ``s`` improved by ``s ← sign(JᵀJ s)``, a lower
  bound on ``‖J‖_{∞→2}``) and (b) ``‖f(x) − f(y)‖₂ / ‖x − y‖`` maximised by
  gradient ascent (Adam) over pairs started at the best points.  Every value
  it reports is attained, so it never exceeds the true constant.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from certopt.sdp.program import Program

_SCALES = torch.tensor([0.1, 0.3, 1.0, 3.0], dtype=torch.float64)
"""Standard deviations of the sample points (biases make the scale matter)."""


def _input_norm(block: np.ndarray, norm: str) -> float:
    spectral = float(np.linalg.norm(block, 2)) if block.size else 0.0
    if norm == "2":
        return spectral
    rows = float(np.linalg.norm(np.abs(block).sum(axis=1)))
    return min(math.sqrt(block.shape[1]) * spectral, rows)


def naive_bound(program: Program, norm: str = "2") -> float:
    """Triangle-inequality Lipschitz bound of ``program`` (ℓ2 or ℓ∞ → ℓ2)."""

    def through(expr_terms: Mapping[int, np.ndarray], gains: dict[int, float]) -> float:
        total = 0.0
        for k, block in expr_terms.items():
            if k == 0:
                total += _input_norm(block, norm)
            elif gains[k] > 0 and block.size:
                total += float(np.linalg.norm(block, 2)) * gains[k]
        return total

    gains = {0: 1.0}
    for step in program.lipschitz_steps:
        gains[step.segment] = step.gain * through(step.source.terms, gains)
    return through(program.lipschitz_output.terms, gains)


def _operator_norms(jacobians: torch.Tensor, norm: str, n_sign_steps: int = 20) -> torch.Tensor:
    """Per-sample ``‖J‖₂`` (ℓ2) or a lower bound on ``‖J‖_{∞→2}`` (ℓ∞)."""
    if norm == "2":
        return torch.linalg.matrix_norm(jacobians, ord=2)
    _, _, vh = torch.linalg.svd(jacobians, full_matrices=False)
    signs = torch.sign(vh[:, 0, :])
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    for _ in range(n_sign_steps):
        update = torch.sign(torch.einsum("bmn,bm->bn", jacobians,
                                         torch.einsum("bmn,bn->bm", jacobians, signs)))
        signs = torch.where(update == 0, signs, update)
    return torch.linalg.vector_norm(torch.einsum("bmn,bn->bm", jacobians, signs), dim=1)


def _jacobians(model: nn.Module, points: torch.Tensor) -> torch.Tensor:
    """Per-sample Jacobians ``(batch, n_out, n_in)``, one backward pass per output."""
    x = points.clone().requires_grad_(True)
    outputs = model(x).reshape(len(points), -1)
    rows = [torch.autograd.grad(outputs[:, j].sum(), x, retain_graph=True)[0]
            for j in range(outputs.shape[1])]
    return torch.stack(rows, dim=1).reshape(len(points), outputs.shape[1], -1)


def attack_lower_bound(
    net: nn.Module,
    input_shape: Sequence[int],
    norm: str = "2",
    *,
    n_samples: int = 256,
    n_steps: int = 50,
    step_size: float = 1e-2,
    random_state: int = 0,
) -> float:
    """Largest Lipschitz ratio found by sampling plus gradient ascent (a lower bound).

    Works on a float64, evaluation-mode copy of ``net`` on its own device;
    inputs are drawn from ``N(0, σ²I)`` with ``σ`` cycling through 0.1, 0.3,
    1, 3, by a ``torch.Generator`` seeded with ``random_state``.
    """
    model = copy.deepcopy(net).double().eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    shape = tuple(int(s) for s in input_shape)
    generator = torch.Generator(device="cpu").manual_seed(int(random_state))
    points = torch.randn((n_samples, *shape), generator=generator, dtype=torch.float64)
    points = (points * _SCALES[torch.arange(n_samples) % len(_SCALES), None]
              .reshape(-1, *([1] * len(shape)))).to(device)

    jacobians = _jacobians(model, points)
    norms = _operator_norms(jacobians, norm)
    best = float(norms.max())

    top = torch.topk(norms, k=min(8, n_samples)).indices
    _, _, vh = torch.linalg.svd(jacobians[top], full_matrices=False)
    direction = vh[:, 0, :] if norm == "2" else torch.sign(vh[:, 0, :])
    start = points[top].reshape(len(top), -1)
    x = start.clone().requires_grad_(True)
    y = (start + step_size * direction).requires_grad_(True)
    optimizer = torch.optim.Adam([x, y], lr=step_size)
    order = 2 if norm == "2" else math.inf
    for _ in range(n_steps):
        optimizer.zero_grad()
        difference = model(x.reshape(-1, *shape)) - model(y.reshape(-1, *shape))
        distance = torch.linalg.vector_norm(x - y, ord=order, dim=1)
        ratio = torch.linalg.vector_norm(difference.reshape(len(top), -1), dim=1) / distance
        valid = distance > 0
        if bool(valid.any()):
            best = max(best, float(ratio[valid].max().detach()))
        (-ratio[valid].log().sum()).backward()
        optimizer.step()
    return best
