"""The one loop that maximises a smooth concave dual: accelerated gradient or L-BFGS.

Every OT dual in certopt (sparse, quadratic, class-based) is a smooth
concave function of potentials.  A solver hands this module

* ``value_and_grad(x) -> (value, grad)``: the dual value (a Python float or
  0-d tensor) and its gradient, where ``x`` is a tensor or a tuple of tensors
  and ``grad`` has the same structure;
* ``criterion(x, value, grad) -> float``: the caller's stopping measure at the
  evaluated point (for OT, the L1 marginal error of the plan recovered from
  ``x``, which is the L1 norm of the gradient); the loop stops as soon as it
  is ``<= tol``.

and gets back the best point found, its value and gradient, the number of
evaluations, a :class:`~certopt.core.result.Status` and a history.  The
returned point is always one where ``value_and_grad`` was evaluated, so the
caller's certificate (dual value, plan) is exact for it.

Methods
-------
``"fista"``
    FISTA (Beck & Teboulle 2009) for maximisation: from the extrapolated
    point ``y`` the gradient step ``x+ = y + grad(y) / L`` is accepted when
    the quadratic lower model holds at it,
    ``f(x+) >= f(y) + <g, x+ - y> - L/2 |x+ - y|^2 = f(y) + |g|^2 / (2L)``
    (up to a few ulps of ``f``); otherwise ``L`` doubles and the step is
    retried from the same ``y`` with the momentum kept (one extra
    evaluation per failed test).  ``L`` halves after each success until the
    first failure (the caller's ``lipschitz`` may be far too large), then
    shrinks by ``LIPSCHITZ_DECREASE`` after every ``LIPSCHITZ_PATIENCE``
    consecutive successes; the momentum sequence
    ``t+ (t+ - 1) = (L+ / L) t^2`` (Scheinberg, Goldfarb & Bai 2014) keeps
    the ``O(L_f / k^2)`` guarantee while ``L`` moves.  Function restart
    (O'Donoghue & Candes 2015): an ``x+`` below the current iterate is
    rejected and the momentum reset, so the iterates ``x`` (the points
    recorded in the history and returned) increase monotonically.  Two
    evaluations per iteration (``x+`` and the next ``y``; one when the
    momentum is zero, as after a restart).
``"lbfgs"``
    Limited-memory BFGS on ``-f`` (two-loop recursion, ``memory`` pairs)
    with an Armijo backtracking line search; curvature pairs with
    ``<s, y> <= 0`` are skipped.  Usually far fewer evaluations on the
    ill-conditioned OT duals.

Everything stays in torch on the device of ``x0``; the only host
synchronisations are the scalars the line search and the criterion need.
"""

from __future__ import annotations

import bisect
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Union

import torch

from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.core.lbfgs import LBFGSMemory
from certopt.core.progress import progress
from certopt.core.result import Status

Variable = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # noqa: UP007 (runtime alias, py3.10)
ValueAndGrad = Callable[[Variable], tuple[float, Variable]]
Criterion = Callable[[Variable, float, Variable], float]
Method = Literal["fista", "lbfgs"]
METHODS: tuple[str, ...] = ("fista", "lbfgs")
STALL_WINDOW = 200
STALL_RTOL = 1e-14
MAX_BACKTRACKS = 40
LIPSCHITZ_INCREASE = 2.0
LIPSCHITZ_DECREASE = 0.9
LIPSCHITZ_PATIENCE = 20
ROUNDOFF_SLACK = 8.0


@dataclass(frozen=True)
class AscentResult:
    """Outcome of :func:`maximize`.

    ``x`` is the returned point (same structure as ``x0``), ``value`` and
    ``grad`` the objective and gradient there, ``criterion`` the caller's
    stopping measure there, ``n_iter`` the number of ``value_and_grad``
    evaluations, ``history`` the traces ``value``, ``criterion``
    and ``evaluations`` (count so far) at accepted points, ``seconds`` the wall time.
    """

    x: Variable
    value: float
    grad: Variable
    criterion: float
    status: Status
    n_iter: int
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


