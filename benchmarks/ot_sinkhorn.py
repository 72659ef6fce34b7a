"""Entropic OT: certopt's ``ot.sinkhorn`` vs POT's Sinkhorn solvers (and OTT-JAX, geomloss).

    python benchmarks/ot_sinkhorn.py [--quick] [--device cuda] [--threads 1]

Problems: n = m points drawn uniformly in [0, 1]^d, uniform weights, squared
Euclidean cost divided by its maximum, n in {1000, 5000}, d in {2, 50}, reg
in {0.05, 0.01, 0.001}; ``--quick``: n = 1000, d = 2 (under a minute).

Every solver is stopped at the same accuracy, L1 marginal error 1e-6:

* certopt ``ot.sinkhorn`` with its defaults (``tol=1e-6``: row error of the
  Gibbs plan, columns exact; the returned plan is then rounded onto U(a, b)),
  with ``eps_scaling=False`` (the plain iteration, as POT's) and in the log
  domain (``method="log"``, streamed, what runs with ``return_plan=False``);
* POT's ``ot.sinkhorn`` (scaling domain), ``ot.bregman.sinkhorn_log`` and
  ``ot.bregman.sinkhorn_stabilized``: they run the same iteration map as
  certopt's plain Sinkhorn, so each is given exactly the plain iteration
  count certopt needed (``stopThr=0``) and the L1 error of the plan it
  returns is printed to show the accuracy is the same.  A log-domain or POT
  run that would exceed ``--budget`` CPU seconds runs ``--probe`` iterations
  and its time is extrapolated linearly (marked ``~``);
* OTT-JAX and geomloss when importable (skipped with a message otherwise).

Each solver is called once on a small problem before anything is timed
(first-call costs: lazy initialisation, first use of each kernel).
Printed per solver: CPU seconds (``time.process_time``, one thread unless
``--threads``), iterations, L1 marginal error of the returned plan, the
entropic objective of that plan, certopt's certified gap, and the peak
resident memory added by the call (Linux ``VmHWM``, reset before each call).
Ratios: POT's time / certopt's time.
"""

from __future__ import annotations

import argparse
import os


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 1000, d = 2 only")
    parser.add_argument("--device", default="cpu", help="certopt's device (cpu or cuda)")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and BLAS")
    parser.add_argument("--budget", type=float, default=None,
                        help="CPU seconds per baseline run before extrapolating "
                             "(default 5 with --quick, 60 otherwise)")
    parser.add_argument("--probe", type=int, default=50,
                        help="iterations a baseline over budget runs")
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:                      # before numpy/torch load their thread pools
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(ARGS.threads)

import ctypes  # noqa: E402
import gc  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import ot as pot  # noqa: E402
import torch  # noqa: E402
from _report import report  # noqa: E402

from certopt import ot as cot  # noqa: E402

TOL = 1e-6
GRID_N, GRID_D, GRID_REG = (1000, 5000), (2, 50), (0.05, 0.01, 0.001)


