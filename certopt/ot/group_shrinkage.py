"""Closed-form inner step of class-based OT: nonnegative group shrinkage per column.

Source rows carry class labels ``l_i in {0..K-1}``; ``I_c = {i : l_i = c}``.
For one column, with scores ``s = alpha + beta_j 1 - c_j`` (shape (n,)), the
inner problem of the dual is

    t*(s) = argmin_{t >= 0}  -<s, t> + (gamma/2) ||t||^2 + reg * sum_c ||t_{I_c}||_2 .

It separates over classes.  For one block, fix r = ||t_{I_c}||: the best
direction is z / ||z|| with z = [s_{I_c}]_+ (negative scores get no mass),
worth r ||z||; minimising -r ||z|| + (gamma/2) r^2 + reg r over r >= 0 gives
r = [||z|| - reg]_+ / gamma, so

    t*_{I_c} = (1/gamma) * max(0, 1 - reg / ||z||) * z,
    min value = -(1/(2 gamma)) * [||z|| - reg]_+^2 .

Summed over classes and columns, ``Omega*(S) = (1/(2 gamma)) sum_{c,j}
[||[S_{I_c, j}]_+|| - reg]_+^2`` is convex, differentiable, with gradient
``T*(S)`` (Danskin; ``t*`` is unique by strong convexity) and Lipschitz
constant 1/gamma in S.
"""

from __future__ import annotations

import torch


def class_block_norms(values: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(K, m) matrix of ``||values[I_c, j]||_2`` for an (n, m) ``values``."""
    squares = values.new_zeros((n_classes, values.shape[1]))
    squares.index_add_(0, labels, values * values)
    return squares.sqrt()


def group_shrinkage(
    scores: torch.Tensor, labels: torch.Tensor, n_classes: int, reg: float, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximiser and value of ``Omega*`` for every column at once.

    Parameters
    ----------
    scores : (n, m) tensor S, column j is ``alpha + beta_j - C[:, j]``.
    labels : (n,) int64 tensor of classes in ``0..n_classes-1``.
    reg : the group weight (>= 0).  gamma : the quadratic weight (> 0).

    Returns
    -------
    plan : (n, m) tensor, column j is ``t*(S[:, j])`` (nonnegative).
    conjugate : 0-d tensor ``Omega*(S) = sum_j max_{t>=0} <s_j,t> - Omega(t)``.
    """
    positive = scores.clamp_min(0)
    norms = class_block_norms(positive, labels, n_classes)
    excess = (norms - reg).clamp_min(0)
    factor = torch.where(excess > 0, excess / (gamma * norms.clamp_min(torch.finfo(
        norms.dtype).tiny)), torch.zeros_like(norms))
    plan = positive * factor[labels]
    conjugate = (excess * excess).sum() / (2.0 * gamma)
    return plan, conjugate


def group_norm_sum(plan: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``sum_j sum_c ||plan[I_c, j]||_2`` as a 0-d tensor."""
    return class_block_norms(plan, labels, n_classes).sum()