class _Flat:
    """Pack a tensor or tuple of tensors into one flat vector and back."""

    def __init__(self, x0: Variable):
        self.is_tuple = isinstance(x0, (tuple, list))
        parts = tuple(x0) if self.is_tuple else (x0,)
        self.shapes = [p.shape for p in parts]
        self.sizes = [p.numel() for p in parts]

    def flatten(self, x: Variable) -> torch.Tensor:
        parts = tuple(x) if self.is_tuple else (x,)
        return torch.cat([p.reshape(-1) for p in parts])

    def unflatten(self, v: torch.Tensor) -> Variable:
        parts = tuple(p.reshape(s) for p, s in zip(torch.split(v, self.sizes), self.shapes))
        return parts if self.is_tuple else parts[0]


class _Objective:
    """Counts evaluations and records the history of accepted (monotone) points."""

    def __init__(self, value_and_grad: ValueAndGrad, criterion: Criterion, flat: _Flat):
        self.value_and_grad = value_and_grad
        self.criterion = criterion
        self.flat = flat
        self.count = 0
        self.history: dict[str, list[float]] = {"value": [], "criterion": [], "evaluations": []}

    def __call__(self, v: torch.Tensor) -> tuple[float, torch.Tensor]:
        self.count += 1
        value, grad = self.value_and_grad(self.flat.unflatten(v))
        return float(value), self.flat.flatten(grad)

    def measure(self, v: torch.Tensor, value: float, grad: torch.Tensor) -> float:
        crit = float(self.criterion(self.flat.unflatten(v), value, self.flat.unflatten(grad)))
        self.history["value"].append(value)
        self.history["criterion"].append(crit)
        self.history["evaluations"].append(self.count)
        return crit

    def stalled(self) -> bool:
        """In the last ``STALL_WINDOW`` evaluations the value rose by less than
        ``STALL_RTOL`` (relative) and the criterion did not improve."""
        values, counts = self.history["value"], self.history["evaluations"]
        if self.count <= STALL_WINDOW:
            return False
        earlier = bisect.bisect_right(counts, self.count - STALL_WINDOW) - 1
        if earlier < 0:
            return False
        criteria = self.history["criterion"]
        no_rise = values[-1] - values[earlier] <= STALL_RTOL * max(abs(values[-1]), 1e-300)
        return no_rise and min(criteria[earlier + 1:]) >= min(criteria[:earlier + 1])


