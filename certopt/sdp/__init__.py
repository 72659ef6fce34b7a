"""Certified Lipschitz bounds of torch networks by semidefinite programming.

``lipschitz_bound(net, norm=2)`` compiles ``net`` into a straight-line
program (:mod:`~certopt.sdp.program`, :mod:`~certopt.sdp.compiler`), solves
LipSDP over it and verifies the answer in float64 (:mod:`~certopt.sdp.verify`).
New layer types plug in with :func:`register_rule`.
"""

from certopt.sdp import rules as _rules  # noqa: F401  (registers the rules below)
from certopt.sdp.activations import GroupSort, HouseholderActivation, MaxMin, Residual
from certopt.sdp.baselines import attack_lower_bound, naive_bound
from certopt.sdp.compiler import compile_network, register_rule, supported_layers
from certopt.sdp.lipschitz import lipschitz_bound
from certopt.sdp.maxmin_nets import load_maxmin_mat, maxmin_network
from certopt.sdp.program import LinearExpr, Program, ProgramBuilder, QuadraticConstraint
from certopt.sdp.result import LipschitzResult
from certopt.sdp.verify import UnsoundBoundError

__all__ = [
    "GroupSort",
    "HouseholderActivation",
    "MaxMin",
    "Residual",
    "LinearExpr",
    "LipschitzResult",
    "Program",
    "ProgramBuilder",
    "QuadraticConstraint",
    "UnsoundBoundError",
    "attack_lower_bound",
    "compile_network",
    "lipschitz_bound",
    "load_maxmin_mat",
    "maxmin_network",
    "naive_bound",
    "register_rule",
    "supported_layers",
]
