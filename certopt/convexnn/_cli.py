"""``certopt train`` and the convexnn demo (plug-in of :mod:`certopt.cli`)."""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from certopt.convexnn.estimators import ConvexReLUClassifier, ConvexReLURegressor
from certopt.convexnn.solvers import SOLVERS
from certopt.core.errors import ConvergenceWarning, InputValueError


def _n_patterns(text: str) -> int | str:
    return text if text == "all" else int(text)


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``certopt train data.csv --target COL [--classify] ...``."""
    train = subparsers.add_parser(
        "train", help="train a two-layer ReLU network globally (convex program + certificate)")
    train.add_argument("data", help="CSV file with a header row; numeric columns")
    train.add_argument("--target", required=True, help="name of the target column")
    train.add_argument("--classify", action="store_true",
                       help="classification (labels of the target column) instead of regression")
    train.add_argument("--loss", default="hinge", choices=["hinge", "logistic", "squared"],
                       help="classification loss (default hinge)")
    train.add_argument("--lam", type=float, default=1e-3, help="regularisation (default 1e-3)")
    train.add_argument("--n-patterns", type=_n_patterns, default=100,
                       help="number of sampled activation patterns, or 'all' (default 100)")
    train.add_argument("--solver", default="auto", choices=sorted(SOLVERS),
                       help="default auto: interior point for small programs, else ADMM")
    train.add_argument("--max-iter", type=int, default=10_000)
    train.add_argument("--tol", type=float, default=1e-4,
                       help="certified relative gap to stop at (default 1e-4)")
    train.add_argument("--device", default=None, help="torch device, e.g. cuda")
    train.add_argument("--seed", type=int, default=0, help="random_state of the patterns")
    train.set_defaults(handler=_train)


def _read_csv(path: str, target: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, target column and feature names of a CSV file with a header."""
    try:
        with open(path, encoding="utf-8") as handle:
            names = [name.strip() for name in handle.readline().strip().split(",")]
            rows = np.loadtxt(handle, delimiter=",", ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputValueError(f"data: cannot read {path!r} as a numeric CSV file: {exc}") from exc
    if target not in names:
        raise InputValueError(f"--target: column {target!r} not in {names}")
    column = names.index(target)
    features = [n for i, n in enumerate(names) if i != column]
    return np.delete(rows, column, axis=1), rows[:, column], features


def _train(args: argparse.Namespace) -> int:
    X, y, features = _read_csv(args.data, args.target)
    common = {"lam": args.lam, "n_patterns": args.n_patterns, "solver": args.solver,
              "max_iter": args.max_iter, "tol": args.tol, "device": args.device,
              "random_state": args.seed, "verbose": args.verbose}
    if args.classify:
        estimator = ConvexReLUClassifier(loss=args.loss, **common)
    else:
        estimator = ConvexReLURegressor(**common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the status line says it
        estimator.fit(X, y)
    print(f"trained on {X.shape[0]} samples, {len(features)} features: {', '.join(features)}")
    print(f"neurons: {estimator.n_neurons_}   training score: {estimator.score(X, y):.4f}")
    print(estimator.certificate_.summary())
    return 0


def demo(plot: bool) -> None:
    """Globally optimal training on breast cancer (2 features, every pattern), certified."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    columns = [0, 1]  # mean radius, mean texture
    X_all = data.data[:, columns]
    X_all = (X_all - X_all.mean(axis=0)) / X_all.std(axis=0)
    y_all = data.target
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.choice(np.flatnonzero(y_all == c), 12, replace=False)
                            for c in (0, 1)])
    start = time.perf_counter()
    est = ConvexReLUClassifier(loss="hinge", lam=0.05, n_patterns="all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the status line says it
        est.fit(X_all[train], y_all[train])
    cert = est.certificate_
    names = ", ".join(data.feature_names[c] for c in columns)
    print(f"   breast cancer ({names}), {train.size} training points, "
          f"{cert.n_patterns} activation patterns (all: global={cert.is_global})")
    print(f"   objective F      {cert.objective:.6f}   (network with {est.n_neurons_} neurons)")
    print(f"   lower bound      {cert.lower_bound:.6f}   (no ReLU network of any width does "
          "better)")
    print(f"   certified gap    {cert.gap:.2e}   status {cert.status}, solver {cert.solver} "
          f"(default 'auto'), {time.perf_counter() - start:.1f} s")
    print(f"   accuracy         train {est.score(X_all[train], y_all[train]):.3f}, "
          f"all {y_all.size} points {est.score(X_all, y_all):.3f}")
    if plot:
        _plot(est, X_all, y_all, train)


def _plot(est: ConvexReLUClassifier, X: np.ndarray, y: np.ndarray, train: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-3, 3, 200)
    xx, yy = np.meshgrid(grid, grid)
    values = est.decision_function(np.c_[xx.ravel(), yy.ravel()]).reshape(xx.shape)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.contourf(xx, yy, values > 0, alpha=0.2, cmap="coolwarm")
    ax.contour(xx, yy, values, levels=[0.0], colors="k")
    ax.scatter(X[:, 0], X[:, 1], c=y, s=4, cmap="coolwarm", alpha=0.3)
    ax.scatter(X[train, 0], X[train, 1], c=y[train], s=30, cmap="coolwarm", edgecolors="k")
    ax.set_title(f"global ReLU net, gap {est.certificate_.gap:.1e}")
    fig.savefig("convexnn_demo.png", dpi=120)
    plt.close(fig)
    print("   saved convexnn_demo.png")
