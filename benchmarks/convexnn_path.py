"""Regularisation path: ``fit_path`` (warm-started ADMM) vs independent fits.

Synthetic regression (a 5-neuron ReLU teacher plus noise), squared loss, P
sampled patterns, ``solver="admm"``, tol = 1e-4 (certified relative gap), a
10-point geometric path of lam from 1e-1 to 1e-3.  Prints per lam the
iterations of both, then the CPU seconds (``time.process_time``, one thread)
and their ratio; then, to separate the two things the path does differently
(warm starts, and the residual-balanced rho of ``admm.path_options``), the CPU
seconds of independent cold solves with the path's options.  Readings:
benchmarks/RESULTS.md.

    python benchmarks/convexnn_path.py --quick
    python benchmarks/convexnn_path.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from certopt.convexnn import ConvexReLUProblem, ConvexReLURegressor, SolverOptions
from certopt.convexnn.admm import path_options, solve_admm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 200, P = 20 (seconds)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, as every benchmark here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n, d, P = (200, 3, 20) if args.quick else (600, 5, 40)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, d))
    y = np.maximum(X @ rng.standard_normal((d, 5)), 0.0).sum(axis=1) - 0.5 * X[:, 1]
    y += 0.1 * rng.standard_normal(n)
    lams = np.geomspace(1e-1, 1e-3, 10)
    settings = {"n_patterns": P, "solver": "admm", "tol": 1e-4, "random_state": 0}
    start = time.process_time()
    path = ConvexReLURegressor(**settings).fit_path(X, y, lams)
    path_seconds = time.process_time() - start
    start = time.process_time()
    single = [ConvexReLURegressor(lam=lam, **settings).fit(X, y) for lam in lams]
    single_seconds = time.process_time() - start
    print(f"n = {n}, d = {d}, P = {P}, squared loss, tol 1e-4")
    print(f"{'lam':>9} {'path it':>8} {'single it':>9} {'path gap':>9} {'single gap':>10}")
    for member, alone in zip(path, single):
        gaps = [m.certificate_.gap / abs(m.certificate_.bound) for m in (member, alone)]
        print(f"{member.lam:>9.2e} {member.n_iter_:>8} {alone.n_iter_:>9} {gaps[0]:>9.1e} "
              f"{gaps[1]:>10.1e}")
    print(f"CPU seconds: path {path_seconds:.2f}, independent {single_seconds:.2f}, "
          f"speed-up {single_seconds / path_seconds:.2f}x")
    start = time.process_time()
    options = SolverOptions(tol=settings["tol"], max_iter=single[0].max_iter)
    for lam in lams:
        problem = ConvexReLUProblem.from_data(X, y, lam=lam, n_patterns=P, random_state=0)
        solve_admm(problem, path_options(problem, options))
    cold_seconds = time.process_time() - start
    print(f"independent cold solves with the path's options: {cold_seconds:.2f} CPU s "
          f"(the warm starts' share of the speed-up: {cold_seconds / path_seconds:.2f}x)")


if __name__ == "__main__":
    main()