def maximize(
    value_and_grad: ValueAndGrad,
    x0: Variable,
    criterion: Criterion,
    *,
    tol: float,
    max_iter: int,
    method: Method = "lbfgs",
    lipschitz: float = 1.0,
    memory: int = 10,
    max_step: float = math.inf,
    verbose: bool = False,
    desc: str = "dual ascent",
) -> AscentResult:
    """Maximise a smooth concave function from ``x0`` until ``criterion <= tol``.

    Parameters
    ----------
    value_and_grad:
        ``x -> (f(x), grad f(x))`` with ``x`` shaped like ``x0``.
    x0:
        Starting point, a tensor or a tuple of tensors (not modified).
    criterion:
        ``(x, f(x), grad f(x)) -> float``; stop when it is ``<= tol``.
    tol:
        Tolerance on ``criterion``, in the caller's units.
    max_iter:
        Maximum number of ``value_and_grad`` evaluations.
    method:
        ``"lbfgs"`` (default) or ``"fista"``; see the module docstring.
    lipschitz:
        Initial estimate of the gradient's Lipschitz constant (``"fista"``:
        the first step is ``1/lipschitz``; ``"lbfgs"``: scales the first step).
    max_step:
        ``"lbfgs"``: largest max-norm of a step (the direction is scaled down to
        it).  Flat pieces of a piecewise quadratic dual give curvature pairs
        with ``<s, y>`` near 0 and steps of 1e15 whose values are round-off;
        the OT solvers pass a few times the range of their potentials.
    memory:
        Number of L-BFGS curvature pairs.
    verbose:
        Show a progress bar with the value and the criterion.

    Returns
    -------
    AscentResult
        ``status`` is ``OPTIMAL`` when the criterion met ``tol``; otherwise,
        with a :class:`~certopt.core.errors.ConvergenceWarning`, ``MAX_ITER``
        when the budget ran out, ``INACCURATE`` when the ascent stalled (in
        the last ``STALL_WINDOW`` evaluations the value rose by less than
        ``STALL_RTOL`` relative and the criterion did not improve, or no
        ascent step was found: typical at a kink of a
        non-smooth dual), ``NUMERICAL`` if the objective became non-finite.
        The point returned is then the best iterate (an evaluated point).
    """
    if method not in METHODS:
        raise InputValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not (lipschitz > 0 and math.isfinite(lipschitz)):
        raise InputValueError(f"lipschitz: expected a positive finite number, got {lipschitz!r}")
    start = time.perf_counter()
    flat = _Flat(x0)
    objective = _Objective(value_and_grad, criterion, flat)
    loop = _fista if method == "fista" else _lbfgs
    with progress(max_iter, verbose, desc=f"{desc} ({method})") as bar:
        v, value, grad, crit, status = loop(
            objective, flat.flatten(x0).clone(), tol=tol, max_iter=max_iter,
            lipschitz=lipschitz, memory=memory, bar=bar, max_step=max_step,
        )
    if status is Status.MAX_ITER:
        warnings.warn(
            f"{desc}: stopped after {objective.count} evaluations with criterion "
            f"{crit:.3g} > tol {tol:.3g}; increase max_iter", ConvergenceWarning, stacklevel=2,
        )
    elif status is Status.INACCURATE:
        warnings.warn(
            f"{desc}: the objective stopped increasing (relative rise < {STALL_RTOL:g} and no "
            f"better criterion in {STALL_WINDOW} evaluations) with criterion {crit:.3g} > "
            f"tol {tol:.3g}; the dual is not differentiable there or tol is below round-off",
            ConvergenceWarning,
            stacklevel=2,
        )
    elif status is Status.NUMERICAL:
        warnings.warn(f"{desc}: the objective became non-finite; returning the best point",
                      ConvergenceWarning, stacklevel=2)
    return AscentResult(
        x=flat.unflatten(v), value=value, grad=flat.unflatten(grad), criterion=crit,
        status=status, n_iter=objective.count, history=objective.history,
        seconds=time.perf_counter() - start,
    )


LoopOutput = tuple[torch.Tensor, float, torch.Tensor, float, Status]


