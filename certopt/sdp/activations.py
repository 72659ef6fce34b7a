"""Gradient-norm-preserving activations and residual blocks as torch modules.

All activations act on the **last** dimension of their input (the feature
dimension of ``nn.Linear`` layers), in consecutive groups:

* :class:`MaxMin`: pairs ``(0, 1), (2, 3), ...`` map to ``(max, min)``;
* :class:`GroupSort`: each consecutive group of ``group_size`` features is
  sorted in descending order (``GroupSort(2)`` equals ``MaxMin()``);
* :class:`HouseholderActivation`: on each pair ``z``, with the unit vector
  ``v = (cos θ, sin θ)`` (one learnable ``θ`` per pair),
  ``σ(z) = z`` if ``vᵀz > 0`` else ``(I − 2vvᵀ) z``, i.e.
  ``σ(z) = z + 2·relu(−vᵀz)·v``.  ``θ = −π/4`` is MaxMin.
* :class:`Residual`: ``x ↦ x + inner(x)``.

Every activation here is 1-Lipschitz in ℓ2 and piecewise orthogonal; they are
ordinary modules (autograd works) and the SDP compiler has exact rules for
them (``certopt.sdp.rules``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from certopt.core.arrays import as_tensor, check_scalar
from certopt.core.errors import InputTypeError, InputValueError

__all__ = ["GroupSort", "HouseholderActivation", "MaxMin", "Residual"]


def _check_groups(x: torch.Tensor, group_size: int, layer: str) -> None:
    if x.ndim == 0 or x.shape[-1] % group_size:
        raise InputValueError(
            f"{layer}: expected the last dimension of the input to be divisible by "
            f"{group_size}, got input shape {tuple(x.shape)}"
        )


class GroupSort(nn.Module):
    """Sort each consecutive group of ``group_size`` features, descending.

    Input ``(..., n)`` with ``n`` divisible by ``group_size``; output of the
    same shape: ``out[..., k*g:(k+1)*g] = sort(x[..., k*g:(k+1)*g], descending)``.
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = int(check_scalar(group_size, "group_size", low=1, integer=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_groups(x, self.group_size, type(self).__name__)
        groups = x.reshape(*x.shape[:-1], -1, self.group_size)
        return torch.sort(groups, dim=-1, descending=True).values.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MaxMin(GroupSort):
    """``(z_0, z_1, z_2, z_3, ...) ↦ (max(z_0, z_1), min(z_0, z_1), max(z_2, z_3), ...)``.

    The same map as ``GroupSort(2)``; input ``(..., n)`` with ``n`` even.
    """

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_groups(x, 2, type(self).__name__)
        first, second = x[..., 0::2], x[..., 1::2]
        pairs = torch.stack((torch.maximum(first, second), torch.minimum(first, second)), dim=-1)
        return pairs.reshape(x.shape)

    def extra_repr(self) -> str:
        return ""


class HouseholderActivation(nn.Module):
    """Per-pair Householder reflection when on the wrong side of a line.

    For the pair ``z = (x[..., 2k], x[..., 2k+1])`` and ``v_k = (cos θ_k, sin θ_k)``:
    ``σ(z) = z`` if ``v_kᵀz > 0``, otherwise ``(I − 2 v_k v_kᵀ) z``.

    Parameters
    ----------
    num_features:
        Number of input features ``n`` (even); there are ``n/2`` angles.
    theta:
        Initial angles, a scalar or ``n/2`` values (radians).  ``None`` means
        ``−π/4`` for every pair, which makes the layer equal to :class:`MaxMin`.
        Stored as the learnable parameter :attr:`theta` (float32 like any
        default module parameter unless a tensor of another dtype is given).
    """

    def __init__(self, num_features: int, theta: float | torch.Tensor | None = None) -> None:
        super().__init__()
        n = int(check_scalar(num_features, "num_features", low=2, integer=True))
        if n % 2:
            raise InputValueError(f"num_features: expected an even number, got {n}")
        self.num_features = n
        if theta is None:
            init = torch.full((n // 2,), -math.pi / 4)
        else:
            dtype = theta.dtype if isinstance(theta, torch.Tensor) else torch.float32
            init = as_tensor(theta, "theta", dtype=dtype).reshape(-1)
            if init.numel() == 1:
                init = init.expand(n // 2).clone()
            if init.numel() != n // 2:
                raise InputValueError(
                    f"theta: expected a scalar or {n // 2} angles (num_features/2), "
                    f"got {init.numel()} values"
                )
        self.theta = nn.Parameter(init)

    def directions(self) -> torch.Tensor:
        """The unit vectors ``v_k`` as a ``(n/2, 2)`` tensor."""
        return torch.stack((torch.cos(self.theta), torch.sin(self.theta)), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x.shape[-1] != self.num_features:
            raise InputValueError(
                f"HouseholderActivation: expected input with last dimension "
                f"{self.num_features}, got shape {tuple(x.shape)}"
            )
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        v = self.directions().to(dtype=x.dtype)
        c = (pairs * v).sum(dim=-1, keepdim=True)
        return (pairs + 2.0 * torch.relu(-c) * v).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}"


class Residual(nn.Module):
    """``x ↦ x + inner(x)``; ``inner`` must keep the shape of its input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        if not isinstance(inner, nn.Module):
            raise InputTypeError(
                f"inner: expected a torch.nn.Module, got {type(inner).__name__}"
            )
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if out.shape != x.shape:
            raise InputValueError(
                f"Residual: inner module maps shape {tuple(x.shape)} to {tuple(out.shape)}; "
                "a residual block needs the same shape"
            )
        return x + out
