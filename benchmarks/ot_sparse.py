"""Sparse OT: certopt vs POT's sparsity-constrained smooth OT, same problems.

    python benchmarks/ot_sparse.py [--quick] [--large] [--device cuda] [--threads 1]
                                   [--hot-loops]

Problems: n = m points in R^50 (seeded Gaussian clouds, the target shifted),
squared Euclidean cost divided by its maximum, k = 3, reg = 0.05 (the math
note's measured setting), with uniform weights and with weights drawn
uniform in [0.5, 1.5] and normalised (``--weights``, default both).  For each size and each of
the semi-dual and dual, three solvers run on the same problem:

* ``POT``: ``ot.smooth.smooth_ot_semi_dual/smooth_ot_dual(reg_type=
  "sparsity_constrained")`` (scipy L-BFGS-B, its defaults: tol 1e-3, 500
  iterations), on the dense cost;
* ``certopt C``: ``ot.sparse`` (L-BFGS on the torch (semi-)dual, tol 1e-6
  relative marginal error, max 2000 evaluations) on the dense cost matrix;
* ``certopt cloud``: the same on ``ot.PointCloudCost(x, y, scale=1/max C)``,
  the cost computed block by block inside each streamed pass (never stored).

Printed: CPU seconds (``time.process_time``; run with ``--threads 1`` for
one-thread figures), the ratio POT time / this time, peak memory the solve added
(``peak MiB``: resident-set high-water mark during the call minus the
resident set before it, read from /proc with the high-water mark reset
before each call; on CUDA, ``torch.cuda.max_memory_allocated``; it includes
the returned dense n x m plan, 8 n^2 bytes in float64, and for the dense
rows certopt's working copies of C), dual value (higher is better: all are
lower bounds), L1 marginal error, nonzeros, status.  The streamed passes
hold one block of at most 2**18 costs (2 MiB in float64) on CPU.

``--hot-loops`` times the two hot loops per pass instead (the issue's
performance section): one log-domain Sinkhorn iteration (two log-sum-exp
passes) materialising ``(g - C)/eps`` with ``torch.logsumexp`` vs certopt's
streamed pass on C and on the point cloud; one sparse semi-dual evaluation with a materialised
``alpha - C^T`` and one ``topk`` vs the streamed pass on C and on the cloud.

``--supports`` runs two families where the repair must find a support
that admits a k-sparse plan instead (reg 0.1, default settings, CPU):
96 rounded-cost instances (``C.round()`` of 2-D normal points, uniform
weights, 8 x 6 to 100 x 80, k = 2, 3, both methods) and 8 non-uniform ones
(n = m = 250-300 points in R^5, weights in [0.5, 1.5], k = 2, 3); printed:
OPTIMAL count, CPU seconds per solve, the relative gap to the dual value
and the objective over exact OT's cost (which bounds the optimum below).

Sizes: 2000 by default (the issue's target); ``--quick``: 300 (< 1 minute);
``--large`` adds 5000 (POT takes many minutes there:
``--pot-max``, default 2000, is the largest n POT runs on).  ``--device
cuda`` runs certopt on the GPU at 2000, 5000, 10000, 20000 in float32.

Readings: ``benchmarks/RESULTS.md``, section ``benchmarks/ot_sparse.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import time
import warnings

import numpy as np
import ot as pot
import torch
from _report import report

from certopt import ot as cot
from certopt.ot.problem import TransportProblem
from certopt.ot.projections import project_sorted, top_k_last
from certopt.ot.sparse import ColumnDuals
from certopt.ot.streaming import CPU_BLOCK_ENTRIES, logsumexp_pass

DIM, K, REG = 50, 3, 0.05


def make_problem(n: int, seed: int = 0, weights: str = "uniform"):
    """Weights (uniform, or uniform in [0.5, 1.5] normalised), the normalised dense cost
    and the same cost as a cloud."""
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((n, DIM))
    target = rng.standard_normal((n, DIM)) + 0.5
    cost = pot.dist(source, target)
    scale = 1.0 / cost.max()
    cost *= scale
    cloud = cot.PointCloudCost(source, target, scale=scale)
    if weights == "uniform":
        return np.full(n, 1 / n), np.full(n, 1 / n), cost, cloud
    a, b = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n)
    return a / a.sum(), b / b.sum(), cost, cloud


def marginal_error(plan: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return max(np.abs(plan.sum(1) - a).sum(), np.abs(plan.sum(0) - b).sum())


class PeakMemory:
    """Peak memory a block of code adds (MiB): RSS high-water mark on CPU, CUDA allocator on GPU.

    On Linux (glibc), free heap memory is handed back with ``malloc_trim``
    before the baseline is read, so memory freed by earlier runs and reused
    is counted.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")

    @staticmethod
    def _status(key: str) -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key):
                    return float(line.split()[1]) / 1024
        return float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated() / 2**20
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")                     # reset the high-water mark
            self.before = self._status("VmRSS:")
        except OSError:
            self.before = float("nan")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20 - self.before
        else:
            self.mib = self._status("VmHWM:") - self.before


