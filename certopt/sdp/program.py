"""The straight-line program every network is compiled to (math note, section 8).

A network ``f`` is described by its *state*

    ξ = (x, φ_1, …, φ_S),

a list of **segments**: segment 0 is the input ``x`` (size ``n_0``) and
segment ``s >= 1`` is the output ``φ_s`` of activation stage ``s``.  Every
vector the network computes (a pre-activation, a residual sum, the output)
is a *linear* function of the state, held as a :class:`LinearExpr`: a map
``segment index -> float64 matrix`` (rows = the quantity's dimension,
columns = the segment's size).  Biases are dropped: they cancel in every
difference ``f(x) - f(y)`` and never change a Lipschitz constant.

A :class:`Stage` ``s`` has a pre-activation expression ``c_s`` (over
segments ``< s`` only, skips allowed) and a :class:`QuadraticConstraint`
describing the activation ``φ_s = act(c_s)``: a quadratic form in
``(Δc_s, Δφ_s)``, weighted by nonnegative (or free) multipliers, that is
``>= 0`` for every pair of inputs.  The program's output is ``f = A_out ξ``.

LipSDP (sections 1, 5, 8) then asks for multipliers making

    M = diag(γ) on the x block − A_outᵀA_out − Σ_s [C_s; E_s]ᵀ S_s [C_s; E_s]  ⪰ 0,

where ``C_s`` is ``c_s`` as a row-block matrix over the state, ``E_s``
selects segment ``s`` and ``S_s`` is the stage's weighted QC matrix
(:class:`QCForm`).  ℓ2: ``γ = ρ·1`` and ``L_2(f) <= √ρ``; ℓ∞ input:
``L_{∞→2}(f) <= √(Σγ)``.  :mod:`certopt.sdp.lmi` builds ``M`` block by block.

The naive (triangle-inequality) bound reads the program through its
:attr:`Program.lipschitz_steps`: every stage, plus every quantity a rule
declared with :meth:`ProgramBuilder.add_lipschitz_map` as one Lipschitz
function of another (e.g. a reflection layer ``σ(z) = (I − VᵀV) z + Vᵀ|Vz|``,
1-Lipschitz in ℓ2).  Such a quantity is a *named segment* (a negative index)
while the rules build; :meth:`ProgramBuilder.finish` substitutes its linear
definition everywhere, so ``stages`` and ``output`` only refer to real segments.

Adding a QC type (e.g. a GroupSort group constraint) means subclassing
:class:`QuadraticConstraint`: declare its multipliers (:meth:`~QuadraticConstraint.cvx_multipliers`)
and return its weighted matrix in ``(c, φ)`` coordinates (:meth:`~QuadraticConstraint.form`)
for cvxpy variables, numpy arrays or torch tensors.  Nothing in the LMI code
changes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cvxpy as cp
import numpy as np
import torch

from certopt.core.errors import InputValueError

Block = Any
"""A QC block: ``None`` (zero), a 1-D vector (a diagonal matrix) or a 2-D matrix,
as a numpy array, a torch tensor or a cvxpy expression."""

Multiply = Callable[[Any, Any], Any]
"""Elementwise product for the backend at hand (``cp.multiply`` or ``operator.mul``)."""


@dataclass(frozen=True, eq=False)
class LinearExpr:
    """A quantity computed by the network, as a linear function of the state.

    ``value = Σ_k terms[k] @ ξ_k``; ``terms[k]`` has shape ``(dim, size_k)``.
    ``shape`` is the quantity's tensor shape without the batch axis
    (row-major flattening gives ``dim``), so rules for ``Flatten`` or
    ``Conv2d`` know the layout.
    """

    shape: tuple[int, ...]
    terms: Mapping[int, np.ndarray]

    @property
    def dim(self) -> int:
        """Number of scalar entries of the quantity."""
        return math.prod(self.shape)

    @property
    def segments(self) -> tuple[int, ...]:
        """Segments this quantity depends on, in increasing order."""
        return tuple(sorted(self.terms))

    @staticmethod
    def identity(segment: int, shape: Sequence[int]) -> LinearExpr:
        """The expression equal to segment ``segment`` itself."""
        shape = tuple(int(s) for s in shape)
        return LinearExpr(shape, {segment: np.eye(math.prod(shape))})

    def left_multiply(self, matrix: np.ndarray, shape: Sequence[int] | None = None
                      ) -> LinearExpr:
        """``matrix @ self`` (a linear layer without bias); new ``shape`` optional."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise InputValueError(
                f"matrix: expected shape (*, {self.dim}), got {tuple(matrix.shape)}"
            )
        new_shape = (matrix.shape[0],) if shape is None else tuple(shape)
        return LinearExpr(new_shape, {k: matrix @ block for k, block in self.terms.items()})

    def reshape(self, shape: Sequence[int]) -> LinearExpr:
        """The same entries, viewed with another (row-major) shape."""
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != self.dim:
            raise InputValueError(f"shape: cannot view {self.shape} as {shape}")
        return LinearExpr(shape, self.terms)

    def rows(self, index: Sequence[int] | np.ndarray) -> LinearExpr:
        """The entries ``index`` of the (flattened) quantity, as a 1-D quantity."""
        index = np.asarray(index, dtype=np.int64)
        return LinearExpr((len(index),), {k: b[index] for k, b in self.terms.items()})

    def __add__(self, other: LinearExpr) -> LinearExpr:
        if not isinstance(other, LinearExpr):
            return NotImplemented
        if other.dim != self.dim:
            raise InputValueError(f"cannot add quantities of shapes {self.shape} and {other.shape}")
        terms = dict(self.terms)
        for k, block in other.terms.items():
            terms[k] = terms[k] + block if k in terms else block
        return LinearExpr(self.shape, terms)

    def __mul__(self, scale: float) -> LinearExpr:
        return LinearExpr(self.shape, {k: float(scale) * b for k, b in self.terms.items()})

    __rmul__ = __mul__


