"""Sampled convex program at tol = 2% vs the ADMM: the issue's criterion, time and F.

For each case: synthetic data (a 5-neuron ReLU teacher plus noise, Gaussian
inputs), the same P sampled patterns for every solver.  Regression uses the
squared loss, classification the hinge loss on the teacher's signs.

* sampled runs once at tol = ``TARGET`` (0.02): its cheap path stops when
  F - bound <= tol |bound| is certified, else it falls back to the ADMM.
* the ADMM runs at tol in ``ADMM_LADDER`` (from scratch each time) and at its
  default tol (1e-6, capped by --max-iter); F_admm, the ADMM solution's F,
  is that of the default-tol run.
* cvxpy (Clarabel) runs for n <= --cvxpy-max (the quick cases).
* printed per solver run: wall and CPU seconds (time.process_time; the
  machine may be shared), F, F / F_admm, the certified relative gap
  (F - bound) / |bound|, and for sampled the path taken (al: certified by
  the augmented-Lagrangian rounds; admm: fallback).  Then the time ratios
  against sampled of: the first ladder run with F <= (1 + TARGET) F_admm
  (uncertified), the first with a certified gap <= TARGET, the default run,
  and cvxpy.

The F of sampled's network can be below F_admm: its neurons may leave the
sampled patterns' cones (the module docstring of certopt.convexnn.sampled).

Readings: benchmarks/RESULTS.md.

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
from _report import report

from certopt.convexnn.admm import solve_admm
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.reference import solve_cvxpy
from certopt.convexnn.sampled import solve_sampled

TARGET = 0.02
ADMM_LADDER = (1e-2, 1e-3)
# (task, n, d, P, lam)
QUICK_CASES = (("regression", 300, 10, 20, 1e-2), ("classification", 300, 10, 20, 1e-2))
FULL_CASES = (("regression", 2000, 50, 100, 1e-2), ("classification", 2000, 50, 100, 1e-2),
              ("regression", 4000, 50, 200, 1e-2), ("classification", 4000, 50, 200, 1e-2))


def make_problem(task, n, d, n_patterns, lam, device, rng):
    X = rng.standard_normal((n, d))
    teacher = rng.standard_normal((d, 5))
    y = np.maximum(X @ teacher, 0.0) @ rng.standard_normal(5) / np.sqrt(d)
    y += 0.1 * rng.standard_normal(n)
    loss = "squared"
    if task == "classification":
        y, loss = np.where(y > np.median(y), 1.0, -1.0), "hinge"
    return ConvexReLUProblem.from_data(X, y, lam=lam, loss=loss, n_patterns=n_patterns,
                                       random_state=0, device=device)


def timed(solver, problem, options):
    """(result, wall seconds, CPU seconds of this process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wall, cpu = time.perf_counter(), time.process_time()
        result = solver(problem, options)
        if problem.X.is_cuda:
            torch.cuda.synchronize()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def relative_gap(result) -> float:
    return result.gap / abs(result.bound) if result.bound else float("inf")


def first(runs, accept) -> tuple[float, float]:
    """(wall, cpu) of the first run that ``accept`` takes, nan if none."""
    for result, wall, cpu in runs:
        if accept(result):
            return wall, cpu
    return float("nan"), float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small cases (< 1 minute)")
    parser.add_argument("--device", default="cpu", help="torch device of ADMM and sampled")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--max-iter", type=int, default=5000)
    parser.add_argument("--cvxpy-max", type=int, default=500,
                        help="largest n for which cvxpy (Clarabel, on the CPU) runs")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cases = QUICK_CASES if args.quick else FULL_CASES
    rng = np.random.default_rng(0)
    print(f"device={args.device} threads={torch.get_num_threads()} max_iter={args.max_iter} "
          f"sampled tol={TARGET}, ADMM tol in {ADMM_LADDER} + default; times wall/cpu s")
    header = (f"{'task':<14} {'n':>5} {'P':>4} | {'run':<14} {'wall':>7} {'cpu':>7} "
              f"{'F':>9} {'F/Fadmm':>8} {'gap/bnd':>8} {'path':>5}")
    print(header)
    print("-" * len(header))
    summary = []
    for task, n, d, n_patterns, lam in cases:
        problem = make_problem(task, n, d, n_patterns, lam, args.device, rng)
        sampled = timed(solve_sampled, problem, SolverOptions(max_iter=args.max_iter,
                                                              tol=TARGET))
        ladder = [timed(solve_admm, problem, SolverOptions(max_iter=args.max_iter, tol=tol))
                  for tol in ADMM_LADDER]
        default = timed(solve_admm, problem, SolverOptions(max_iter=args.max_iter))
        f_admm = default[0].objective
        runs = [("sampled", sampled)] + [(f"admm tol={tol:g}", run)
                                         for tol, run in zip(ADMM_LADDER, ladder)]
        runs.append((f"admm default{'' if default[0].converged else '*'}", default))
        cvxpy = (float("nan"), float("nan"))
        if n <= args.cvxpy_max:
            # the cvxpy model is built from CPU copies; its certificate runs on the device
            runs.append(("cvxpy", timed(solve_cvxpy, problem, SolverOptions())))
            cvxpy = runs[-1][1][1:]
        for name, (result, wall, cpu) in runs:
            path = "-"
            if name == "sampled":
                path = "admm" if result.residuals["admm_fallback"] else "al"
            report(f"convexnn_sampled {task} n={n} P={problem.n_patterns} {name}", wall,
                   device="cpu" if name == "cvxpy" else args.device)
            print(f"{task:<14} {n:>5} {problem.n_patterns:>4} | {name:<14} {wall:>7.2f} "
                  f"{cpu:>7.2f} {result.objective:>9.5f} {result.objective / f_admm:>8.4f} "
                  f"{relative_gap(result):>8.1e} {path:>5}")
        admm_runs = ladder + [default]
        reach = first(admm_runs, lambda r, f=f_admm: r.objective <= (1 + TARGET) * f)
        certified = first(admm_runs, lambda r: relative_gap(r) <= TARGET)
        summary.append((task, n, problem.n_patterns, sampled, sampled[0].objective / f_admm,
                         reach, certified, default[1:], cvxpy))
    print()
    print("time ratios ADMM (or cvxpy) / sampled (wall/cpu); F ratio sampled / F_admm")
    header = (f"{'task':<14} {'n':>5} {'P':>4} | {'F ratio':>8} {'to 2% F':>13} "
              f"{'to cert 2%':>13} {'default':>13} {'cvxpy':>13}")
    print(header)
    print("-" * len(header))
    for task, n, P, (_, wall, cpu), f_ratio, reach, certified, default, cvxpy in summary:
        ratios = [f"{t[0] / wall:>6.2f}/{t[1] / cpu:<6.2f}"
                  for t in (reach, certified, default, cvxpy)]
        print(f"{task:<14} {n:>5} {P:>4} | {f_ratio:>8.4f} "
              + " ".join(f"{r:>13}" for r in ratios))


if __name__ == "__main__":
    main()
