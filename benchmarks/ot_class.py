"""Class-based OT: certopt's smooth-dual solver vs its cvxpy model and POT's sinkhorn_l1l2_gl.

    python benchmarks/ot_class.py [--quick] [--device cuda] [--threads 1]

Problems: n = m points in R^10, the source in three labelled Gaussian
clusters, the target drawn from the same clusters and shifted; uniform
weights; squared Euclidean cost divided by its maximum; reg = REG on the
group norms, gamma = GAMMA (``--reg``, ``--gamma`` change them).

Solvers, each on its own model:

* certopt ``ot.class_based`` (L-BFGS on the smooth dual, plan rounded onto
  U(a, b); ``tol`` = certified relative gap 1e-6): objective, certified
  dual bound, gap, marginal error of the returned plan;
* the same model in cvxpy (``method="cvxpy"``, Clarabel; sizes <= --cvxpy-max):
  objective; the ratio cvxpy time / certopt time;
* POT's ``ot.da.sinkhorn_l1l2_gl`` (entropic OT plus the same group lasso,
  entropy ENTROPY, eta = reg; its defaults, 10 outer iterations):
  its own objective ``<C,T> + ENTROPY sum T log T + reg sum ||T_{I_c,j}||``
  (a different model, so not comparable to ours), our model's objective at
  its plan (``ours@POT``, meaningful only up to its marginal error), its
  marginal error, and the ratio POT time / certopt time.

Sizes: 100, 200, 500, 1000, 2000 on CPU (cvxpy up to 200); ``--quick``: 100
and 300 (< 1 minute); ``--device cuda``: certopt on the GPU in float32 (tol
1e-5) at 1000, 2000, 5000, 10000, POT on the CPU up to --pot-max.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import ot as pot
import torch
from _report import report

from certopt import ot as cot
from certopt.ot.group_shrinkage import group_norm_sum

DIM, N_CLASSES = 10, 3
REG, GAMMA, ENTROPY = 0.5, 1.0, 1e-2


def make_problem(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = 3.0 * rng.standard_normal((N_CLASSES, DIM))
    labels = np.arange(n) % N_CLASSES
    source = centers[labels] + rng.standard_normal((n, DIM))
    target = centers[rng.integers(0, N_CLASSES, n)] + rng.standard_normal((n, DIM)) + 0.5
    cost = pot.dist(source, target)
    cost /= cost.max()
    return np.full(n, 1 / n), np.full(n, 1 / n), cost, labels


def our_objective(plan: np.ndarray, cost: np.ndarray, labels: np.ndarray, reg: float,
                  gamma: float) -> float:
    """Class-based objective of any plan (ours or POT's)."""
    group = float(group_norm_sum(torch.as_tensor(plan), torch.as_tensor(labels), N_CLASSES))
    return float((cost * plan).sum()) + reg * group + 0.5 * gamma * float((plan ** 2).sum())


def run_certopt(a, b, cost, labels, reg, gamma, device, method="accelerated"):
    tol = 1e-6
    if device.type == "cuda":
        a, b, cost = (torch.tensor(x, device=device, dtype=torch.float32) for x in (a, b, cost))
        cot.class_based(a, b, cost, labels, reg, gamma, max_iter=5)     # warm-up
        torch.cuda.synchronize()
        tol = 1e-5
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cot.class_based(a, b, cost, labels, reg, gamma, tol=tol, device=device,
                              method=method)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return dict(time=time.perf_counter() - start, objective=res.objective, bound=res.dual_value,
                gap=res.gap, error=res.marginal_error, status=f"{res.status.value}/{res.n_iter}")


def run_pot(a, b, cost, labels, reg, gamma):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = pot.da.sinkhorn_l1l2_gl(a, labels, b, cost, ENTROPY, eta=reg)
    seconds = time.perf_counter() - start
    positive = plan[plan > 0]
    group = float(group_norm_sum(torch.as_tensor(plan), torch.as_tensor(labels), N_CLASSES))
    own = float((cost * plan).sum() + ENTROPY * (positive * np.log(positive)).sum() + reg * group)
    error = max(np.abs(plan.sum(1) - a).sum(), np.abs(plan.sum(0) - b).sum())
    return dict(time=seconds, own=own, ours=our_objective(plan, cost, labels, reg, gamma),
                error=error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 100, 300: under a minute")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reg", type=float, default=REG)
    parser.add_argument("--gamma", type=float, default=GAMMA)
    parser.add_argument("--cvxpy-max", type=int, default=200, help="largest n cvxpy runs on")
    parser.add_argument("--pot-max", type=int, default=2000, help="largest n POT runs on")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--sizes", help="comma-separated n to run instead, e.g. 500,1000")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:      # the same on every device, so that make gpu-check pairs the figures
        sizes = [100, 300]
    elif device.type == "cuda":
        sizes = [1000, 2000, 5000, 10000]
    else:
        sizes = [100, 200, 500, 1000, 2000]
    if args.sizes:
        sizes = [int(n) for n in args.sizes.split(",")]
    reg, gamma = args.reg, args.gamma
    print(f"class-based OT, reg={reg}, gamma={gamma}, d={DIM}, K={N_CLASSES}, device={device}, "
          f"torch threads={torch.get_num_threads()}; POT sinkhorn_l1l2_gl entropy={ENTROPY}, "
          f"eta={reg}")
    header = (f"{'n':>5} | {'certopt s':>9} {'objective':>11} {'gap':>8} {'err':>8} "
              f"{'status':>14} | {'cvxpy s':>8} {'objective':>11} {'ratio':>6} | "
              f"{'POT s':>7} {'POT own obj':>11} {'ours@POT':>11} {'POT err':>8} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for n in sizes:
        a, b, cost, labels = make_problem(n)
        ours = run_certopt(a, b, cost, labels, reg, gamma, device)
        report(f"ot_class n={n} certopt", ours["time"], device=device)
        line = (f"{n:>5} | {ours['time']:>9.2f} {ours['objective']:>11.7f} {ours['gap']:>8.1e} "
                f"{ours['error']:>8.1e} {ours['status']:>14} | ")
        if n <= args.cvxpy_max:
            conic = run_certopt(a, b, cost, labels, reg, gamma, torch.device("cpu"), "cvxpy")
            report(f"ot_class n={n} cvxpy", conic["time"], device="cpu")
            line += (f"{conic['time']:>8.2f} {conic['objective']:>11.7f} "
                     f"{conic['time'] / ours['time']:>6.1f} | ")
        else:
            line += f"{'-':>8} {'-':>11} {'-':>6} | "
        if n <= args.pot_max:
            theirs = run_pot(a, b, cost, labels, reg, gamma)
            report(f"ot_class n={n} POT", theirs["time"], device="cpu")
            line += (f"{theirs['time']:>7.2f} {theirs['own']:>11.7f} {theirs['ours']:>11.7f} "
                     f"{theirs['error']:>8.1e} {theirs['time'] / ours['time']:>6.1f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
