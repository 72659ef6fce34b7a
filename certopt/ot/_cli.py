"""``certopt ot SOURCE.npy TARGET.npy``: sparse optimal transport between two point clouds.

SOURCE and TARGET are ``.npy`` arrays of points, shapes ``(n, d)`` and
``(m, d)`` (uniform weights).  The cost is the squared Euclidean distance,
computed block by block from the points (never stored as a matrix);
``--k`` bounds the nonzeros per target (plan column), ``--reg`` is the
quadratic regularisation.  The answer's certificate is printed: dual value
(lower bound), objective, gap, marginal errors, nonzeros, status.
"""

from __future__ import annotations

import argparse
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch

from certopt.core.arrays import as_tensor
from certopt.core.errors import ConvergenceWarning, InputValueError
from certopt.ot.geometry import PointCloudCost
from certopt.ot.result import TransportResult
from certopt.ot.sparse import DUAL_METHODS, sparse


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``certopt ot``."""
    parser = subparsers.add_parser(
        "ot", help="sparse optimal transport between two point clouds, with its certificate",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SOURCE.npy", type=Path, help="(n, d) source points")
    parser.add_argument("target", metavar="TARGET.npy", type=Path, help="(m, d) target points")
    parser.add_argument("--k", type=int, default=3, help="max nonzeros per plan column (3)")
    parser.add_argument("--reg", type=float, default=0.1, help="quadratic regularisation (0.1)")
    parser.add_argument("--method", choices=DUAL_METHODS, default="semi-dual")
    parser.add_argument("--repair", action=argparse.BooleanOptionalAction, default=None,
                        help="re-solve on the support found so the marginals hold exactly "
                             "(default: only when the dual solve misses the tolerance)")
    parser.add_argument("--max-iter", type=int, default=2000)
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="save a picture of the plan")
    parser.set_defaults(handler=_run)


def _load_points(path: Path, name: str) -> torch.Tensor:
    try:
        points = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputValueError(f"{name}: cannot read {path} as a .npy array ({exc})") from exc
    points = as_tensor(points, name, dtype=torch.float64)
    if points.ndim == 1:
        points = points.unsqueeze(1)
    if points.ndim != 2:
        raise InputValueError(f"{name}: expected an (n, d) array of points, got shape "
                              f"{tuple(points.shape)}")
    return points


def _check_plot_path(path: Path) -> None:
    """Refuse a ``--plot`` file that cannot be written, before the solve."""
    if importlib.util.find_spec("matplotlib") is None:
        raise InputValueError("--plot: needs matplotlib (pip install 'certopt[plot]')")
    if not path.parent.is_dir():
        raise InputValueError(f"--plot: directory {path.parent} does not exist")


def _run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        _check_plot_path(args.plot)
    source = _load_points(args.source, "SOURCE")
    target = _load_points(args.target, "TARGET")
    if source.shape[1] != target.shape[1]:
        raise InputValueError(f"SOURCE, TARGET: points of different dimensions "
                              f"{source.shape[1]} and {target.shape[1]}")
    cost = PointCloudCost(source.numpy(), target.numpy())
    result = sparse(None, None, cost, args.k, reg=args.reg, method=args.method,
                    max_iter=args.max_iter, device=args.device, repair=args.repair,
                    verbose=args.verbose)
    print(f"sparse OT: {source.shape[0]} -> {target.shape[0]} points, k = {args.k}, "
          f"reg = {args.reg:g}, {args.method}")
    print(result.summary())
    if args.plot is not None:
        save_plan_plot(source.numpy(), target.numpy(), result, args.plot)
        print(f"plan saved to {args.plot}")
    return 0


def save_plan_plot(source: np.ndarray, target: np.ndarray, result: TransportResult,
                   path: Path | str) -> None:
    """Draw both clouds (first two coordinates) and a segment per plan entry (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plan = np.asarray(result.plan)
    rows, cols = np.nonzero(plan)
    weights = plan[rows, cols] / plan.max()
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, j, w in zip(rows, cols, weights):
        ax.plot([source[i, 0], target[j, 0]], [source[i, -1], target[j, -1]], color="0.3",
                alpha=float(0.15 + 0.85 * w), linewidth=0.8)
    ax.scatter(source[:, 0], source[:, -1], s=18, label="source")
    ax.scatter(target[:, 0], target[:, -1], s=18, marker="s", label="target")
    ax.set_title(f"sparse OT plan: {int(result.residuals['nnz'])} nonzeros, "
                 f"gap {result.gap:.2e}")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo(plot: bool) -> None:
    """Sparse OT (k = 3) between two small seeded point clouds; print the certificate."""
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, np.pi, 50)
    source = np.c_[np.cos(angles), np.sin(angles)] + 0.05 * rng.standard_normal((50, 2))
    target = 0.8 * rng.standard_normal((50, 2)) + np.array([0.5, -0.5])
    cost = PointCloudCost(source, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # the status below says it
        result = sparse(None, None, cost, k=3, reg=0.05)
    print("   sparse OT, 50 -> 50 points, at most 3 sources per target, reg 0.05")
    for line in result.summary().splitlines():
        print(f"   {line}")
    if plot:
        save_plan_plot(source, target, result, "ot_sparse_plan.png")
        print("   plan saved to ot_sparse_plan.png")
