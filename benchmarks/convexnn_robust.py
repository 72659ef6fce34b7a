"""Robust convex training (section 7): robust ADMM vs cvxpy + Clarabel, accuracy and time.

Scoreboard: small synthetic instances (targets x0 x1 + 0.3 x2 + 0.1, signs
for hinge), hinge and squared loss, eps 0 and 0.1, default SolverOptions
(max_iter 10000, tol 1e-6).  A row passes when the ADMM returns OPTIMAL
(certified gap <= tol) with a certified objective at most 1e-4 relative above
Clarabel's (it may be below: the certified objective is sound for any network,
and a network leaving the robust cones can beat the cone program's optimum;
column "cone" is its cone violation).  Then the breast-cancer program
of examples/adversarial_convex_training.py (standardised, n train, d = 31
with the bias, P = 20, lam = 1e-3, hinge).  Times are CPU seconds
(time.process_time; the machine may be shared); cvxpy's include its
compilation.

Last, two moons (the case of issue #17): PGD test accuracy and certified worst-case
training hinge loss of the standard network and of robust ones trained at eps in
0.02, 0.05, 0.1 (``--moons-only`` runs just that table).

Readings: benchmarks/RESULTS.md.

    python benchmarks/convexnn_robust.py --quick
    python benchmarks/convexnn_robust.py --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, make_moons
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from certopt.convexnn import ConvexReLUClassifier
from certopt.convexnn.attack import pgd
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.robust import certified_margins, fit_robust

MOONS_EPS = (0.02, 0.05, 0.1)


def synthetic(seed: int, loss: str, n: int, d: int, patterns: int) -> ConvexReLUProblem:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    target = X[:, 0] * X[:, 1] + 0.1 + (0.3 * X[:, 2] if d > 2 else 0.0)
    y = np.sign(target) if loss == "hinge" else target
    return ConvexReLUProblem.from_data(X, y, lam=1e-2, loss=loss, n_patterns=patterns,
                                       random_state=seed)


def breast_cancer(n_train: int) -> ConvexReLUProblem:
    data = load_breast_cancer()
    X, _, y, _ = train_test_split(data.data, data.target, train_size=n_train, random_state=0,
                                  stratify=data.target)
    X = StandardScaler().fit(X).transform(X)
    return ConvexReLUProblem.from_data(X, np.where(y == 1, 1.0, -1.0), lam=1e-3, loss="hinge",
                                       n_patterns=20, random_state=0)


def certified_hinge(estimator: ConvexReLUClassifier, X: np.ndarray, y: np.ndarray,
                    eps: float) -> float:
    """Certified worst-case mean hinge loss over the ell_inf balls of radius eps (sound
    output bounds of :func:`certified_margins`, valid for any network)."""
    X_aug = torch.cat([torch.from_numpy(X), torch.ones(len(X), 1, dtype=torch.float64)], 1)
    features = torch.ones(X_aug.shape[1], dtype=torch.bool)
    features[-1] = False
    margins = certified_margins(X_aug, torch.from_numpy(np.where(y == 1, 1.0, -1.0)),
                                torch.from_numpy(estimator.hidden_weights_),
                                torch.from_numpy(estimator.output_weights_[:, 0]), eps,
                                features)
    return float(torch.relu(1.0 - margins).mean())


def two_moons() -> None:
    """Standard vs robust training on two moons (noise 0.1, 300 points, hinge, lam 1e-3,
    80 patterns): PGD test accuracy and certified worst-case training hinge loss at
    eps in MOONS_EPS, for the standard network and one robust network per training eps."""
    X, y = make_moons(300, noise=0.1, random_state=0)
    X_test, y_test = make_moons(1000, noise=0.1, random_state=1)
    settings = {"lam": 1e-3, "n_patterns": 80, "random_state": 0}
    models = {"standard": ConvexReLUClassifier(**settings).fit(X, y)}
    for eps in MOONS_EPS:
        models[f"robust {eps:g}"] = ConvexReLUClassifier(adversarial_eps=eps, **settings).fit(X, y)
    print("two moons: PGD test accuracy (50 steps, 2 restarts) / certified worst-case "
          "training hinge loss, at eps")
    print(f"{'model':<12} {'clean':>6} " + " ".join(f"{'eps ' + format(e, 'g'):>15}"
                                                     for e in MOONS_EPS))
    for name, estimator in models.items():
        net = estimator.to_torch()
        cells = []
        for eps in MOONS_EPS:
            attacked = pgd(net, X_test, np.where(y_test == 1, 1.0, -1.0), eps, steps=50,
                           restarts=2, random_state=0)
            cells.append(f"{attacked.accuracy:>6.3f} / {certified_hinge(estimator, X, y, eps):.4f}")
        print(f"{name:<12} {estimator.score(X_test, y_test):>6.3f} " + " ".join(cells))


def compare(name: str, problem: ConvexReLUProblem, eps: float, options: SolverOptions) -> bool:
    """Solve with both solvers, print one row, return whether the ADMM passed."""
    start = time.process_time()
    reference = fit_robust(problem, eps, solver="cvxpy")
    clarabel = time.process_time() - start
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_robust(problem, eps, solver="admm", options=options)
    seconds = time.process_time() - start
    relative = (result.objective - reference.objective) / abs(reference.objective)
    passed = result.status.name == "OPTIMAL" and relative <= 1e-4   # lower: certified better
    print(f"{name:<28} {eps:>4.2f} {result.status.name:<9} {result.n_iter:>6} "
          f"{relative:>+9.1e} {result.residuals['robust_cone']:>8.1e} {result.gap:>8.1e} "
          f"{seconds:>7.2f} {clarabel:>7.2f} {seconds / clarabel:>6.2f} "
          f"{'pass' if passed else 'FAIL'}", flush=True)
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny scoreboard, one real case")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--moons-only", action="store_true",
                        help="only the two-moons table (standard vs robust, PGD and certified)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    options = SolverOptions()
    print(f"{'problem':<28} {'eps':>4} {'status':<9} {'iter':>6} {'rel obj':>9} {'cone':>8} "
          f"{'gap':>8} {'admm s':>7} {'cvx s':>7} {'ratio':>6}")
    if args.moons_only:
        two_moons()
        return
    sizes, seeds = ((20, 2, 6), (2, 3)) if args.quick else ((30, 3, 10), (0, 1))
    passed = []
    for seed, loss, eps in itertools.product(seeds, ("hinge", "squared"), (0.0, 0.1)):
        problem = synthetic(seed, loss, *sizes)
        passed.append(compare(f"{loss} n={sizes[0]} seed={seed}", problem, eps, options))
    print(f"scoreboard: {sum(passed)} of {len(passed)} certified within 1e-4 of Clarabel")
    if not args.quick:   # other seeds and radii, not used for tuning
        passed = [compare(f"{loss} n=30 seed={seed}", synthetic(seed, loss, 30, 3, 10), eps,
                          options)
                  for seed, loss, eps in itertools.product((6, 7), ("hinge", "squared"),
                                                           (0.05, 0.2))]
        print(f"other seeds and radii: {sum(passed)} of {len(passed)} certified")
    cases = [(250, 0.1)] if args.quick else [(250, 0.1), (398, 0.1), (250, 0.05), (250, 0.03)]
    for n_train, eps in cases:
        compare(f"breast cancer n={n_train}", breast_cancer(n_train), eps, options)
    two_moons()


if __name__ == "__main__":
    main()
