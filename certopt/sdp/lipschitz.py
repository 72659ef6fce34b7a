"""``lipschitz_bound``: a certified Lipschitz constant of a torch network.

Pipeline: compile the network to a straight-line program
(:mod:`certopt.sdp.compiler`), solve the LipSDP of the program with the
chosen method, verify the answer in float64 (:mod:`certopt.sdp.verify`) and
report it next to the naive bound and an attack lower bound
(:mod:`certopt.sdp.baselines`).

Methods are dispatched through :data:`METHODS` (name -> function
``(program, norm, solver, output_scale, verbose, **options) -> SDPSolution``):
``"lipsdp"`` is the cvxpy SDP of :mod:`certopt.sdp.reference`;
``"first-order"`` the GPU-ready solver of :mod:`certopt.sdp.first_order`
(``solve_first_order(program, norm, ...)``), warm-started from ``"fast"``, the
compositional closed-form bound of :mod:`certopt.sdp.fast`; ``"auto"`` (the
default) picks ``"lipsdp"`` (interior point) when the LMI has at most
:data:`AUTO_STATE_DIM` rows, a ``solver`` is named or a quadratic constraint
declares no sector (the first-order solver needs one), else ``"first-order"``;
with ``rtol`` it first tries ``"fast"`` and returns it when it is already within
``rtol`` of the attack's lower bound.  ``"naive"`` skips the SDP.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import cvxpy as cp
import numpy as np
from torch import nn

from certopt.core.arrays import check_scalar
from certopt.core.errors import ConvergenceWarning, InputTypeError, InputValueError
from certopt.core.result import Status
from certopt.sdp.baselines import attack_lower_bound, naive_bound
from certopt.sdp.compiler import check_visible, compile_network
from certopt.sdp.fast import solve_fast
from certopt.sdp.program import Program
from certopt.sdp.reference import solve_lipsdp
from certopt.sdp.result import LipschitzResult, SDPSolution
from certopt.sdp.rules import groupsort_candidates, groupsort_encoding
from certopt.sdp.verify import bound_from_weight, check_against_attack
from certopt.sdp.verify import verify as verify_certificate

AUTO_STATE_DIM = 50
"""``method="auto"`` solves LMIs up to this order with Clarabel (interior point; its cost
grows like the sixth power of the order, see benchmarks/RESULTS.md), larger ones with the
first-order solver."""
AUTO_MOSEK_STATE_DIM = 300
"""The same limit when MOSEK is installed."""

Method = Callable[..., SDPSolution]


def _first_order(program: Program, norm: str, solver: str | None = None, *,
                 output_scale: float = 1.0, **options: Any) -> SDPSolution:
    """``certopt.sdp.first_order.solve_first_order`` warm-started from :func:`solve_fast`,
    adapted to :class:`SDPSolution`."""
    from certopt.sdp.first_order import solve_first_order

    if solver is not None:
        raise InputValueError(f"solver: {solver!r} applies to method='lipsdp' only")
    if "start" not in options:
        fast = solve_fast(program, norm, output_scale=output_scale)
        if fast.status is Status.OPTIMAL:
            options["start"] = (fast.input_weight, fast.multipliers)
    raw = solve_first_order(program, 2 if norm == "2" else math.inf, **options)
    return SDPSolution(np.asarray(raw.gamma, dtype=np.float64),
                       tuple(dict(m) for m in raw.multipliers), raw.status, raw.solve_time,
                       raw.n_iter)


def _auto(program: Program, norm: str, solver: str | None = None, **options: Any
          ) -> SDPSolution:
    """Interior point (cvxpy) for small LMIs or a named ``solver``, else first-order."""
    first_order_ready = all(stage.qc.sector() is not None for stage in program.stages)
    limit = AUTO_MOSEK_STATE_DIM if "MOSEK" in cp.installed_solvers() else AUTO_STATE_DIM
    small = program.state_dim <= limit
    if solver is not None or small or not first_order_ready:
        return solve_lipsdp(program, norm, solver, **options)
    return _first_order(program, norm, solver, **options)


METHODS: dict[str, Method | None] = {
    "lipsdp": solve_lipsdp,
    "fast": solve_fast,
    "first-order": _first_order,
    "auto": _auto,
    "naive": None,
}


def _check_norm(norm: object) -> str:
    text = str(norm).lower().replace("∞", "inf")
    if isinstance(norm, bool) or text not in ("2", "2.0", "inf", "infinity"):
        raise InputValueError(f"norm: expected 2 or 'inf', got {norm!r}")
    return "2" if text.startswith("2") else "inf"


def lipschitz_bound(
    net: nn.Module,
    norm: int | float | str = 2,
    method: str = "auto",
    solver: str | None = None,
    input_shape: Sequence[int] | None = None,
    verify: bool = True,
    *,
    rtol: float | None = None,
    attack: bool = True,
    random_state: int = 0,
    verbose: bool = False,
    groupsort: str = "both",
    **options: Any,
) -> LipschitzResult:
    """A certified upper bound on the Lipschitz constant of ``net``.

    ``norm=2``: ``L = sup ‖f(x)−f(y)‖₂ / ‖x−y‖₂``, bounded by ``√ρ`` of

        min ρ  s.t.  ρ E_xᵀE_x − A_outᵀA_out − Σ_s QC_s(T_s) ⪰ 0,  T_s ≥ 0;

    ``norm="inf"``: ``L = sup ‖f(x)−f(y)‖₂ / ‖x−y‖_∞``, bounded by ``√(Σγ)``
    with ``diag(γ)`` in place of ``ρ I`` (math note, sections 1, 5, 8).

    Parameters
    ----------
    net:
        A torch module built from supported layers (see
        :func:`certopt.sdp.compiler.supported_layers`); it is not modified.
    method:
        ``"auto"`` (default: interior point for small LMIs, first-order above; the
        bound is within 1e-3 relative of the LipSDP optimum), ``"lipsdp"`` (cvxpy
        SDP), ``"first-order"``, ``"fast"`` (closed form, :mod:`certopt.sdp.fast`)
        or ``"naive"``.
    solver:
        cvxpy solver name for ``"lipsdp"`` (``None``: MOSEK, Clarabel, SCS,
        the first installed).
    input_shape:
        Input shape without the batch axis (default: from the first
        ``nn.Linear``; required for ``nn.Conv2d``).
    verify:
        Verify in float64 (section 6).  With ``verify=False`` the bound is
        the solver's ``√ρ`` (``√(Σγ)``) and ``verified`` is False.
    rtol:
        ``method="auto"`` only: first compute the ``"fast"`` bound and return it
        (``method="auto"``, ``n_iter=0``) when it is at most ``(1 + rtol)``
        times the attack's lower bound, so that no SDP could improve it by more
        than ``rtol`` (relative).  ``None`` (default): always solve the SDP.
    attack, random_state:
        Compute the attack lower bound (seeded) or leave ``lower = nan``.
    groupsort:
        How ``GroupSort(g > 2)`` layers are compiled: ``"network"`` (sorting
        network of MaxMin stages), ``"qc"`` (group quadratic constraints) or
        ``"both"`` (certify each, return the smaller verified bound).
    options:
        Passed to the method (e.g. cvxpy solver options, ``device=``).

    Returns
    -------
    LipschitzResult
        ``bound`` (certified), ``naive``, ``lower``, ``status``,
        ``solve_time``, ``multipliers``, ``verified``.  ``bound`` is the
        smaller of the verified SDP bound and ``naive`` (both sound).  If
        verification fails the bound falls back to ``naive`` with a
        :class:`ConvergenceWarning` and ``verified=False``.

    Raises
    ------
    InputTypeError
        ``net`` is not an ``nn.Module`` or has computations the compiler
        cannot see (hooks, overridden ``forward``; see
        :func:`certopt.sdp.compiler.check_visible`).
    UnsoundBoundError
        A verified bound is below the attack's observed ratio (beyond float64
        round-off): a bug, never returned as a result.
    """
    check_visible(net)
    norm_name = _check_norm(norm)
    if not isinstance(method, str) or method not in METHODS:
        raise InputValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    if not isinstance(verify, bool):
        raise InputTypeError(f"verify: expected a bool, got {type(verify).__name__}")
    random_state = check_scalar(random_state, "random_state", low=0, integer=True)
    if rtol is not None:
        rtol = check_scalar(rtol, "rtol", low=0)
    if groupsort == "both":
        encodings = groupsort_candidates(net, method)
        if len(encodings) > 1:
            results = [lipschitz_bound(net, norm, method, solver, input_shape, verify,
                                       rtol=rtol, attack=attack and k == 0,
                                       random_state=random_state, verbose=verbose,
                                       groupsort=e, **options)
                       for k, e in enumerate(encodings)]
            best = min(results, key=lambda r: (not r.verified, r.bound))
            if best.verified:
                check_against_attack(best.bound, results[0].lower, f"method={method!r}")
            return dataclasses.replace(best, lower=results[0].lower,
                                       naive=min(r.naive for r in results),
                                       gap=best.bound - results[0].lower)
        groupsort = encodings[0]
    with groupsort_encoding(groupsort):
        program = compile_network(net, input_shape)
    naive = naive_bound(program, norm_name)
    lower = (attack_lower_bound(net, program.input_shape, norm_name, random_state=random_state)
             if attack else math.nan)
    common = dict(norm=norm_name, method=method, naive=naive, lower=lower, program=program)

    solve = METHODS[method]
    if solve is None or naive == 0.0:
        check_against_attack(naive, lower, "the naive bound")
        return LipschitzResult(objective=naive, bound=naive, gap=naive - lower,
                               status=Status.OPTIMAL, solver_bound=math.nan, verified=True,
                               **common)
    certified = None
    has_sectors = all(stage.qc.sector() is not None for stage in program.stages)
    if method == "auto" and rtol is not None and math.isfinite(lower) and has_sectors:
        fast = _certify(program, norm_name, "fast", None, naive, verify, verbose, {})
        if fast["verified"] and fast["bound"] <= (1.0 + rtol) * lower:
            certified = fast
    if certified is None:
        certified = _certify(program, norm_name, method, solver, naive, verify, verbose,
                             options)
    if certified["verified"]:
        check_against_attack(certified["bound"], lower, f"method={method!r}")
    return LipschitzResult(objective=certified["bound"], gap=certified["bound"] - lower,
                           **certified, **common)


def _certify(program: Program, norm: str, method: str, solver: str | None, naive: float,
             verify: bool, verbose: bool, options: dict[str, Any]) -> dict[str, Any]:
    """Solve with ``method``, verify in float64 and cap at ``naive``: the result's fields."""
    start = time.perf_counter()
    solution = METHODS[method](program, norm, solver, output_scale=naive, verbose=verbose,
                               **options)
    solver_bound = bound_from_weight(solution.input_weight, norm)
    if verify:
        check = verify_certificate(program, solution.input_weight, solution.multipliers, norm)
        verified, bound = check.verified, check.bound
        weight, multipliers, shift = check.input_weight, check.multipliers, check.cholesky_shift
        if not verified:
            warnings.warn(
                f"the {method} solution (status {solution.status}) failed the float64 "
                "verification; reporting the naive bound", ConvergenceWarning, stacklevel=3)
            bound = naive
    else:
        verified, bound = False, solver_bound
        weight, multipliers, shift = solution.input_weight, solution.multipliers, math.nan
    if verified and bound > naive:
        bound = naive  # the naive bound is sound too; keep the certificate for reference
    residuals = {"lmi_cholesky_shift": shift,
                 "verification_increase": bound / solver_bound - 1 if solver_bound else math.nan}
    return dict(bound=bound, status=solution.status, residuals=residuals,
                n_iter=solution.n_iter, solve_time=time.perf_counter() - start,
                solver_bound=solver_bound, verified=verified, input_weight=weight,
                multipliers=multipliers)