def run_pot(a, b, cost, method):
    solve = pot.smooth.smooth_ot_semi_dual if method == "semi-dual" else pot.smooth.smooth_ot_dual
    # POT 0.9.7's projection_sparse_simplex prints a debug line per call: muted
    with (PeakMemory(torch.device("cpu")) as memory, warnings.catch_warnings(),
          contextlib.redirect_stdout(io.StringIO())):
        warnings.simplefilter("ignore")
        start = time.process_time()
        plan, log = solve(a, b, cost, REG, reg_type="sparsity_constrained", max_nz=K, log=True)
        seconds = time.process_time() - start
    return dict(time=seconds, memory=memory.mib, dual=-float(log["res"].fun),
                error=marginal_error(plan, a, b), nnz=int(np.count_nonzero(plan)),
                status=f"nit={log['res'].nit}")


def on_device(a, b, cost, device):
    """The problem's arrays (or the cloud) on ``device``: float32 tensors on CUDA."""
    if device.type != "cuda":
        return a, b, cost
    work = {"device": device, "dtype": torch.float32}
    tensors = [torch.tensor(x, **work) for x in (a, b)]
    if isinstance(cost, cot.PointCloudCost):
        return (*tensors, cot.PointCloudCost(cost.x.to(**work), cost.y.to(**work),
                                             scale=cost.scale))
    return (*tensors, torch.tensor(cost, **work))


def run_certopt(a, b, cost, method, device):
    a, b, cost = on_device(a, b, cost, device)
    if device.type == "cuda":
        cot.sparse(a, b, cost, K, reg=REG, method=method, max_iter=5)   # warm-up
    with PeakMemory(device) as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.process_time() if device.type == "cpu" else time.perf_counter()
        res = cot.sparse(a, b, cost, K, reg=REG, method=method, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.process_time() if device.type == "cpu" else time.perf_counter()) - start
    # one evaluation reads the cost matrix once; a cloud has none to read
    matrix_bytes = getattr(cost, "nbytes", None)
    return dict(time=seconds, memory=memory.mib, dual=res.dual_value, error=res.marginal_error,
                nnz=int(res.residuals["nnz"]), status=f"{res.status.value}/{res.n_iter}",
                bytes=matrix_bytes and matrix_bytes * res.n_iter)


def print_row(n, weights, method, name, row, pot_row, device):
    report(f"ot_sparse n={n} {weights} {method} {name}", row["time"],
           bytes_moved=row.get("bytes"), device="cpu" if name == "POT" else device)
    ratio = f"{pot_row['time'] / row['time']:.2f}" if pot_row and row is not pot_row else "-"
    print(f"{n:>6} {weights:>10} {method:>9} {name:>13} | {row['time']:>9.2f} {ratio:>7} | "
          f"{row['memory']:>9.1f} | {row['dual']:>14.9f} | {row['error']:>9.2e} | "
          f"{row['nnz']:>6} | {row['status']}", flush=True)


def solver_table(sizes, weight_kinds, methods, device, pot_max, with_cloud):
    header = (f"{'n':>6} {'weights':>10} {'method':>9} {'solver':>13} | {'CPU s':>9} "
              f"{'POT/it':>7} | {'peak MiB':>9} | {'dual value':>14} | {'L1 m.err':>9} | "
              f"{'nnz':>6} | status")
    print(header)
    print("-" * len(header))
    for n in sizes:
        for weights in weight_kinds:
            a, b, cost, cloud = make_problem(n, weights=weights)
            for method in methods:
                theirs = run_pot(a, b, cost, method) if n <= pot_max else None
                if theirs:
                    print_row(n, weights, method, "POT", theirs, theirs, device)
                print_row(n, weights, method, "certopt C",
                          run_certopt(a, b, cost, method, device), theirs, device)
                if with_cloud:
                    print_row(n, weights, method, "certopt cloud",
                              run_certopt(a, b, cloud, method, device), theirs, device)


