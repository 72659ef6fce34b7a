"""Status codes and the base result type returned by every solver.

A result is the solution *and* its certificate: the primal ``objective`` of
the returned point, a ``bound`` that brackets the optimum from the other side
(a dual value or lower bound for minimisation), the certified ``gap`` between
them, feasibility ``residuals``, the ``status``, the iteration count and the
wall time.  Module results subclass :class:`SolverResult` and add their
solution fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from certopt.core.display import FieldRepr, describe, float_eps


class Status(str, Enum):
    """Outcome of a solve.  Only ``OPTIMAL`` means the tolerance was met."""

    OPTIMAL = "optimal"
    """Stopping criteria met at the requested tolerance."""
    INACCURATE = "inaccurate"
    """The solver claims a solution, but only to reduced accuracy."""
    MAX_ITER = "max_iter"
    """Iteration limit reached before the tolerance; the answer is the last iterate."""
    TIME_LIMIT = "time_limit"
    """Time limit reached before the tolerance; the answer is the last iterate."""
    NUMERICAL = "numerical"
    """The solver failed numerically (NaN, breakdown); do not trust the answer."""
    INFEASIBLE = "infeasible"
    """The problem was proven infeasible."""
    UNBOUNDED = "unbounded"
    """The problem was proven unbounded."""

    @property
    def converged(self) -> bool:
        """True only for :attr:`OPTIMAL`."""
        return self is Status.OPTIMAL

    def __str__(self) -> str:
        return self.value


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Status):
        return value.value
    return repr(value)


@dataclass(frozen=True, kw_only=True)
class SolverResult(FieldRepr):
    """Base result: a solution's evidence.

    ``repr`` lists one field per line with arrays by shape and dtype (see
    :class:`certopt.core.display.FieldRepr`; subclasses inherit it even when
    decorated with ``@dataclass``); :meth:`summary` lists the scalar evidence.

    Attributes
    ----------
    objective:
        Primal objective at the returned point.
    bound:
        Certified bound on the optimal value from the other side (for a
        minimisation, a lower bound: a dual value).  ``nan`` when the solver
        cannot certify one.
    gap:
        ``objective - bound`` for a minimisation (``>= 0`` up to round-off when
        both describe the same program; a subclass whose bound is on a
        restricted program says when it can be negative); ``nan`` when no bound
        is available.
    residuals:
        Named feasibility residuals of the returned point (absolute values,
        in the units of the constraint they measure).
    status:
        How the solve ended; see :class:`Status`.
    n_iter:
        Iterations the solver ran (0 for direct/closed-form methods).
    solve_time:
        Wall-clock seconds spent in the solver.
    history:
        Optional per-iteration traces (name -> list of floats).
    """

    objective: float
    bound: float
    gap: float
    status: Status
    residuals: Mapping[str, float] = field(default_factory=dict)
    n_iter: int = 0
    solve_time: float = 0.0
    history: Mapping[str, list[float]] = field(default_factory=dict, repr=False)

    @property
    def converged(self) -> bool:
        """True when :attr:`status` is :attr:`Status.OPTIMAL`."""
        return self.status.converged

    @property
    def displayed_gap(self) -> float:
        """:attr:`gap` as printed: 0 for an OPTIMAL result whose gap is negative
        by no more than ``sqrt(eps) * max(1, |objective|, |bound|)`` (``eps``
        the machine epsilon of the solution's dtype), the gap otherwise.

        Such a gap says the bound meets the objective up to the round-off and
        the tolerance the solver met (a plan within ``tol`` of its marginals
        costs a little less than the optimum); a positive gap is evidence and
        is always shown as computed."""
        eps = float_eps(getattr(self, f.name) for f in dataclasses.fields(self))
        scale = max(1.0, abs(self.objective), abs(self.bound))
        if self.converged and -math.sqrt(eps) * scale <= self.gap < 0:
            return 0.0
        return self.gap

    def _describe_field(self, name: str, value: Any) -> str:
        return describe(self.displayed_gap if name == "gap" else value)

    @property
    def relative_gap(self) -> float:
        """``gap / max(1, |objective|)``."""
        return self.gap / max(1.0, abs(self.objective))

    def certificate(self) -> dict[str, Any]:
        """The scalar evidence of this result as a plain dictionary.

        Array-valued fields (the solution itself) are left out; residuals are
        flattened as ``residual.<name>``.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("residuals", "history"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, (bool, int, float, str, Status)) or value is None:
                out[f.name] = value
        for name, value in self.residuals.items():
            out[f"residual.{name}"] = value
        return out

    def summary(self) -> str:
        """A few human-readable lines: the certificate, one item per line."""
        lines = [type(self).__name__]
        for name, value in self.certificate().items():
            if name == "gap":
                value = self.displayed_gap
            lines.append(f"  {name:<30} {_format_value(value)}")
        return "\n".join(lines)


def duality_gap(objective: float, bound: float) -> float:
    """``objective - bound``, or ``nan`` if either is not finite."""
    if math.isfinite(objective) and math.isfinite(bound):
        return float(objective - bound)
    return math.nan
