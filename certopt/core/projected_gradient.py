"""Accelerated projected gradient (FISTA with a projection) over tuples of tensors."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

Blocks = Sequence[torch.Tensor]


def accelerated_projected_gradient(
    gradient: Callable[[Blocks], tuple[Blocks, Any]],
    project: Callable[[Blocks], Blocks],
    start: Blocks,
    step: float,
    max_steps: int,
    stop: Callable[[int, Any], bool] | None = None,
) -> list[torch.Tensor]:
    """Minimise a smooth f over a closed convex set C by Beck and Teboulle's FISTA.

    With x_0 = y_0 = ``start`` (assumed in C), t_0 = 1 and for k = 0, 1, ...::

        x_{k+1} = P_C(y_k - step grad f(y_k)),     t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2,
        y_{k+1} = x_{k+1} + ((t_k - 1) / t_{k+1}) (x_{k+1} - x_k),

    where x and y are tuples of tensors (blocks of any shapes) and
    ``step`` <= 1 / L for an L-Lipschitz gradient.  ``gradient(y)`` returns
    the blocks of grad f(y) and any extra value ``info`` it computed on the
    way; ``stop(k, info)``, asked before step k, ends the loop when True.
    Returns x after at most ``max_steps`` steps.
    """
    x = list(start)
    y, momentum = x, 1.0
    for k in range(max_steps):
        grad, info = gradient(y)
        if stop is not None and stop(k, info):
            break
        x_next = list(project([b - step * g for b, g in zip(y, grad)]))
        momentum_next = (1.0 + math.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0
        beta = (momentum - 1.0) / momentum_next
        y = [b + beta * (b - a) for a, b in zip(x, x_next)]
        x, momentum = x_next, momentum_next
    return x