def _per_call(fn, device, repeat) -> tuple[float, float]:
    """Median milliseconds of ``repeat`` calls and the peak MiB one call adds
    (after one warm-up call, which builds lazy copies)."""
    fn()
    with PeakMemory(device) as memory:
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3, memory.mib


def hot_loop_row(n: int, device: torch.device, repeat: int) -> list[tuple[float, float]]:
    """``(milliseconds, peak MiB)`` per Sinkhorn iteration and per sparse semi-dual
    evaluation (each: materialised, streamed on C, streamed on the cloud) at size ``n``."""
    eps = 0.01
    a, b, cost, cloud = make_problem(n)
    dense_problem = TransportProblem.from_inputs(*on_device(a, b, cost, device))
    cloud_problem = TransportProblem.from_inputs(*on_device(a, b, cloud, device))
    C = dense_problem.geometry.dense()
    g = torch.zeros_like(dense_problem.b)
    alpha = torch.zeros_like(dense_problem.a)

    def materialised_sinkhorn():
        f = -eps * torch.logsumexp((g.unsqueeze(0) - C) / eps, dim=1)
        return -eps * torch.logsumexp((f.unsqueeze(1) - C) / eps, dim=0)

    def streamed_sinkhorn(problem):
        f = -eps * logsumexp_pass(problem.geometry, g, eps, dim=1)
        return -eps * logsumexp_pass(problem.geometry, f, eps, dim=0)

    def materialised_sparse():        # the whole evaluation on a materialised alpha - C^T
        values, rows = top_k_last(alpha.unsqueeze(0) - C.T, K)
        masses, _ = project_sorted(values / REG, dense_problem.b)
        conjugate = (values * masses).sum() - 0.5 * REG * (masses * masses).sum()
        row_sums = torch.zeros_like(alpha).index_add_(0, rows.reshape(-1), masses.reshape(-1))
        return alpha @ dense_problem.a - conjugate, dense_problem.a - row_sums

    dense_duals = ColumnDuals(dense_problem, K, REG)
    cloud_duals = ColumnDuals(cloud_problem, K, REG)
    calls = [materialised_sinkhorn,
             lambda: streamed_sinkhorn(dense_problem),
             lambda: streamed_sinkhorn(cloud_problem),
             materialised_sparse,
             lambda: dense_duals.semi_dual(alpha),
             lambda: cloud_duals.semi_dual(alpha)]
    return [_per_call(call, device, repeat) for call in calls]


