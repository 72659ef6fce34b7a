"""Sampled convex program (FISTA + support re-solve) vs ADMM vs cvxpy on growing n and P.

For each size: a synthetic regression problem (squared loss, lam = 1e-3,
Gaussian data in d = 10), the same P sampled patterns for every solver.
cvxpy (Clarabel) gives the reference optimum F* of the constrained program
(skipped above ``--cvxpy-max``); ADMM and the sampled solver run with the
same ``tol``.  Printed: wall time, F of the returned ReLU network, its
excess over F* (or over the ADMM's F without cvxpy), and time ratios
against cvxpy and against ADMM.

    python benchmarks/convexnn_sampled.py --quick
    python benchmarks/convexnn_sampled.py --device cuda
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from certopt.convexnn.admm import solve_admm
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.convexnn.sampled import solve_sampled

QUICK_SIZES = ((150, 15), (300, 30))
FULL_SIZES = ((500, 50), (1000, 50), (1000, 100), (2000, 100))


def timed(solver, problem, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        result = solver(problem, options)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small sizes (< 1 minute)")
    parser.add_argument("--device", default="cpu", help="torch device of ADMM and sampled")
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--max-iter", type=int, default=5000)
    parser.add_argument("--cvxpy-max", type=int, default=1000,
                        help="largest n for which cvxpy runs")
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    max_iter = min(args.max_iter, 2000) if args.quick else args.max_iter
    options = SolverOptions(max_iter=max_iter, tol=args.tol)
    rng = np.random.default_rng(0)
    print(f"device={args.device} tol={args.tol} max_iter={max_iter} (squared loss, d=10)")
    header = (f"{'n':>5} {'P':>4} | {'solver':<8} {'time s':>8} {'F':>10} {'excess':>9} "
              f"{'status':>9} | {'cvxpy/x':>7} {'admm/x':>7}")
    print(header)
    print("-" * len(header))
    for n, n_patterns in sizes:
        X = rng.normal(size=(n, 10))
        y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=n)
        problem = ConvexReLUProblem.from_data(X, y, lam=1e-3, loss="squared",
                                              n_patterns=n_patterns, random_state=0,
                                              device=args.device)
        runs = {}
        if n <= args.cvxpy_max:
            cpu_problem = ConvexReLUProblem.from_data(X, y, lam=1e-3, loss="squared",
                                                      n_patterns=n_patterns, random_state=0)
            runs["cvxpy"] = timed(solve_cvxpy, cpu_problem, options)
        runs["admm"] = timed(solve_admm, problem, options)
        runs["sampled"] = timed(solve_sampled, problem, options)
        best = runs["cvxpy"][0].objective if "cvxpy" in runs else runs["admm"][0].objective
        for name, (result, seconds) in runs.items():
            versus_cvxpy = runs["cvxpy"][1] / seconds if "cvxpy" in runs else float("nan")
            versus_admm = runs["admm"][1] / seconds
            print(f"{n:>5} {problem.n_patterns:>4} | {name:<8} {seconds:>8.2f} "
                  f"{result.objective:>10.5f} {result.objective / best - 1:>9.2e} "
                  f"{result.status.value:>9} | {versus_cvxpy:>7.2f} {versus_admm:>7.2f}")


if __name__ == "__main__":
    main()
