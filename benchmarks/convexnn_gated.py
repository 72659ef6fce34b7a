"""Gated-ReLU classifier, hinge loss: the interior point vs FISTA through smoothings.

``GatedReLUClassifier()`` at its defaults (lam 1e-3, 100 sampled gates, tol
1e-4) on breast cancer (standardised), two moons (n = 2000, noise 0.2) and a
random linear-teacher problem (n = 2000, d = 20), once with the gated program
solved by cvxpy + Clarabel (``gated.GATED_IP_MAX_SIZE``) and once by FISTA
through narrowing Moreau smoothings of the hinge.  Prints the status, the
certified relative gap, F, the iterations and the CPU seconds
(``time.process_time``, one thread).  Readings: benchmarks/RESULTS.md.

    python benchmarks/convexnn_gated.py --quick
    python benchmarks/convexnn_gated.py
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, make_moons

from certopt.convexnn import GatedReLUClassifier, gated


def _datasets(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    X, y = load_breast_cancer(return_X_y=True)
    data = {"breast cancer": ((X - X.mean(0)) / X.std(0), y)}
    if not quick:
        data["two moons n=2000"] = make_moons(2000, noise=0.2, random_state=0)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((2000, 20))
        data["linear teacher n=2000 d=20"] = (
            X, np.sign(X @ rng.standard_normal(20) + 0.3 * rng.standard_normal(2000)))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="breast cancer only")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, as every benchmark here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default_sizes = dict(gated.GATED_IP_MAX_SIZE)
    print(f"{'data':28s} {'solver':6s} {'n P d':>9s} {'status':9s} {'gap':>9s} "
          f"{'F':>12s} {'iter':>6s} {'CPU s':>7s}")
    for name, (X, y) in _datasets(args.quick).items():
        for solver, size in (("ip", default_sizes["hinge"]), ("fista", 0)):
            gated.GATED_IP_MAX_SIZE["hinge"] = size
            start = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # FISTA's ConvergenceWarning: the table says it
                est = GatedReLUClassifier(random_state=0).fit(X, y)
            seconds = time.process_time() - start
            cert = est.certificate_
            size_npd = X.shape[0] * est.gates_.shape[0] * est.gates_.shape[1]
            print(f"{name:28s} {solver:6s} {size_npd:9d} {cert.status.value:9s} "
                  f"{cert.gap / abs(cert.bound):9.2e} {cert.objective:12.8f} "
                  f"{cert.n_iter:6d} {seconds:7.2f}", flush=True)
    gated.GATED_IP_MAX_SIZE.update(default_sizes)


if __name__ == "__main__":
    main()