def _fista(objective: _Objective, x: torch.Tensor, *, tol: float, max_iter: int,
           lipschitz: float, memory: int, bar, max_step: float) -> LoopOutput:
    """FISTA ascent with Beck-Teboulle backtracking, slow ``L`` decrease and restarts.

    ``x`` is the current iterate (evaluated, the best point so far), ``y`` the
    extrapolated point whose gradient drives the step.  The momentum sequence
    follows Scheinberg, Goldfarb & Bai (2014): ``t+ (t+ - 1) = (L+/L) t^2``,
    so lowering ``L`` keeps the ``O(L_f/k^2)`` guarantee.
    """
    del memory, max_step
    L = lipschitz
    f_x, g_x = objective(x)
    if not math.isfinite(f_x):
        return x, f_x, g_x, math.inf, Status.NUMERICAL
    crit = objective.measure(x, f_x, g_x)
    slack = ROUNDOFF_SLACK * torch.finfo(x.dtype).eps
    x_prev, t = x, 1.0
    y, f_y, g_y = x, f_x, g_x
    successes, overestimated = 0, True
    while crit > tol:
        backtracks = 0
        while True:                      # backtracking on the plain gradient step from y
            if objective.count >= max_iter:
                return x, f_x, g_x, crit, Status.MAX_ITER
            x_new = y + g_y / L
            f_new, g_new = objective(x_new)
            bar.update(value=f_new, L=L)
            rise = 0.5 * float(g_y @ g_y) / L    # f(y) + <g, d> - L/2 |d|^2 - f(y), d = g/L
            model_holds = f_new - f_y >= rise - slack * max(abs(f_y), abs(f_new))
            if math.isfinite(f_new) and model_holds and (y is not x or f_new >= f_x):
                break
            L *= LIPSCHITZ_INCREASE
            successes, overestimated = 0, False
            backtracks += 1
            if backtracks >= MAX_BACKTRACKS:     # no ascent step from y: a kink or round-off
                if y is x:
                    return x, f_x, g_x, crit, Status.INACCURATE
                y, f_y, g_y, t, backtracks = x, f_x, g_x, 1.0, 0
        if f_new < f_x:          # function restart: reject x_new, drop the momentum
            y, f_y, g_y, x_prev, t = x, f_x, g_x, x, 1.0
            continue
        x_prev, x, f_x, g_x = x, x_new, f_new, g_new
        crit = objective.measure(x, f_x, g_x)
        if crit <= tol:
            break
        if objective.stalled():
            return x, f_x, g_x, crit, Status.INACCURATE
        successes += 1
        L_next = L
        if overestimated:          # until the first failed test: halve L
            L_next = L / LIPSCHITZ_INCREASE
        elif successes >= LIPSCHITZ_PATIENCE:   # then try a smaller L now and then
            L_next, successes = L * LIPSCHITZ_DECREASE, 0
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * (L_next / L) * t * t))
        beta = (t - 1.0) / t_next
        t, L = t_next, L_next
        if beta == 0.0:
            y, f_y, g_y = x, f_x, g_x
            continue
        if objective.count >= max_iter:
            return x, f_x, g_x, crit, Status.MAX_ITER
        y = x + beta * (x - x_prev)
        f_y, g_y = objective(y)
        bar.update(value=f_y, L=L)
        if not math.isfinite(f_y):          # extrapolated too far: restart from x
            y, f_y, g_y, t = x, f_x, g_x, 1.0
    return x, f_x, g_x, crit, Status.OPTIMAL


def _lbfgs(objective: _Objective, x: torch.Tensor, *, tol: float, max_iter: int,
           lipschitz: float, memory: int, bar, max_step: float) -> LoopOutput:
    """L-BFGS ascent (descent on ``-f``) with Armijo backtracking."""
    f, g = objective(x)
    if not math.isfinite(f):
        return x, f, g, math.inf, Status.NUMERICAL
    crit = objective.measure(x, f, g)
    pairs = LBFGSMemory(memory)       # curvature pairs of -f
    armijo = 1e-4
    while crit > tol:
        if objective.count >= max_iter:
            return x, f, g, crit, Status.MAX_ITER
        direction = pairs.apply(g, first_scale=1.0 / lipschitz)
        slope = float(g @ direction)
        if slope <= 0.0:       # not an ascent direction: fall back to the gradient
            pairs.clear()
            direction = g / lipschitz
            slope = float(g @ direction)
        longest = float(direction.abs().max())
        if longest > max_step:
            direction = direction * (max_step / longest)
            slope *= max_step / longest
        step = 1.0
        for _ in range(MAX_BACKTRACKS):
            x_new = x + step * direction
            f_new, g_new = objective(x_new)
            bar.update(value=f_new, criterion=crit)
            if math.isfinite(f_new) and f_new >= f + armijo * step * slope:
                break
            if objective.count >= max_iter:
                return x, f, g, crit, Status.MAX_ITER
            step *= 0.25 if not math.isfinite(f_new) else 0.5
        else:                  # no ascent along this direction: a kink or round-off
            if not pairs:
                return x, f, g, crit, Status.INACCURATE
            pairs.clear()
            continue
        pairs.push(x_new - x, g - g_new)       # curvature of -f
        x, f, g = x_new, f_new, g_new
        crit = objective.measure(x, f, g)
        if crit > tol and objective.stalled():
            return x, f, g, crit, Status.INACCURATE
    return x, f, g, crit, Status.OPTIMAL
