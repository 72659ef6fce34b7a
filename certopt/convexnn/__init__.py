"""Global training of two-layer ReLU networks by convex programs.

``ConvexReLURegressor`` / ``ConvexReLUClassifier`` are scikit-learn
estimators; :class:`ConvexReLUProblem` holds the convex program (math note
sections 1-4) and :data:`SOLVERS` maps ``solver=`` names to solvers.
"""

from certopt.convexnn.estimators import SOLVERS, ConvexReLUClassifier, ConvexReLURegressor
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions
from certopt.convexnn.result import ConvexNNResult

__all__ = [
    "SOLVERS",
    "ConvexNNResult",
    "ConvexReLUClassifier",
    "ConvexReLUProblem",
    "ConvexReLURegressor",
    "SolverOptions",
]
