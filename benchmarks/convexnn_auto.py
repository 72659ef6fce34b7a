"""Where ``solver="auto"`` switches: the ADMM vs cvxpy + Clarabel over n and P d.

Synthetic data (a 5-neuron ReLU teacher plus noise, Gaussian inputs, d features
plus the bias), lam = 1e-2, P sampled patterns, squared and hinge loss.  Both
solvers run at the same ``tol`` (a certified relative gap, the test of every
solver); printed per case: CPU seconds (``time.process_time``, one thread),
status and certified relative gap of each, the ratio ADMM / Clarabel, and the
choice of ``solver="auto"``.  Readings: benchmarks/RESULTS.md.

    python benchmarks/convexnn_auto.py --quick
    python benchmarks/convexnn_auto.py
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from certopt.convexnn.admm import solve_admm
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.convexnn.solvers import choose_solver
from certopt.core.errors import ConvergenceWarning

LAM = 1e-2
QUICK_CASES = [(50, 4, 10), (200, 4, 40)]
"""(n, d, P): d features before the bias column."""
CASES = ([(n, 4, P) for n in (50, 200, 600) for P in (10, 40, 120)]
         + [(n, 19, P) for n in (50, 200) for P in (40, 120)])


def make_problem(loss: str, n: int, d: int, P: int) -> ConvexReLUProblem:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    y = np.maximum(X @ rng.standard_normal((d, 5)), 0.0) @ rng.standard_normal(5) / np.sqrt(d)
    y += 0.1 * rng.standard_normal(n)
    if loss != "squared":
        y = np.where(y > np.median(y), 1.0, -1.0)
    return ConvexReLUProblem.from_data(X, y, lam=LAM, loss=loss, n_patterns=P, random_state=0)


def timed(solver, problem: ConvexReLUProblem, options: SolverOptions):
    """(CPU seconds, result)."""
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = solver(problem, options)
    return time.process_time() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four small cases")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--loss", nargs="+", default=["squared", "hinge"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, as every benchmark here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = SolverOptions(tol=args.tol, max_iter=20_000)
    print(f"{'loss':<8} {'n':>4} {'d':>3} {'P':>4} {'P d':>5} {'P n d':>7} | {'ADMM s':>7} "
          f"{'status':<9} {'gap':>8} | {'Clarabel s':>10} {'status':<10} {'gap':>8} | "
          f"{'ratio':>6} auto")
    for loss in args.loss:
        for n, d, P in QUICK_CASES if args.quick else CASES:
            problem = make_problem(loss, n, d, P)
            rows = [timed(solve_admm, problem, options), timed(solve_cvxpy, problem, options)]
            cells = [f"{sec:>7.2f} {str(res.status):<9} {res.gap / abs(res.bound):>8.1e}"
                     for sec, res in rows]
            P, d = problem.n_patterns, problem.n_features
            print(f"{loss:<8} {n:>4} {d:>3} {P:>4} {P * d:>5} {P * n * d:>7} | {cells[0]} |"
                  f"    {cells[1]} | {rows[0][0] / rows[1][0]:>6.2f} "
                  f"{choose_solver(problem, options)}", flush=True)


if __name__ == "__main__":
    main()
