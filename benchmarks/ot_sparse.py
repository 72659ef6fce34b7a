"""Sparse OT: certopt vs POT's sparsity-constrained smooth OT, same problems.

    python benchmarks/ot_sparse.py [--quick] [--large] [--device cuda] [--threads 1]

Problems: n = m points in R^50 (seeded Gaussian clouds, the target shifted),
uniform weights, squared Euclidean cost divided by its maximum, k = 3,
reg = 0.05 (the math note's measured setting).  For each size and each of
the semi-dual and dual, both solvers run on the same problem: certopt's
``ot.sparse`` (L-BFGS on the torch (semi-)dual, tol 1e-6 relative marginal
error, max 2000 evaluations) and POT's
``ot.smooth.smooth_ot_semi_dual/smooth_ot_dual(reg_type="sparsity_constrained")``
(scipy L-BFGS-B, its defaults: tol 1e-3, 500 iterations).  Printed: time,
dual value (higher is better: both are lower bounds), L1 marginal error,
nonzeros, and the ratios POT time / certopt time.

Sizes: 300, 1000, 2000 by default; ``--quick``: 300, and 1000 for certopt
only (< 1 minute);
``--large`` adds 5000 (POT takes many minutes there).  ``--device cuda``
runs certopt on the GPU at 2000, 5000, 10000, 20000 (POT, CPU only, up to
``--pot-max``, default 2000).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings

import numpy as np
import ot as pot
import torch

from certopt import ot as cot

DIM, K, REG = 50, 3, 0.05


def make_problem(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((n, DIM))
    target = rng.standard_normal((n, DIM)) + 0.5
    cost = pot.dist(source, target)
    cost /= cost.max()
    return np.full(n, 1 / n), np.full(n, 1 / n), cost


def marginal_error(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return max(np.abs(plan.sum(1) - a).sum(), np.abs(plan.sum(0) - b).sum())


def run_pot(a, b, cost, method):
    solve = pot.smooth.smooth_ot_semi_dual if method == "semi-dual" else pot.smooth.smooth_ot_dual
    start = time.perf_counter()
    # POT 0.9.7's projection_sparse_simplex prints a debug line per call: muted
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        plan, log = solve(a, b, cost, REG, reg_type="sparsity_constrained", max_nz=K, log=True)
    seconds = time.perf_counter() - start
    return dict(time=seconds, dual=-float(log["res"].fun), error=marginal_error(plan, a, b),
                nnz=int(np.count_nonzero(plan)), status=f"nit={log['res'].nit}")


def run_certopt(a, b, cost, method, device):
    if device.type == "cuda":
        a, b, cost = (torch.tensor(x, device=device, dtype=torch.float32) for x in (a, b, cost))
        cot.sparse(a, b, cost, K, reg=REG, method=method, max_iter=5)   # warm-up
        torch.cuda.synchronize()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cot.sparse(a, b, cost, K, reg=REG, method=method, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return dict(time=seconds, dual=res.dual_value, error=res.marginal_error,
                nnz=int(res.residuals["nnz"]), status=f"{res.status.value}/{res.n_iter}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="n = 300 (both) and 1000 (certopt only): under a minute")
    parser.add_argument("--large", action="store_true", help="add n = 5000 (POT: minutes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pot-max", type=int, default=2000, help="largest n POT runs on")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--methods", default="semi-dual,dual")
    parser.add_argument("--sizes", help="comma-separated n to run instead, e.g. 2000,5000")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        sizes = [2000, 5000, 10000, 20000]
    else:
        sizes = [300, 1000] if args.quick else [300, 1000, 2000] + ([5000] if args.large else [])
        if args.quick:
            args.pot_max = min(args.pot_max, 300)
    if args.sizes:
        sizes = [int(n) for n in args.sizes.split(",")]
    print(f"sparse OT, k={K}, reg={REG}, d={DIM}, device={device}, "
          f"torch threads={torch.get_num_threads()}")
    header = (f"{'n':>6} {'method':>9} | {'certopt s':>9} {'POT s':>8} {'speedup':>7} | "
              f"{'dual(certopt)':>14} {'dual(POT)':>14} | {'err certopt':>11} {'err POT':>9} | "
              f"{'nnz c/P':>11} | status certopt, POT")
    print(header)
    print("-" * len(header))
    for n in sizes:
        a, b, cost = make_problem(n)
        for method in args.methods.split(","):
            ours = run_certopt(a, b, cost, method, device)
            theirs = run_pot(a, b, cost, method) if n <= args.pot_max else None
            if theirs is None:
                print(f"{n:>6} {method:>9} | {ours['time']:>9.2f} {'-':>8} {'-':>7} | "
                      f"{ours['dual']:>14.9f} {'-':>14} | {ours['error']:>11.2e} {'-':>9} | "
                      f"{ours['nnz']:>11} | {ours['status']}")
                continue
            print(f"{n:>6} {method:>9} | {ours['time']:>9.2f} {theirs['time']:>8.2f} "
                  f"{theirs['time'] / ours['time']:>7.1f} | {ours['dual']:>14.9f} "
                  f"{theirs['dual']:>14.9f} | {ours['error']:>11.2e} {theirs['error']:>9.2e} | "
                  f"{ours['nnz']:>5}/{theirs['nnz']:<5} | {ours['status']}, {theirs['status']}",
                  flush=True)


if __name__ == "__main__":
    main()