class QCForm(NamedTuple):
    """A weighted QC as a symmetric matrix in ``(c, φ)`` coordinates.

    The quadratic form is ``Δcᵀ pre_pre Δc + 2 Δcᵀ pre_out Δφ + Δφᵀ out_out Δφ``
    (``>= 0`` for every pair of inputs when the multipliers are admissible).
    Each block is ``None`` (zero), a 1-D vector (a diagonal matrix; for
    ``pre_out`` only when ``dim c == dim φ``) or a 2-D matrix.
    """

    pre_pre: Block
    pre_out: Block
    out_out: Block


class QuadraticConstraint(ABC):
    """Incremental quadratic constraints of one activation stage.

    Subclasses define the stage's sizes, its Lipschitz ``gain`` (used by the
    naive bound), its multipliers and its weighted form.
    """

    pre_dim: int
    """Dimension of the pre-activation ``c``."""
    size: int
    """Dimension of the output ``φ`` (the new segment)."""
    gain: float
    """A Lipschitz constant of ``c ↦ φ`` in ℓ2 (e.g. ``max(|α|, |β|)``)."""

    @abstractmethod
    def cvx_multipliers(self, name: str) -> tuple[dict[str, cp.Expression], list[cp.Constraint]]:
        """cvxpy variables for the multipliers (keyed by name) and their constraints."""

    @abstractmethod
    def form(self, multipliers: Mapping[str, Any], multiply: Multiply) -> QCForm:
        """The weighted QC for these multipliers (cvxpy, numpy or torch values)."""

    @abstractmethod
    def project(self, multipliers: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Nearest admissible multipliers (e.g. clip to ``>= 0``), as float64 arrays."""

    def trace_gradient(self, multipliers: Mapping[str, torch.Tensor], pre: torch.Tensor,
                       out: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """``∂/∂μ tr([H; P]ᵀ S(μ) [H; P])`` per multiplier, ``H = pre`` ``(pre_dim, k)``,
        ``P = out`` ``(size, k)``, in closed form; ``None`` (default): the first-order
        solver differentiates :meth:`form` by autograd instead."""
        return None

    def sector(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Slopes ``[α, β]`` (each ``(size,)``) whose slope QC (section 1) this QC contains.

        With weights ``t >= 0`` constant on the groups the QC couples, the
        multipliers :meth:`sector_multipliers` ``(t)`` give exactly the form of
        :class:`SlopeRestricted` ``(α, β)`` with weights ``t`` (first-order
        solvers start from it).  ``None`` (default): no such slopes.
        """
        return None

    def sector_multipliers(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Multipliers reproducing the slope QC of :meth:`sector` with weights ``weights``."""
        raise NotImplementedError(f"{type(self).__name__} declares no sector")


class SlopeRestricted(QuadraticConstraint):
    """Elementwise activation with slopes in ``[alpha_i, beta_i]`` (section 1).

    QC per neuron, multiplier ``t_i >= 0``:
    ``t_i (Δφ_i − α_iΔc_i)(β_iΔc_i − Δφ_i) >= 0``, i.e. the form
    ``pre_pre = −αβt``, ``pre_out = (α+β)t/2``, ``out_out = −t`` (diagonals).
    ReLU ``[0, 1]``, LeakyReLU(a) ``[min(a,1), max(a,1)]``, tanh ``[0, 1]``,
    sigmoid ``[0, 1/4]``, abs ``[−1, 1]``.
    """

    def __init__(self, alpha: np.ndarray | float, beta: np.ndarray | float,
                 size: int | None = None):
        alpha_arr = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
        beta_arr = np.atleast_1d(np.asarray(beta, dtype=np.float64))
        n = size if size is not None else max(alpha_arr.size, beta_arr.size)
        self.alpha = np.broadcast_to(alpha_arr, (n,)).copy()
        self.beta = np.broadcast_to(beta_arr, (n,)).copy()
        if not (np.all(np.isfinite(self.alpha)) and np.all(np.isfinite(self.beta))):
            raise InputValueError("alpha, beta: expected finite slope bounds")
        if np.any(self.alpha > self.beta):
            raise InputValueError("alpha, beta: expected alpha <= beta elementwise")
        self.pre_dim = self.size = n
        self.gain = float(np.max(np.maximum(np.abs(self.alpha), np.abs(self.beta))))

    def cvx_multipliers(self, name: str) -> tuple[dict[str, cp.Expression], list[cp.Constraint]]:
        t = cp.Variable(self.size, name=f"{name}.t", nonneg=True)
        return {"t": t}, []

    def form(self, multipliers: Mapping[str, Any], multiply: Multiply) -> QCForm:
        t = multipliers["t"]
        product = -self.alpha * self.beta
        pre_pre = multiply(like(product, t), t) if np.any(product != 0) else None
        return QCForm(pre_pre, multiply(like(0.5 * (self.alpha + self.beta), t), t), -t)

    def project(self, multipliers: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"t": np.maximum(np.asarray(multipliers["t"], dtype=np.float64), 0.0)}

    def trace_gradient(self, multipliers: Mapping[str, torch.Tensor], pre: torch.Tensor,
                       out: torch.Tensor) -> dict[str, torch.Tensor]:
        """The form is linear in ``t``: ``∂/∂t_i = −α_iβ_i‖H_i‖² + (α_i+β_i)⟨H_i, P_i⟩ − ‖P_i‖²``
        (rows ``H_i``, ``P_i``)."""
        alpha, beta = like(self.alpha, pre), like(self.beta, pre)
        return {"t": -(alpha * beta) * (pre * pre).sum(dim=1)
                + (alpha + beta) * (pre * out).sum(dim=1) - (out * out).sum(dim=1)}

    def sector(self) -> tuple[np.ndarray, np.ndarray]:
        return self.alpha, self.beta

    def sector_multipliers(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {"t": np.asarray(weights, dtype=np.float64)}

    def __repr__(self) -> str:
        return f"SlopeRestricted(size={self.size}, alpha∈{_range(self.alpha)}, " \
               f"beta∈{_range(self.beta)})"


def like(constant: np.ndarray, value: Any) -> Any:
    """``constant`` as a tensor of ``value``'s dtype and device when ``value`` is a tensor."""
    if isinstance(value, torch.Tensor):
        return torch.as_tensor(constant, dtype=value.dtype, device=value.device)
    return constant


def _range(v: np.ndarray) -> str:
    lo, hi = float(v.min()), float(v.max())
    return f"{lo:g}" if lo == hi else f"[{lo:g}, {hi:g}]"


@dataclass(frozen=True, eq=False)
class Stage:
    """Activation stage: ``φ = act(pre)`` with the quadratic constraints ``qc``."""

    pre: LinearExpr
    qc: QuadraticConstraint
    label: str = ""


class LipschitzStep(NamedTuple):
    """Quantity ``segment`` is ``h(source)`` for a map ``h`` that is ``gain``-Lipschitz in ℓ2.

    ``source`` may refer to the input, to stage outputs and to earlier named
    segments (negative indices).
    """

    segment: int
    source: LinearExpr
    gain: float


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled network: input size, activation stages and output expression.

    Segment ``0`` is the input, segment ``s`` the output of ``stages[s-1]``.
    ``lipschitz_steps`` and ``lipschitz_output`` describe the same network
    for the naive bound, with named segments kept (see
    :meth:`ProgramBuilder.add_lipschitz_map`); by default they are the
    stages and the output themselves.
    """

    input_shape: tuple[int, ...]
    stages: tuple[Stage, ...]
    output: LinearExpr
    lipschitz_steps: tuple[LipschitzStep, ...] | None = None
    lipschitz_output: LinearExpr | None = None
    segment_sizes: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        sizes = (math.prod(self.input_shape),) + tuple(s.qc.size for s in self.stages)
        object.__setattr__(self, "segment_sizes", sizes)
        if self.lipschitz_steps is None:
            steps = tuple(LipschitzStep(k + 1, st.pre, st.qc.gain)
                          for k, st in enumerate(self.stages))
            object.__setattr__(self, "lipschitz_steps", steps)
        if self.lipschitz_output is None:
            object.__setattr__(self, "lipschitz_output", self.output)

    @property
    def input_dim(self) -> int:
        return self.segment_sizes[0]

    @property
    def output_dim(self) -> int:
        return self.output.dim

    @property
    def state_dim(self) -> int:
        """``n_0 + Σ_s size_s``, the order of the LMI matrix."""
        return sum(self.segment_sizes)

    def __repr__(self) -> str:
        return (f"Program(input={self.input_shape}, stages={[s.qc.size for s in self.stages]}, "
                f"output={self.output_dim}, state_dim={self.state_dim})")


def input_basis(program: Program) -> np.ndarray | None:
    """An orthonormal basis ``Q`` (``n_0 × r``) of the input's row space, or ``None``.

    Every quantity of the program sees ``x`` through the input blocks
    ``C_k[0]`` of the stages and the output, so ``x`` only matters through
    ``Qᵀx``: the LMI's input block (after eliminating the other segments) is
    ``Q R̃ Qᵀ`` and its top eigenvalue that of the order-``r`` matrix ``R̃``.
    ``None`` (no reduction worth it) when those blocks have at least ``3/4·n_0``
    rows or rank, or there are none.
    """
    blocks = [e.terms[0] for e in (*(st.pre for st in program.stages), program.output)
              if 0 in e.terms]
    if not blocks or sum(b.shape[0] for b in blocks) >= 0.75 * program.input_dim:
        return None
    _, singular, vh = np.linalg.svd(np.vstack(blocks), full_matrices=False)
    rank = int((singular > singular[0] * 1e-13).sum()) if singular.size else 0
    return None if rank >= 0.75 * program.input_dim else vh[:max(rank, 1)].T


def reduced_input(program: Program) -> tuple[Program, np.ndarray | None]:
    """The same program on ``x̃ = Qᵀx`` (:func:`input_basis`), and ``Q`` (``None``: unchanged).

    In ℓ2 ``ρ`` and the multipliers are those of the full program; in ℓ∞
    ``diag(γ) ⪰ Q R̃ Qᵀ`` is an eigenproblem of the reduced order (see
    :mod:`certopt.sdp.first_order`): a 784-input net with a 16-wide first layer
    gives a 16-dimensional eigenproblem instead of a 784-dimensional one.
    """
    basis = input_basis(program)
    if basis is None:
        return program, None

    def project(expr: LinearExpr) -> LinearExpr:
        return LinearExpr(expr.shape, {k: (b @ basis if k == 0 else b)
                                       for k, b in expr.terms.items()})

    stages = tuple(Stage(project(st.pre), st.qc, st.label) for st in program.stages)
    return Program((basis.shape[1],), stages, project(program.output)), basis


class ProgramBuilder:
    """Builds a :class:`Program` stage by stage (used by compiler rules).

    ``builder.input`` is the expression of the network input; a rule calls
    :meth:`add_stage` for every activation and gets back the identity
    expression of the new segment, and may call :meth:`add_lipschitz_map`
    to name a quantity that is one Lipschitz function of another.
    """

    def __init__(self, input_shape: Sequence[int]):
        self.input_shape = tuple(int(s) for s in input_shape)
        if not self.input_shape or min(self.input_shape) < 1:
            raise InputValueError(
                f"input_shape: expected positive dimensions, got {self.input_shape}")
        self.input = LinearExpr.identity(0, self.input_shape)
        self._stages: list[Stage] = []
        self._steps: list[LipschitzStep] = []
        self._named: dict[int, LinearExpr] = {}

    @property
    def n_segments(self) -> int:
        return len(self._stages) + 1

    def add_stage(self, pre: LinearExpr, qc: QuadraticConstraint,
                  shape: Sequence[int] | None = None, label: str = "") -> LinearExpr:
        """Append ``φ = act(pre)`` and return the expression of ``φ``.

        ``shape`` is the output's tensor shape (default ``pre.shape`` when the
        sizes agree, else ``(qc.size,)``).
        """
        if pre.dim != qc.pre_dim:
            raise InputValueError(
                f"pre: the quadratic constraint expects {qc.pre_dim} inputs, got {pre.dim}")
        self._check_segments(pre, "pre")
        if shape is None:
            shape = pre.shape if qc.size == pre.dim else (qc.size,)
        segment = self.n_segments
        self._stages.append(Stage(self._expand(pre), qc, label))
        self._steps.append(LipschitzStep(segment, pre, qc.gain))
        return LinearExpr.identity(segment, shape)

    def add_lipschitz_map(self, source: LinearExpr, value: LinearExpr,
                          gain: float = 1.0) -> LinearExpr:
        """Declare ``value = h(source)`` with ``h`` ``gain``-Lipschitz in ℓ2; return it named.

        The returned expression equals ``value`` (a new named segment with a
        negative index, substituted by :meth:`finish`); the naive bound then
        bounds ``value`` by ``gain`` times its bound on ``source`` instead of
        adding up the terms of ``value``.  The caller guarantees the Lipschitz
        property (the SDP never uses it).
        """
        self._check_segments(source, "source")
        self._check_segments(value, "value")
        if not (math.isfinite(gain) and gain >= 0):
            raise InputValueError(f"gain: expected a finite number >= 0, got {gain!r}")
        segment = -(len(self._named) + 1)
        self._named[segment] = self._expand(value)
        self._steps.append(LipschitzStep(segment, source, float(gain)))
        return LinearExpr.identity(segment, value.shape)

    def finish(self, output: LinearExpr) -> Program:
        """The program with output ``output``."""
        self._check_segments(output, "output")
        return Program(self.input_shape, tuple(self._stages), self._expand(output),
                       tuple(self._steps), output)

    def _check_segments(self, expr: LinearExpr, name: str) -> None:
        if any(k >= self.n_segments or (k < 0 and k not in self._named) for k in expr.terms):
            raise InputValueError(f"{name}: refers to a segment that does not exist yet")

    def _expand(self, expr: LinearExpr) -> LinearExpr:
        """``expr`` with every named segment replaced by its definition (real segments only)."""
        result = LinearExpr(expr.shape, {k: b for k, b in expr.terms.items() if k >= 0})
        for k, block in expr.terms.items():
            if k < 0:
                result = result + self._named[k].left_multiply(block, expr.shape)
        return result
