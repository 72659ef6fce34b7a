"""LipSDP over a program as a cvxpy model (interior-point or SCS).

    minimise  Σ_i γ_i      (ℓ2: γ = ρ·1, so this is n_0·ρ)
    s.t.      M(γ, multipliers) ⪰ 0,   multipliers admissible (e.g. T ≥ 0),

with ``M`` from :func:`certopt.sdp.lmi.lmi_blocks` (section 8 of the math
note).  ℓ2 gives ``L_2(f) <= √ρ``, ℓ∞ gives ``L_{∞→2}(f) <= √(Σγ)``
(section 5).  The output is divided by ``output_scale`` (e.g. the naive
bound) so that ``ρ`` is of order one, then the solution is scaled back.
The answer still has to pass :func:`certopt.sdp.verify.verify`.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from certopt.core import cvx
from certopt.sdp.lmi import assemble_cvxpy, lmi_blocks
from certopt.sdp.program import Program
from certopt.sdp.result import SDPSolution


def build_problem(program: Program, norm: str, output_scale: float = 1.0
                  ) -> tuple[cp.Problem, cp.Expression, list[dict[str, cp.Expression]]]:
    """The cvxpy problem, its input weight ``γ`` and the stage multiplier variables."""
    n0 = program.input_dim
    if norm == "2":
        rho = cp.Variable(name="rho", nonneg=True)
        input_weight = rho * np.ones(n0)
        objective = rho
    else:
        input_weight = cp.Variable(n0, name="gamma", nonneg=True)
        objective = cp.sum(input_weight)
    multipliers, constraints = [], []
    for index, stage in enumerate(program.stages):
        variables, extra = stage.qc.cvx_multipliers(f"stage{index + 1}")
        multipliers.append(variables)
        constraints += extra
    matrix = assemble_cvxpy(program, lmi_blocks(program, input_weight, multipliers,
                                                output_scale=output_scale))
    constraints.append(matrix >> 0)
    return cp.Problem(cp.Minimize(objective), constraints), input_weight, multipliers


CLARABEL_MAX_STATE = 100
"""Default solver: Clarabel up to this LMI order, SCS above (Clarabel's dense
PSD scaling costs O(N⁶) per iteration and its memory O(N⁴); SCS needs many more
iterations on trained nets; readings in benchmarks/RESULTS.md)."""


def default_solver(program: Program) -> str:
    """MOSEK if installed, else Clarabel for small LMIs and SCS for larger ones."""
    if "MOSEK" in cp.installed_solvers():
        return "MOSEK"
    return "CLARABEL" if program.state_dim <= CLARABEL_MAX_STATE else "SCS"


def solve_lipsdp(program: Program, norm: str, solver: str | None = None, *,
                 output_scale: float = 1.0, verbose: bool = False,
                 **solver_options: object) -> SDPSolution:
    """Solve the LipSDP of ``program`` with a cvxpy SDP solver (default: :func:`default_solver`)."""
    solver = default_solver(program) if solver is None else solver
    problem, input_weight, multipliers = build_problem(program, norm, output_scale)
    status, seconds = cvx.solve(problem, "sdp", solver, verbose=verbose, **solver_options)
    scale = output_scale ** 2
    values = input_weight.value
    weight = (np.full(program.input_dim, np.nan) if values is None
              else scale * np.asarray(values, dtype=np.float64).reshape(-1))
    stage_values = tuple(
        {name: (np.full(v.shape, np.nan) if v.value is None
                else scale * np.asarray(v.value, dtype=np.float64))
         for name, v in variables.items()}
        for variables in multipliers
    )
    n_iter = int(problem.solver_stats.num_iters or 0) if problem.solver_stats else 0
    return SDPSolution(weight, stage_values, status, seconds, n_iter)