def make_problem(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(size=(n, d)), rng.uniform(size=(n, d))
    cost = pot.dist(x, y)
    return cost / cost.max()


def entropic(plan: np.ndarray, cost: np.ndarray, reg: float) -> float:
    with np.errstate(all="ignore"):
        return float((cost * plan).sum() + reg * (np.where(plan > 0, plan * np.log(plan), 0.0)
                                                   - plan).sum())


def l1_error(plan: np.ndarray, a: np.ndarray) -> float:
    return float(np.abs(plan.sum(1) - a).sum() + np.abs(plan.sum(0) - a).sum())


def _peak_reset() -> int:
    """Return freed heap to the OS and reset the peak RSS (Linux: ``malloc_trim``,
    ``echo 5 > /proc/self/clear_refs``); the current RSS in KiB, -1 elsewhere."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _status_kib("VmRSS")
    except OSError:
        return -1


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def measured(call, clock=time.process_time):
    """``(result, seconds, peak MiB added)`` of ``call()``; ``clock`` is CPU time
    unless the caller times a GPU (wall time)."""
    before = _peak_reset()
    start = clock()
    out = call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = clock() - start
    peak = (_status_kib("VmHWM") - before) / 1024 if before >= 0 else float("nan")
    return out, seconds, peak


def run_certopt(cost, reg, device, budget=None, iterations=None, probe=None, **options) -> dict:
    """certopt's sinkhorn; with ``budget``, a run expected to exceed it (from a
    ``probe``-iteration run, for ``iterations`` in all) is extrapolated instead."""
    data = torch.tensor(cost, device=device) if device.type == "cuda" else cost

    def call(**extra):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cot.sinkhorn(None, None, data, reg, tol=TOL, **options, **extra)

    if budget is not None:
        _, probe_seconds, _ = measured(lambda: call(max_iter=min(probe, iterations)))
        estimate = probe_seconds / min(probe, iterations) * iterations
        if estimate > budget:
            return _extrapolated(estimate, iterations)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    res, seconds, peak = measured(call, clock)
    plan = res.plan.cpu().numpy() if isinstance(res.plan, torch.Tensor) else res.plan
    a = np.full(cost.shape[0], 1 / cost.shape[0])
    return dict(seconds=seconds, iters=res.n_iter, error=l1_error(plan, a),
                objective=res.objective, gap=res.gap, peak=peak, status=res.status.value,
                before=res.residuals["dual_plan_marginal"])


def run_pot(solver, cost, reg, iterations, budget, probe) -> dict:
    n = cost.shape[0]
    a = np.full(n, 1 / n)

    def call(count):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return solver(a, a, cost, reg, numItermax=count, stopThr=0.0)

    _, probe_seconds, _ = measured(lambda: call(min(probe, iterations)))
    estimate = probe_seconds / min(probe, iterations) * iterations
    if estimate > budget:
        return _extrapolated(estimate, iterations)
    plan, seconds, peak = measured(lambda: call(iterations))
    error = l1_error(plan, a)
    return dict(seconds=seconds, iters=iterations, error=error, objective=entropic(plan, cost, reg),
                gap=float("nan"), peak=peak,
                status="ok" if np.isfinite(error) and error <= 10 * TOL else "FAILED")


def _extrapolated(seconds: float, iterations: int) -> dict:
    nan = float("nan")
    return dict(seconds=seconds, iters=iterations, error=nan, objective=nan, gap=nan, peak=nan,
                status="extrapolated", estimated=True)


POT_SOLVERS = {
    "POT sinkhorn": pot.sinkhorn,
    "POT sinkhorn_log": pot.bregman.sinkhorn_log,
    "POT sinkhorn_stabilized": pot.bregman.sinkhorn_stabilized,
}


def optional_baselines() -> None:
    for module, name, package in (("ott", "OTT-JAX", "ott-jax"), ("geomloss", "geomloss",
                                                                   "geomloss")):
        try:
            __import__(module)
        except ImportError:
            print(f"# {name} not installed: skipped (pip install {package})")
        else:
            print(f"# {name} is installed but not wired into this script yet: skipped")


def warm_up(device: torch.device) -> None:
    """One untimed call of every solver on a 50 x 50 problem."""
    cost = make_problem(50, 2)
    run_certopt(cost, 0.05, device)
    run_certopt(cost, 0.05, device, method="log", eps_scaling=False)
    for solver in POT_SOLVERS.values():
        run_pot(solver, cost, 0.05, 10, float("inf"), 10)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    budget = args.budget if args.budget is not None else (5.0 if args.quick else 60.0)
    sizes = [(1000, 2)] if args.quick else [(n, d) for n in GRID_N for d in GRID_D]
    print(f"# torch {torch.__version__}, POT {pot.__version__}, threads {args.threads}, "
          f"certopt on {device}, stop at L1 marginal error {TOL:g}; CPU seconds")
    optional_baselines()
    warm_up(device)
    header = (f"{'n':>5} {'d':>3} {'reg':>6} {'solver':<24} {'cpu s':>9} {'iters':>6} "
              f"{'L1 error':>9} {'objective':>14} {'gap':>9} {'peak MiB':>8} {'POT/ours':>8}")
    print(header)
    for n, d in sizes:
        cost = make_problem(n, d)
        for reg in GRID_REG:
            rows = {"certopt sinkhorn": run_certopt(cost, reg, device),
                    "certopt eps_scaling=False": run_certopt(cost, reg, device,
                                                             eps_scaling=False)}
            plain_iterations = rows["certopt eps_scaling=False"]["iters"]
            rows["certopt method=log"] = run_certopt(
                cost, reg, device, budget, plain_iterations, args.probe, method="log",
                eps_scaling=False)
            for name, solver in POT_SOLVERS.items():
                rows[name] = run_pot(solver, cost, reg, plain_iterations, budget, args.probe)
            ours = rows["certopt sinkhorn"]["seconds"]
            for name, row in rows.items():
                mark = "~" if row.get("estimated") else " "
                ratio = f"{row['seconds'] / ours:8.2f}" if name.startswith("POT") else " " * 8
                print(f"{n:5d} {d:3d} {reg:6g} {name:<24} {mark}{row['seconds']:8.3f} "
                      f"{row['iters']:6d} {row['error']:9.1e} {row['objective']:14.9f} "
                      f"{row['gap']:9.1e} {row['peak']:8.1f} {ratio} {row['status']}",
                      flush=True)
                if not row.get("estimated"):
                    # a scaling-domain iteration reads the n x n kernel twice
                    ours_on_kernel = name == "certopt sinkhorn"
                    report(f"ot_sinkhorn n={n} d={d} reg={reg:g} {name}", row["seconds"],
                           device="cpu" if name.startswith("POT") else device,
                           bytes_moved=2 * row["iters"] * cost.nbytes if ours_on_kernel
                           else None)


if __name__ == "__main__":
    main(ARGS)
