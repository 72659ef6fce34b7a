"""Compiler rules for MaxMin, GroupSort, Householder activations and residual blocks.

Reflection stages (math note, section 2).  A Householder activation on a pair
``z`` with unit vector ``v`` is ``σ(z) = |c|·v + z_⊥`` where ``c = vᵀz`` and
``z_⊥ = (I − vvᵀ) z``.  For a layer of disjoint pairs, stack the directions as
the rows of ``V`` (one row per pair, supported on its two features); then

    φ = |V z|   (a stage, slope-restricted in [−1, 1]),     σ(z) = (I − VᵀV) z + Vᵀ φ,

so the pass-through part ``(I − VᵀV) z`` is a linear expression (no new
state).  ``σ`` is 1-Lipschitz in ℓ2 (the rows of ``V`` are orthonormal, so
``‖Δσ‖² = ‖(I − VᵀV)Δz‖² + ‖Δφ‖² <= ‖(I − VᵀV)Δz‖² + ‖VΔz‖² = ‖Δz‖²``); the
rule declares it with :meth:`~certopt.sdp.program.ProgramBuilder.add_lipschitz_map`
so the naive bound is ``‖W‖₂`` per layer, not the sum of the two parts.
MaxMin is ``v = (1, −1)/√2``; ``HouseholderActivation`` uses its learned
angles; pairs a layer leaves alone are simply not rows of ``V``.

GroupSort(g), ``g > 2`` (section 3), has two encodings:

* ``"network"``: the odd-even transposition sorting network, ``g`` rounds of
  disjoint comparators, each round one reflection stage (a comparator
  ``(z_i, z_{i+1}) ↦ (max, min)`` is MaxMin on that pair);
* ``"qc"``: one stage per layer with :class:`GroupSortQC` (1-Lipschitz and
  sum-preserving per group).

The encoding is chosen with :func:`groupsort_encoding` (default
``"network"``); ``lipschitz_bound(..., groupsort="both")`` certifies both and
keeps the smaller verified bound.

Residual (section 4): ``x + inner(x)`` is the sum of two expressions; the
whole network stays one LMI (the "big LMI", tighter than chaining per-layer
bounds).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import cvxpy as cp
import numpy as np
import torch

from certopt.core.errors import InputValueError
from certopt.sdp.activations import GroupSort, HouseholderActivation, MaxMin, Residual
from certopt.sdp.compiler import compile_module, layer_weight, register_rule
from certopt.sdp.program import (
    LinearExpr,
    Multiply,
    ProgramBuilder,
    QCForm,
    QuadraticConstraint,
    SlopeRestricted,
    like,
)

__all__ = ["GROUPSORT_ENCODINGS", "GroupSortQC", "groupsort_candidates", "groupsort_encoding",
           "reflection_stage", "sorting_network"]

GROUPSORT_ENCODINGS = ("network", "qc")
_ENCODING: ContextVar[str] = ContextVar("groupsort_encoding", default="network")


@contextlib.contextmanager
def groupsort_encoding(encoding: str) -> Iterator[None]:
    """Compile ``GroupSort(g > 2)`` layers with ``encoding`` inside the ``with`` block."""
    if encoding not in GROUPSORT_ENCODINGS:
        raise InputValueError(
            f"groupsort: expected one of {GROUPSORT_ENCODINGS}, got {encoding!r}")
    token = _ENCODING.set(encoding)
    try:
        yield
    finally:
        _ENCODING.reset(token)


def reflection_stage(expr: LinearExpr, pairs: np.ndarray, directions: np.ndarray,
                     builder: ProgramBuilder, label: str) -> LinearExpr:
    """``σ(z)``: reflect the pairs ``(i, j)`` of ``z`` whose ``vᵀ(z_i, z_j) <= 0``.

    ``pairs``: ``(m, 2)`` disjoint flat feature indices; ``directions``:
    ``(m, 2)`` unit vectors.  Adds the abs stage ``φ = |V z|`` and returns
    ``(I − VᵀV) z + Vᵀ φ`` with the shape of ``expr``, declared a 1-Lipschitz
    function of ``z``.
    """
    n, m = expr.dim, len(pairs)
    v_mat = np.zeros((m, n))
    rows = np.arange(m)
    v_mat[rows, pairs[:, 0]] = directions[:, 0]
    v_mat[rows, pairs[:, 1]] = directions[:, 1]
    phi = builder.add_stage(expr.left_multiply(v_mat), SlopeRestricted(-1.0, 1.0, m),
                            label=label)
    keep = expr.left_multiply(np.eye(n) - v_mat.T @ v_mat, expr.shape)
    return builder.add_lipschitz_map(expr, keep + phi.left_multiply(v_mat.T, expr.shape))


def _consecutive_pairs(expr: LinearExpr, group_size: int, layer: str) -> None:
    if not expr.shape or expr.shape[-1] % group_size:
        raise InputValueError(
            f"net: {layer} receives inputs of shape {expr.shape}; the last dimension must "
            f"be divisible by {group_size}")


def sorting_network(size: int) -> list[list[tuple[int, int]]]:
    """Odd-even transposition network sorting ``size`` items: rounds of disjoint comparators.

    Applying ``(a_i, a_j) ↦ (max, min)`` for every comparator ``(i, j)``,
    round after round, sorts any input in descending order.
    """
    return [[(i, i + 1) for i in range(r % 2, size - 1, 2)] for r in range(size)]


_MAXMIN_DIRECTION = np.array([1.0, -1.0]) / math.sqrt(2.0)


@register_rule(MaxMin)
def _maxmin(module: MaxMin, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    _consecutive_pairs(expr, 2, "MaxMin")
    pairs = np.arange(expr.dim).reshape(-1, 2)
    return reflection_stage(expr, pairs, np.tile(_MAXMIN_DIRECTION, (len(pairs), 1)), builder,
                            "MaxMin")


@register_rule(HouseholderActivation)
def _householder(module: HouseholderActivation, expr: LinearExpr, builder: ProgramBuilder
                 ) -> LinearExpr:
    if expr.shape[-1:] != (module.num_features,):
        raise InputValueError(
            f"net: {module!r} receives inputs of shape {expr.shape}, expected last "
            f"dimension {module.num_features}")
    theta = layer_weight(module, "theta")
    directions = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    pairs = np.arange(expr.dim).reshape(-1, 2)
    repeats = len(pairs) // len(theta)
    return reflection_stage(expr, pairs, np.tile(directions, (repeats, 1)), builder,
                            "Householder")


@register_rule(GroupSort)
def _groupsort(module: GroupSort, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    g = module.group_size
    _consecutive_pairs(expr, g, f"GroupSort({g})")
    if g == 1:
        return expr
    if g == 2:
        return _maxmin(module, expr, builder)
    if _ENCODING.get() == "qc":
        return builder.add_stage(expr, GroupSortQC(expr.dim, g), shape=expr.shape,
                                 label=f"GroupSort({g})")
    starts = np.arange(0, expr.dim, g)
    for number, comparators in enumerate(sorting_network(g)):
        pairs = np.array([(s + i, s + j) for s in starts for i, j in comparators])
        expr = reflection_stage(expr, pairs, np.tile(_MAXMIN_DIRECTION, (len(pairs), 1)),
                                builder, f"GroupSort({g}) round {number + 1}")
    return expr


@register_rule(Residual)
def _residual(module: Residual, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    inner = compile_module(module.inner, expr, builder)
    if inner.dim != expr.dim:
        raise InputValueError(
            f"net: Residual inner module maps {expr.dim} features to {inner.dim}; a residual "
            "block needs the same shape")
    return expr + inner.reshape(expr.shape)


class GroupSortQC(QuadraticConstraint):
    """Quadratic constraints of GroupSort(g) on ``n/g`` consecutive groups (section 3).

    Per group ``G`` with pre-activation ``c_G`` and output ``φ_G = sort(c_G)``:

    * ``λ_G (‖Δc_G‖² − ‖Δφ_G‖²) >= 0`` with ``λ_G >= 0`` (1-Lipschitz);
    * ``1ᵀ(Δφ_G − Δc_G) · (a_Gᵀ Δc_G + b_Gᵀ Δφ_G) = 0`` for free ``a_G, b_G ∈ R^g``
      (sums are preserved, so this product vanishes and may enter with either sign).

    With ``J`` the block-diagonal all-ones matrix of the groups, the weighted
    form is ``pre_pre = diag(λ) − ½(J·diag(a) + diag(a)·J)``,
    ``pre_out = ½(diag(a)·J − J·diag(b))``, ``out_out = −diag(λ) + ½(J·diag(b) + diag(b)·J)``
    (``λ`` repeated over each group's features).
    """

    def __init__(self, size: int, group_size: int):
        if group_size < 1 or size % group_size:
            raise InputValueError(
                f"size: expected a multiple of group_size={group_size}, got {size}")
        self.pre_dim = self.size = int(size)
        self.group_size = int(group_size)
        self.n_groups = self.size // self.group_size
        self.gain = 1.0
        self._expand = np.kron(np.eye(self.n_groups), np.ones((self.group_size, 1)))
        self._ones = self._expand @ self._expand.T

    def cvx_multipliers(self, name: str) -> tuple[dict[str, cp.Expression], list[cp.Constraint]]:
        return {"lam": cp.Variable(self.n_groups, name=f"{name}.lam", nonneg=True),
                "a": cp.Variable(self.size, name=f"{name}.a"),
                "b": cp.Variable(self.size, name=f"{name}.b")}, []

    def form(self, multipliers: Mapping[str, Any], multiply: Multiply) -> QCForm:
        lam, a, b = multipliers["lam"], multipliers["a"], multipliers["b"]
        if isinstance(lam, cp.Expression):
            diag, ones, expand = cp.diag, self._ones, self._expand
            ones_a, ones_b = ones @ diag(a), ones @ diag(b)
        else:
            diag = torch.diag if isinstance(lam, torch.Tensor) else np.diag
            ones, expand = (like(m, lam) for m in (self._ones, self._expand))
            ones_a, ones_b = ones * a[None, :], ones * b[None, :]  # J·diag(a), O(n²)
        lam_full = diag(expand @ lam)
        return QCForm(lam_full - 0.5 * (ones_a + ones_a.T),
                      0.5 * (ones_a.T - ones_b),
                      -lam_full + 0.5 * (ones_b + ones_b.T))

    def project(self, multipliers: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"lam": np.maximum(np.asarray(multipliers["lam"], dtype=np.float64), 0.0),
                "a": np.asarray(multipliers["a"], dtype=np.float64),
                "b": np.asarray(multipliers["b"], dtype=np.float64)}

    def sector(self) -> tuple[np.ndarray, np.ndarray]:
        """``a = b = 0`` leaves ``λ_G(‖Δc_G‖² − ‖Δφ_G‖²)``: the abs QC, slopes ``[−1, 1]``."""
        return -np.ones(self.size), np.ones(self.size)

    def sector_multipliers(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        groups = np.asarray(weights, dtype=np.float64).reshape(self.n_groups, self.group_size)
        return {"lam": groups.max(axis=1), "a": np.zeros(self.size), "b": np.zeros(self.size)}

    def __repr__(self) -> str:
        return f"GroupSortQC(size={self.size}, group_size={self.group_size})"


def groupsort_candidates(net: torch.nn.Module, method: str) -> tuple[str, ...]:
    """Encodings worth certifying for ``net``: both when it has a ``GroupSort(g > 2)``."""
    has_large_groups = any(isinstance(m, GroupSort) and not isinstance(m, MaxMin)
                           and m.group_size > 2 for m in net.modules())
    if not has_large_groups or method == "naive":
        return ("network",)
    return GROUPSORT_ENCODINGS
