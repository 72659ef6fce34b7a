"""Adversarially robust convex training (math note, section 7).

* :mod:`.problem`: the robust program, certified margins, the result and
  :func:`fit_robust`, the entry point the estimators call;
* :mod:`.losses`: the worst-case hinge and squared losses;
* :mod:`.admm`: the robust ADMM, with :mod:`.polish` (Newton on the identified piece);
* :mod:`.reference`: the plain cvxpy model (``solver="cvxpy"`` and the tests' reference).
"""

from certopt.convexnn.robust.problem import (
    GroupOperators,
    RobustProblem,
    RobustResult,
    certified_margins,
    check_robust_settings,
    fit_robust,
    make_robust_result,
)

__all__ = [
    "GroupOperators",
    "RobustProblem",
    "RobustResult",
    "certified_margins",
    "check_robust_settings",
    "fit_robust",
    "make_robust_result",
]
