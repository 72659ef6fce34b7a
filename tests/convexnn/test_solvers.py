"""``solver="auto"``, the shared stopping test, and the defaults users meet first."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from certopt.cli import main
from certopt.convexnn import ConvexReLURegressor, solvers
from certopt.convexnn._cli import demo
from certopt.convexnn.admm import solve_admm
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.core.errors import ConvergenceWarning
from certopt.core.result import Status

README = Path(__file__).resolve().parents[2] / "README.md"


def _regression(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.maximum(X @ rng.standard_normal(d), 0.0) + 0.1 * rng.standard_normal(n)


def test_auto_picks_the_interior_point_below_the_crossover_and_the_admm_above():
    options = SolverOptions(tol=1e-4)
    small = ConvexReLUProblem.from_data(*_regression(50, 4), n_patterns=40, random_state=0)
    assert small.n_samples * small.n_patterns * small.n_features <= 50_000
    assert solvers.choose_solver(small, options) == "cvxpy"
    large = ConvexReLUProblem.from_data(*_regression(600, 4), n_patterns=40, random_state=0)
    assert large.n_samples * large.n_patterns * large.n_features > 50_000
    assert solvers.choose_solver(large, options) == "admm"
    X, y = _regression(600, 4)
    hinge = ConvexReLUProblem.from_data(X, np.where(y > 0.5, 1.0, -1.0), loss="hinge",
                                        n_patterns=40, random_state=0)
    assert solvers.choose_solver(hinge, options) == "cvxpy"  # the ADMM is slow on the hinge
    many = ConvexReLUProblem.from_data(*_regression(2000, 4), n_patterns=20, random_state=0)
    assert solvers.choose_solver(many, SolverOptions(tol=2e-2)) == "sampled"
    assert solvers.choose_solver(many, options) == "admm"


def test_auto_runs_the_chosen_solver(monkeypatch):
    X, y = _regression(40, 2)
    est = ConvexReLURegressor(lam=1e-2, n_patterns=10, random_state=0).fit(X, y)
    assert est.certificate_.solver == "cvxpy"
    monkeypatch.setitem(solvers.IP_MAX_SIZE, "squared", 0)
    est = ConvexReLURegressor(lam=1e-2, n_patterns=10, random_state=0).fit(X, y)
    assert est.certificate_.solver == "admm"
    assert est.certificate_.status is Status.OPTIMAL


def _unstandardised(n=300, d=8, seed=0):
    """Features on scales 0.1 .. 10 (not standardised), a smooth target: data on which
    the ADMM at lam = 1e-3 ran 10 000 iterations without certifying 1e-4 (gap 1.4e-2)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.logspace(-1, 1, d)
    return X, np.tanh(X @ rng.standard_normal(d) / d) + 0.1 * rng.standard_normal(n)


def test_auto_falls_back_to_the_interior_point_when_the_admm_does_not_certify():
    problem = ConvexReLUProblem.from_data(*_unstandardised(), lam=1e-3, n_patterns=60,
                                          random_state=0)
    assert solvers.choose_solver(problem, SolverOptions(tol=1e-4)) == "admm"
    options = SolverOptions(tol=1e-4, max_iter=200)  # the ADMM stops far from tol
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # the ADMM's warning is dropped
        result = solvers.solve(problem, options)
    assert result.solver == "cvxpy" and result.status is Status.OPTIMAL
    assert result.residuals["first_solver_iterations"] == 200
    assert abs(result.gap) <= 1e-5 * abs(result.bound)  # Clarabel: about 1e-7
    reference = solve_cvxpy(problem, options)
    assert result.objective == pytest.approx(reference.objective, rel=1e-6)


def test_auto_keeps_the_admm_answer_and_its_warning_above_the_fallback_size(monkeypatch):
    problem = ConvexReLUProblem.from_data(*_unstandardised(), lam=1e-3, n_patterns=60,
                                          random_state=0)
    monkeypatch.setattr(solvers, "IP_FALLBACK_MAX_SIZE", 0)
    with pytest.warns(ConvergenceWarning, match="max_iter=200"):
        result = solvers.solve(problem, SolverOptions(tol=1e-4, max_iter=200))
    assert result.solver == "admm" and result.status is Status.MAX_ITER


@pytest.mark.parametrize("loss", ["squared", "hinge", "logistic"])
def test_admm_and_interior_point_agree_with_the_global_optimum_to_1e_6(loss):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 2))
    y = np.sin(2.0 * X[:, 0]) + X[:, 1]
    if loss != "squared":
        y = np.where(y > 0.3, 1.0, -1.0)
    problem = ConvexReLUProblem.from_data(X, y, lam=0.05, loss=loss, n_patterns="all")
    # measured certified gaps: ADMM 1e-8 to 7e-8 (it stops at 1e-7), Clarabel 4e-10 to 6e-8
    admm = solve_admm(problem, SolverOptions(tol=1e-7, max_iter=20_000))
    ip = solve_cvxpy(problem, SolverOptions(tol=1e-6))
    for result in (admm, ip):  # each certifies itself against the global optimum
        assert result.is_global and result.status is Status.OPTIMAL
        assert -1e-12 <= result.gap <= 1e-6 * result.bound
    assert admm.objective == pytest.approx(ip.objective, rel=1e-6)
    assert max(admm.bound, ip.bound) <= min(admm.objective, ip.objective)


def test_admm_stops_on_the_certified_gap_not_before():
    X, y = _regression(60, 3, seed=2)
    problem = ConvexReLUProblem.from_data(X, y, lam=1e-2, n_patterns=15, random_state=0)
    for tol in (1e-3, 1e-5):
        result = solve_admm(problem, SolverOptions(tol=tol))
        assert result.status is Status.OPTIMAL
        assert result.gap <= tol * abs(result.bound)
        # and from both sides: the network keeps its patterns to tol (so F is not below
        # the program's optimum by more than tol)
        assert abs(result.gap) <= tol * abs(result.bound)
        scale = float((torch.cat([result.v, result.w]) @ problem.X.T).abs().max())
        assert result.residuals["cone_violation"] <= tol * scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        capped = solve_admm(problem, SolverOptions(tol=1e-12, max_iter=100))
    assert capped.status is Status.MAX_ITER and capped.gap > 1e-12 * abs(capped.bound)


def _readme_block(heading):
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quickstart_ends_optimal_with_default_settings():
    namespace = {}
    exec(_readme_block("### `certopt.convexnn`"), namespace)  # noqa: S102 - our own README
    cert = namespace["cert"]
    assert cert.status is Status.OPTIMAL and cert.gap <= 1e-4 * abs(cert.lower_bound)


def test_demo_ends_optimal_with_a_certified_gap(capsys):
    demo(plot=False)
    out = capsys.readouterr().out
    assert "status optimal" in out and "global=True" in out
    gap = float(re.search(r"certified gap\s+(\S+)", out).group(1))
    bound = float(re.search(r"lower bound\s+(\S+)", out).group(1))
    assert gap <= 1e-4 * bound


def test_certopt_train_on_a_small_csv_ends_optimal(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = np.abs(X[:, 0]) - X[:, 1]
    path = tmp_path / "data.csv"
    np.savetxt(path, np.c_[X, y, y > 0], delimiter=",", header="a,b,c,y,label", comments="")
    for extra in ([], ["--classify"]):
        target = "label" if extra else "y"
        assert main(["train", str(path), "--target", target, *extra]) == 0
        out = capsys.readouterr().out
        assert re.search(r"status\s+optimal", out), out