def hot_loop_table(sizes, device):
    """Milliseconds and peak MiB per Sinkhorn iteration and per sparse semi-dual evaluation."""
    print(f"per pass: median milliseconds of 5 to 50 calls / peak MiB one call adds; "
          f"'materialised' builds n x m temporaries, the others stream blocks of <= "
          f"{CPU_BLOCK_ENTRIES} costs on CPU (C: the solver's stored copy, and for the "
          f"sparse pass its transpose, are not counted)")
    names = ["sinkhorn materialised", "sinkhorn C", "sinkhorn cloud", "sparse materialised",
             "sparse C", "sparse cloud"]
    header = f"{'n':>6} | " + " | ".join(f"{name:>21}" for name in names)
    print(header)
    print("-" * len(header))
    for n in sizes:
        row = hot_loop_row(n, device, repeat=int(np.clip(10**8 // n**2, 5, 50)))
        print(f"{n:>6} | " + " | ".join(f"{ms:>10.1f} ms {mib:>6.1f} M" for ms, mib in row),
              flush=True)


def tie_instances():
    """The 96 rounded-cost instances: 2-D normal points, ``C.round()``, uniform weights,
    (n, m) from 8 x 6 to 100 x 80, 4 seeds, k = 2, 3, both methods."""
    for n, m in [(8, 6), (20, 15), (40, 30), (60, 50), (80, 60), (100, 80)]:
        for seed in range(4):
            rng = np.random.default_rng(seed)
            x, y = rng.standard_normal((n, 2)), rng.standard_normal((m, 2))
            cost = ((x[:, None] - y[None]) ** 2).sum(-1).round()
            uniform = np.full(n, 1 / n), np.full(m, 1 / m)
            for k in (2, 3):
                for method in ("semi-dual", "dual"):
                    yield (*uniform, cost, k, method)


def non_uniform_instances():
    """The 8 non-uniform instances: n = m = 250, 260, 280, 300 points in R^5, cost / max,
    weights uniform in [0.5, 1.5] normalised, k = 2, 3, the semi-dual."""
    for seed, n in enumerate([250, 260, 280, 300]):
        rng = np.random.default_rng(seed)
        x, y = rng.standard_normal((n, 5)), rng.standard_normal((n, 5))
        cost = ((x[:, None] - y[None]) ** 2).sum(-1)
        cost /= cost.max()
        a, b = rng.uniform(0.5, 1.5, n), rng.uniform(0.5, 1.5, n)
        for k in (2, 3):
            yield a / a.sum(), b / b.sum(), cost, k, "semi-dual"


def support_table() -> None:
    """``--supports``: how many of the instances a feasible k-sparse plan is found for
    (reg 0.1, default settings), CPU seconds per solve, the relative gap to the reported
    bound, the objective over exact OT's cost (a lower bound on the optimum) and on how
    many solves the quadratic-OT bound beat the sparse dual."""
    print("support search: reg 0.1, default settings; CPU seconds per solve")
    print("family       | k | OPTIMAL | CPU s mean  max | (obj - dual)/|dual| median  max "
          "| obj / exact OT median  max | quadratic bound won")
    for name, instances in [("ties", tie_instances()), ("non-uniform", non_uniform_instances())]:
        rows: dict[int, tuple[int, list, list, list, list]] = {}
        for a, b, cost, k, method in instances:
            solved, seconds, gaps, ratios, won = rows.setdefault(k, (0, [], [], [], []))
            start = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = cot.sparse(a, b, cost, k=k, reg=0.1, method=method)
            seconds.append(time.process_time() - start)
            won.append(res.residuals.get("bound_from_quadratic", 0.0))
            if res.status.value == "optimal":
                rows[k] = (solved + 1, seconds, gaps, ratios, won)
                gaps.append((res.objective - res.dual_value) / abs(res.dual_value))
                ratios.append(res.objective / pot.emd2(a, b, cost, numItermax=10**7))
        for k, (solved, seconds, gaps, ratios, won) in rows.items():
            gap = f"{np.median(gaps):27.3g} {np.max(gaps):6.3g}" if gaps else f"{'-':>34}"
            ratio = f"{np.median(ratios):21.3f} {np.max(ratios):6.3f}" if ratios else f"{'-':>28}"
            print(f"{name:12s} | {k} | {solved:>3}/{len(seconds):<3} | {np.mean(seconds):9.2f} "
                  f"{np.max(seconds):5.2f} | {gap} | {ratio} | {int(sum(won))}/{len(won)}",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="n = 300 only: under a minute")
    parser.add_argument("--large", action="store_true", help="add n = 5000 (POT: minutes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pot-max", type=int, default=2000, help="largest n POT runs on")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--methods", default="semi-dual,dual")
    parser.add_argument("--weights", default="uniform,nonuniform",
                        help="uniform and/or nonuniform ([0.5, 1.5], normalised)")
    parser.add_argument("--cloud", action="store_true",
                        help="also solve on the point cloud (cost never stored)")
    parser.add_argument("--sizes", help="comma-separated n to run instead, e.g. 2000,5000")
    parser.add_argument("--hot-loops", action="store_true",
                        help="time one pass of each hot loop instead of whole solves")
    parser.add_argument("--supports", action="store_true",
                        help="the rounded-cost and non-uniform small-k families instead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:      # the same on every device, so that make gpu-check pairs the figures
        sizes = [300]
    elif device.type == "cuda":
        sizes = [2000, 5000, 10000, 20000]
    else:
        sizes = [2000] + ([5000] if args.large else [])
    if args.sizes:
        sizes = [int(n) for n in args.sizes.split(",")]
    if args.supports:
        support_table()
        return
    print(f"sparse OT, k={K}, reg={REG}, d={DIM}, device={device}, "
          f"torch threads={torch.get_num_threads()}")
    if args.hot_loops:
        hot_loop_table(sizes, device)
    else:
        solver_table(sizes, args.weights.split(","), args.methods.split(","), device,
                     args.pot_max, args.cloud)


if __name__ == "__main__":
    main()
