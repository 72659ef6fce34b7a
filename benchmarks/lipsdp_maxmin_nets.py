"""Certified Lipschitz bounds of the published MaxMin MNIST nets (plain and residual).

For every ``.mat`` file of ``../shared/data/maxmin_nets`` (plain ``weights_*``
and residual ``resweights_*``, built by :func:`certopt.sdp.load_maxmin_mat`) and
both norms, this prints: the naive product bound, the ``method="fast"``
closed-form bound and its CPU time, the default ``method="auto"`` certified
bound and its CPU time (solve + float64 verification, not the attack), and the
attack lower bound.  ℓ∞ is for the logit of label 8 (row 8 of the last
matrix), as in the paper; ℓ2 for the whole output.  Each net runs in a
forked process under a CPU-time cap (``--cap``); a net over the cap is
reported as skipped.

    python benchmarks/lipsdp_maxmin_nets.py --quick          # three small nets, ~1 minute
    python benchmarks/lipsdp_maxmin_nets.py --threads 1 --cap 300
    python benchmarks/lipsdp_maxmin_nets.py --nets weights_2_16,resweights_5_32 --device cuda

ECLipsE-Fast (the ``eclipse-nn`` package) handles elementwise slope-restricted
activations only, not MaxMin; ``benchmarks/lipsdp_scaling.py --eclipse`` compares
it with ``method="fast"`` on ReLU nets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch  # imported once, before forking the solves
from _capped import run_capped
from _report import report
from threadpoolctl import threadpool_limits

import certopt.sdp  # noqa: F401

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "maxmin_nets"
QUICK = ("weights_2_16", "weights_linf_2fc_16", "resweights_5_32")


def _certify(name: str, norm: str, device: str, connection) -> None:
    """One net and norm in a forked child; sends a row dict through ``connection``."""
    from certopt.sdp import lipschitz_bound, load_maxmin_mat

    try:
        net = load_maxmin_mat(DATA / f"{name}.mat", output_rows=[8] if norm == "inf" else None)
        row: dict = {}
        for method, options in (("fast", {}), ("auto", {"device": device})):
            start = time.process_time()
            result = lipschitz_bound(net, norm=norm, method=method, attack=False, **options)
            row[method] = result.bound
            row[f"{method}_cpu"] = time.process_time() - start
            row[f"{method}_verified"] = result.verified
            row["naive"], row["n_iter"] = result.naive, result.n_iter
        row["lower"] = lipschitz_bound(net, norm=norm, method="naive").lower
        connection.send(row)
    except Exception as exc:  # reported as a skipped row
        connection.send({"skipped": f"failed: {type(exc).__name__}: {str(exc)[:60]}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--nets", type=lambda s: s.split(","),
                        help="comma-separated file names without .mat (default: all)")
    parser.add_argument("--norms", type=lambda s: s.split(","), default=["2", "inf"])
    parser.add_argument("--cap", type=float, default=300.0,
                        help="wall-clock seconds per net and norm (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="device of the first-order solver")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no data: {DATA} (the published MaxMin nets) is missing")
    torch.set_num_threads(args.threads)
    names = args.nets or (list(QUICK) if args.quick else
                          sorted(p.stem for p in DATA.glob("*.mat")))
    header = (f"{'net':<22} {'norm':>4} {'naive':>9} {'fast':>9} {'fast s':>7} "
              f"{'certified':>9} {'auto s':>7} {'iter':>5} {'lower':>9} {'cert/naive':>10}")
    print(f"MaxMin nets, {args.threads} thread(s), first-order on {args.device}; CPU seconds")
    print(header)
    print("-" * len(header))
    with threadpool_limits(args.threads):
        for name in names:
            for norm in args.norms:
                row = run_capped(_certify, (name, norm, args.device), args.cap)
                if "skipped" in row:
                    print(f"{name:<22} {norm:>4} {row['skipped']}")
                else:
                    flags = "" if row["fast_verified"] and row["auto_verified"] else " UNVERIFIED"
                    print(f"{name:<22} {norm:>4} {row['naive']:>9.4g} {row['fast']:>9.4g} "
                          f"{row['fast_cpu']:>7.2f} {row['auto']:>9.4g} {row['auto_cpu']:>7.2f} "
                          f"{row['n_iter']:>5} {row['lower']:>9.4g} "
                          f"{row['auto'] / row['naive']:>10.3f}{flags}")
                    report(f"lipsdp {name} norm={norm} fast", row["fast_cpu"], device="cpu")
                    report(f"lipsdp {name} norm={norm} auto", row["auto_cpu"],
                           device=args.device)
                sys.stdout.flush()


if __name__ == "__main__":
    main()
