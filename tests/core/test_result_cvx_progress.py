import math
import warnings

import cvxpy as cp
import numpy as np
import pytest

from certopt.core import ConvergenceWarning, InputValueError, SolverResult, Status, duality_gap
from certopt.core.cvx import choose_solver, map_status, solve
from certopt.core.progress import progress


def test_status_converged_only_for_optimal():
    assert Status.OPTIMAL.converged
    assert not any(s.converged for s in Status if s is not Status.OPTIMAL)
    assert str(Status.MAX_ITER) == "max_iter"


def test_result_is_frozen_and_summarises_its_certificate():
    res = SolverResult(objective=2.0, bound=1.5, gap=0.5, status=Status.OPTIMAL,
                       residuals={"marginal": 1e-9}, n_iter=3, solve_time=0.1)
    with pytest.raises(AttributeError):
        res.objective = 3.0  # type: ignore[misc]
    cert = res.certificate()
    assert cert["gap"] == 0.5 and cert["residual.marginal"] == 1e-9
    assert cert["status"] is Status.OPTIMAL
    assert "gap" in res.summary() and "optimal" in res.summary()
    assert res.relative_gap == 0.25
    assert res.converged


def test_duality_gap():
    assert duality_gap(3.0, 1.0) == 2.0
    assert math.isnan(duality_gap(3.0, float("nan")))


def test_choose_solver_prefers_clarabel_and_validates():
    installed = set(cp.installed_solvers())
    expected = "MOSEK" if "MOSEK" in installed else "CLARABEL"
    assert choose_solver("sdp") == expected
    assert choose_solver("socp", "scs") == "SCS"
    with pytest.raises(InputValueError, match="cannot solve semidefinite"):
        choose_solver("sdp", "ECOS")
    with pytest.raises(InputValueError, match="not installed"):
        choose_solver("lp", "NOT_A_SOLVER")
    with pytest.raises(InputValueError, match="cone"):
        choose_solver("nlp")  # type: ignore[arg-type]


def test_solve_maps_status_and_value_against_closed_form():
    x = cp.Variable(2)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - np.array([1.0, 2.0]))), [x >= 1.5])
    status, elapsed = solve(prob, "qp")
    assert status is Status.OPTIMAL and elapsed >= 0
    assert prob.value == pytest.approx(0.25, abs=1e-7)

    infeasible = cp.Problem(cp.Minimize(cp.sum(x)), [x >= 1, x <= 0])
    assert solve(infeasible, "lp")[0] is Status.INFEASIBLE
    assert map_status("something else") is Status.NUMERICAL


def test_solve_reports_iteration_limit_as_status_not_exception():
    X = cp.Variable((3, 3), PSD=True)
    prob = cp.Problem(cp.Minimize(cp.trace(X @ np.diag([1.0, 2.0, 3.0]))), [cp.trace(X) == 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        status, _ = solve(prob, "sdp", "SCS", max_iters=2)
    assert status in (Status.MAX_ITER, Status.INACCURATE, Status.NUMERICAL)


def test_progress_silent_and_verbose(capsys):
    with progress(5, verbose=False) as bar:
        for _ in range(5):
            bar.update(gap=0.1)
        bar.log("hidden")
    assert capsys.readouterr().err == ""
    with progress(5, verbose=True, desc="demo", refresh_every=1) as bar:
        for _ in range(5):
            bar.update(gap=0.1)
        bar.log("shown")
    err = capsys.readouterr().err
    assert "demo" in err and "shown" in err
