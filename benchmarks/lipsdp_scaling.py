"""How LipSDP scales with width: 20-w-w-10 ReLU nets, w = 32 … 1024.

For each width and each method in :data:`METHODS` this runs
``lipschitz_bound(net, method=..., attack=False)`` (solve + float64
verification) in a fresh forked process, with a wall-clock cap per solve,
and reports the time, the worker's peak memory above its baseline, the
certified bound and the ratios against cvxpy+SCS (what a user would otherwise
run).  A method that hits the cap (or would need more memory than
``--max-memory-gb``) is skipped for all larger widths.

    python benchmarks/lipsdp_scaling.py            # widths 32 … 1024, 300 s cap
    python benchmarks/lipsdp_scaling.py --quick    # small widths, < 1 minute

The closed-form ``fast`` bound and the first-order solver (``--device cuda`` on a GPU)
are the last methods;
``--input-dim 784 --widths 1024`` gives the 784-1024-1024-10 net,
``--max-iter`` caps its iterations (the row then says ``max_iter``; its bound
is still verified), ``--maxmin-nets`` certifies the published MaxMin nets
instead and ``--eclipse`` compares ``fast`` with ECLipsE-Fast (the optional
``eclipse-nn`` package; skipped with a message when it is absent) on the
784-w-w-10 nets of ``--widths`` and 784-128x8-10, both in this process, CPU
seconds, best of ``--repeat``.  Rows measured on 2 shared CPU cores with ``--threads 1``:

    python benchmarks/lipsdp_scaling.py --threads 1 --methods cvxpy+SCS,first-order \
        --widths 32,64,128,256,512,1024 --cap 600
    python benchmarks/lipsdp_scaling.py --threads 1 --methods first-order \
        --input-dim 784 --widths 256,512,1024

Adding a method is one more :class:`Method`
entry: a name, the keyword arguments for ``lipschitz_bound`` and optionally a
function returning a reason to skip a width.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cvxpy as cp
import torch  # imported once, before forking the solves
from _capped import run_capped
from _report import report
from threadpoolctl import threadpool_limits
from torch import nn

import certopt.sdp  # noqa: F401

INPUT, OUTPUT = 20, 10
SEED = 0


@dataclass(frozen=True)
class Method:
    """One row family of the table."""

    name: str
    options: dict = field(default_factory=dict)
    skip: Callable[[int, argparse.Namespace], str | None] = lambda width, args: None


def _state_dim(width: int) -> int:
    return INPUT + 2 * width


def _clarabel_memory(width: int, args: argparse.Namespace) -> str | None:
    """Clarabel factors a dense KKT block of order N(N+1)/2 for the PSD cone."""
    n = _state_dim(width)
    gigabytes = (n * (n + 1) / 2) ** 2 * 8 / 1e9
    if gigabytes > args.max_memory_gb:
        return f"needs ~{gigabytes:.0f} GB"
    return None


METHODS: list[Method] = [
    Method("cvxpy+SCS", {"method": "lipsdp", "solver": "SCS"}),
    Method("cvxpy+Clarabel", {"method": "lipsdp", "solver": "CLARABEL"}, _clarabel_memory),
]
if "MOSEK" in cp.installed_solvers():
    METHODS.append(Method("cvxpy+MOSEK", {"method": "lipsdp", "solver": "MOSEK"},
                          _clarabel_memory))
METHODS.append(Method("fast", {"method": "fast"}))
METHODS.append(Method("first-order", {"method": "first-order"}))
ANCHOR = "cvxpy+SCS"


def _network(width: int) -> nn.Sequential:
    torch.manual_seed(SEED + width)
    return nn.Sequential(nn.Linear(INPUT, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, OUTPUT))


def _solve(options: dict, width: int, connection) -> None:
    """One solve in a forked child; sends a result dict through ``connection``."""
    from certopt.sdp import lipschitz_bound

    try:
        net = _network(width)
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.process_time()
        result = lipschitz_bound(net, attack=False, **options)
        elapsed = time.process_time() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        connection.send({"time": elapsed, "memory_mb": (peak - baseline) / 1024,
                         "bound": result.bound, "naive": result.naive,
                         "verified": result.verified, "status": result.status.value,
                         "n_iter": result.n_iter})
    except Exception as exc:  # reported as a skipped row
        connection.send({"skipped": f"failed: {type(exc).__name__}: {str(exc)[:50]}"})


def main() -> None:
    global INPUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small widths, < 1 minute")
    parser.add_argument("--widths", type=lambda s: [int(w) for w in s.split(",")])
    parser.add_argument("--cap", type=float, help="seconds per solve (default 300; quick 15)")
    parser.add_argument("--max-memory-gb", type=float, default=8.0)
    parser.add_argument("--methods", type=lambda s: s.split(","),
                        help="comma-separated subset of the method names, e.g. first-order")
    parser.add_argument("--device", default="cpu", help="device of the first-order solver")
    parser.add_argument("--threads", type=int,
                        help="torch and BLAS (numpy/scipy/cvxpy) CPU threads (default: "
                             "theirs; --quick: 1, as tiny matrices only pay thread "
                             "hand-offs on a loaded machine)")
    parser.add_argument("--max-iter", type=int,
                        help="iteration budget of the first-order solver (default: its own); "
                             "a row that hits it reports status max_iter, still verified")
    parser.add_argument("--input-dim", type=int, default=INPUT,
                        help="input size (784: the 784-w-w-10 MNIST-sized nets)")
    parser.add_argument("--eclipse", action="store_true",
                        help="instead: method='fast' against ECLipsE-Fast (eclipse-nn) on "
                             "784-w-w-10 (w in --widths) and 784-128x8-10")
    parser.add_argument("--repeat", type=int, default=3, help="--eclipse: best of this many")
    parser.add_argument("--maxmin-nets", nargs="*", metavar="MAT",
                        help="instead: certify the real MaxMin nets (.mat files; no names: "
                             "the small ones in ../shared/data/maxmin_nets)")
    args = parser.parse_args()
    if args.maxmin_nets is not None:
        _maxmin_table(args.maxmin_nets, args.device)
        return
    INPUT = args.input_dim
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
        threadpool_limits(args.threads or 1)  # OpenBLAS spin-waits badly on a shared machine
    if args.eclipse:
        _eclipse_table(args.widths or ([64, 128] if args.quick else [64, 128, 256, 512, 1024]),
                       args.repeat)
        return
    METHODS[-1].options["device"] = args.device
    if args.max_iter:
        METHODS[-1].options["max_iter"] = args.max_iter
    widths = args.widths or ([8, 16, 24] if args.quick else [32, 64, 100, 128, 256, 512, 1024])
    cap = args.cap or (15.0 if args.quick else 300.0)

    print(f"LipSDP on {INPUT}-w-w-{OUTPUT} ReLU nets (solve + float64 verification), "
          f"cap {cap:.0f} s per solve, first-order on {args.device}, "
          f"{torch.get_num_threads()} torch thread(s)")
    header = (f"{'width':>6} {'N':>6}  {'method':<22} {'CPU s':>9} {'peak MB':>9} "
              f"{'bound':>10} {'bound/naive':>11} {'verified':>8} {'iters':>6} {'status':>8} "
              f"{'time/SCS':>9} {'bound/SCS':>9}")
    print(header)
    print("-" * len(header))
    given_up: dict[str, str] = {}
    for width in widths:
        rows = {}
        for method in METHODS:
            if args.methods and method.name not in args.methods:
                continue
            reason = given_up.get(method.name) or method.skip(width, args)
            row = ({"skipped": reason} if reason
                   else run_capped(_solve, (method.options, width), cap))
            if "skipped" in row and not reason:
                given_up[method.name] = f"skipped ({row['skipped']} at w={width})"
            rows[method.name] = row
        anchor = rows.get(ANCHOR, {})
        for name, row in rows.items():
            prefix = f"{width:>6} {_state_dim(width):>6}  {name:<22}"
            if "skipped" in row:
                print(f"{prefix} {row['skipped']}")
                continue
            report(f"lipsdp_scaling width={width} {name}", row["time"],
                   device=args.device if name == "first-order" else "cpu")
            ratio = (f"{row['time'] / anchor['time']:>9.2f}" if "time" in anchor else f"{'-':>9}")
            bound_ratio = (f"{row['bound'] / anchor['bound']:>9.5f}" if "bound" in anchor
                           else f"{'-':>9}")
            print(f"{prefix} {row['time']:>9.2f} {row['memory_mb']:>9.0f} {row['bound']:>10.5g} "
                  f"{row['bound'] / row['naive']:>11.4f} {str(row['verified']):>8} "
                  f"{row['n_iter']:>6} {row['status']:>8} {ratio} {bound_ratio}")
        sys.stdout.flush()


def _relu_chain(sizes: list[int], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _best_cpu_time(call: Callable[[], object], repeat: int) -> tuple[object, float]:
    """``call()``'s value and its smallest CPU time over ``repeat`` runs (after one warm-up)."""
    value, best = call(), math.inf
    for _ in range(repeat):
        start = time.process_time()
        value = call()
        best = min(best, time.process_time() - start)
    return value, best


