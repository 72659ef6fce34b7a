"""Sampled convex program (gated FISTA + working-set re-solve) vs ADMM vs cvxpy: time to equal F.

For each case: synthetic data (a 5-neuron ReLU teacher plus noise, Gaussian
inputs), the same P sampled patterns for every solver.  Regression uses the
squared loss, classification the hinge loss on the teacher's signs.  Each
iterative solver runs with tol = 1e-3, 1e-4, 1e-5 (from scratch each time);
its time to equal F is the time of the first run whose F (objective of the
returned ReLU network) is within ``ACCURACY`` of F*, the best F of all runs
and of Clarabel's solution (cvxpy runs for n <= --cvxpy-max; the F of its
network can be above the iterative solvers').
Printed: time to F*, F of that run, its excess over F*, the support sizes of
the sampled solver (gated / final), and time ratios against ADMM and cvxpy.

The sampled solver is faster only where the ReLU optimum uses a small part
of the P patterns (large lam, many patterns): with a dense support its
second step is the ADMM on (almost) all patterns, after the FISTA.

    python benchmarks/convexnn_sampled.py --quick
    python benchmarks/convexnn_sampled.py --threads 1
    python benchmarks/convexnn_sampled.py --device cuda
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
from certopt.convexnn.sampled import solve_sampled

ACCURACY = 1e-4
TOLERANCES = (1e-3, 1e-4, 1e-5)
# (task, n, d, P, lam)
QUICK_CASES = (("regression", 200, 10, 30, 1e-2), ("regression", 200, 10, 60, 1e-1))
FULL_CASES = (("regression", 2000, 50, 100, 1e-2), ("classification", 2000, 50, 100, 1e-2),
              ("regression", 1000, 20, 200, 1e-1), ("classification", 1000, 20, 200, 1e-1))


def make_problem(task, n, d, n_patterns, lam, device, rng):
    X = rng.standard_normal((n, d))
    teacher = rng.standard_normal((d, 5))
    y = np.maximum(X @ teacher, 0.0) @ rng.standard_normal(5) / np.sqrt(d)
    y += 0.1 * rng.standard_normal(n)
    loss = "squared"
    if task == "classification":
        y, loss = np.where(y > np.median(y), 1.0, -1.0), "hinge"
    return X, y, loss, ConvexReLUProblem.from_data(X, y, lam=lam, loss=loss,
                                                   n_patterns=n_patterns, random_state=0,
                                                   device=device)


def timed(solver, problem, options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        result = solver(problem, options)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small cases (< 1 minute)")
    parser.add_argument("--device", default="cpu", help="torch device of ADMM and sampled")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--max-iter", type=int, default=5000)
    parser.add_argument("--cvxpy-max", type=int, default=500,
                        help="largest n for which cvxpy runs")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cases = QUICK_CASES if args.quick else FULL_CASES
    rng = np.random.default_rng(0)
    print(f"device={args.device} threads={torch.get_num_threads()} max_iter={args.max_iter} "
          f"time to |F - F*| <= {ACCURACY:g} F* (tol in {TOLERANCES})")
    header = (f"{'task':<14} {'n':>5} {'d':>3} {'P':>4} {'lam':>6} | {'solver':<8} "
              f"{'time s':>8} {'F':>10} {'excess':>9} {'support':>8} | {'admm/x':>7} "
              f"{'cvxpy/x':>7}")
    print(header)
    print("-" * len(header))
    for task, n, d, n_patterns, lam in cases:
        X, y, loss, problem = make_problem(task, n, d, n_patterns, lam, args.device, rng)
        runs: dict[str, list] = {"admm": [], "sampled": []}
        for name, solver in (("admm", solve_admm), ("sampled", solve_sampled)):
            for tol in TOLERANCES:
                runs[name].append(timed(solver, problem, SolverOptions(max_iter=args.max_iter,
                                                                        tol=tol)))
        best = min(result.objective for results in runs.values() for result, _ in results)
        reference = None
        if n <= args.cvxpy_max:
            cpu = ConvexReLUProblem.from_data(X, y, lam=lam, loss=loss, n_patterns=n_patterns,
                                              random_state=0)
            reference = timed(solve_cvxpy, cpu, SolverOptions())
            best = min(best, reference[0].objective)
        rows = {}
        for name, results in runs.items():
            reached = [(r, t) for r, t in results if r.objective <= best * (1 + ACCURACY)]
            rows[name] = reached[0] if reached else (results[-1][0], float("nan"))
        if reference is not None:
            rows["cvxpy"] = reference
        for name, (result, seconds) in rows.items():
            support = "-"
            if name == "sampled":
                support = (f"{result.residuals['gated_support_size']:.0f}/"
                           f"{result.residuals['support_size']:.0f}")
            versus_cvxpy = rows["cvxpy"][1] / seconds if "cvxpy" in rows else float("nan")
            print(f"{task:<14} {n:>5} {d:>3} {problem.n_patterns:>4} {lam:>6g} | {name:<8} "
                  f"{seconds:>8.2f} {result.objective:>10.5f} {result.objective / best - 1:>9.1e} "
                  f"{support:>8} | {rows['admm'][1] / seconds:>7.2f} {versus_cvxpy:>7.2f}")


if __name__ == "__main__":
    main()
