"""Global training of two-layer ReLU networks by convex programs.

``ConvexReLURegressor`` / ``ConvexReLUClassifier`` are scikit-learn
estimators; ``GatedReLURegressor`` and ``GatedReLUClassifier`` fit the gated-ReLU
program (fixed gates);
:class:`ConvexReLUProblem` holds the convex program (math note sections 1-4)
and :data:`SOLVERS` maps ``solver=`` names to solvers (``"auto"`` by size).
"""

from certopt.convexnn.estimators import ConvexReLUClassifier, ConvexReLURegressor
from certopt.convexnn.gated import GatedReLUClassifier, GatedReLUNet, GatedReLURegressor
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.result import ConvexNNResult
from certopt.convexnn.solvers import SOLVERS

__all__ = [
    "SOLVERS",
    "ConvexNNResult",
    "ConvexReLUClassifier",
    "ConvexReLUProblem",
    "ConvexReLURegressor",
    "GatedReLUClassifier",
    "GatedReLUNet",
    "GatedReLURegressor",
    "SolverOptions",
]