def _eclipse_table(widths: list[int], repeat: int) -> None:
    """``method="fast"`` (verified, compile and naive bound included) against ECLipsE-Fast on
    784-w-w-10 and 784-128x8-10 ReLU nets (PyTorch default init, seed = w), one process."""
    from certopt.sdp import lipschitz_bound

    try:
        from eclipse_nn import LipConstEstimator
    except ImportError:
        print("ECLipsE-Fast: skipped (the eclipse-nn package is not installed: make bench-deps)")
        return
    nets = [[784, w, w, 10] for w in widths] + [[784] + [128] * 8 + [10]]
    header = (f"{'net':<18} {'naive':>9} {'ECLipsE-Fast':>12} {'CPU s':>8} {'fast':>9} "
              f"{'CPU s':>8} {'fast/ECL':>9} {'time ratio':>10}")
    print(f"fast vs ECLipsE-Fast, {torch.get_num_threads()} torch thread(s), CPU seconds, "
          f"best of {repeat}")
    print(header)
    print("-" * len(header))
    for sizes in nets:
        net = _relu_chain(sizes, sizes[1])
        estimator = LipConstEstimator(model=net)
        eclipse, eclipse_cpu = _best_cpu_time(
            lambda e=estimator: float(e.estimate(method="ECLipsE_Fast")), repeat)
        ours, ours_cpu = _best_cpu_time(
            lambda net=net: lipschitz_bound(net, method="fast", attack=False), repeat)
        name = "784-128x8-10" if len(sizes) > 4 else "-".join(map(str, sizes))
        flag = "" if ours.verified else " UNVERIFIED"
        print(f"{name:<18} {ours.naive:>9.5g} {eclipse:>12.6g} {eclipse_cpu:>8.3f} "
              f"{ours.bound:>9.6g} {ours_cpu:>8.3f} {ours.bound / eclipse:>9.4f} "
              f"{ours_cpu / eclipse_cpu:>10.2f}{flag}")
        report(f"lipsdp_scaling eclipse {name} fast", ours_cpu, device="cpu")
        sys.stdout.flush()


MAXMIN_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "maxmin_nets"
SMALL_MAXMIN_NETS = ("weights_2_16.mat", "weights_2_64.mat", "weights_5_32.mat",
                     "weights_8_64.mat", "resweights_5_32.mat")


def _maxmin_table(paths: list[str], device: str) -> None:
    """ℓ2 certificates of the published MaxMin nets: naive, first-order bound, lower, time
    (``benchmarks/lipsdp_maxmin_nets.py`` has the full table, residual nets and ℓ∞)."""
    from certopt.sdp import lipschitz_bound, load_maxmin_mat

    files = [Path(p) for p in paths] or [MAXMIN_DATA / n for n in SMALL_MAXMIN_NETS]
    header = (f"{'net':<24} {'naive':>9} {'first-order':>11} {'lower':>9} {'bound/naive':>11} "
              f"{'verified':>8} {'time s':>8}")
    print(f"MaxMin nets (MNIST), l2, first-order on {device}")
    print(header)
    print("-" * len(header))
    for path in files:
        start = time.perf_counter()
        result = lipschitz_bound(load_maxmin_mat(path), method="first-order", device=device)
        elapsed = time.perf_counter() - start
        print(f"{path.name:<24} {result.naive:>9.4g} {result.bound:>11.5g} {result.lower:>9.5g} "
              f"{result.bound / result.naive:>11.4f} {str(result.verified):>8} {elapsed:>8.1f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
