"""certopt: convex and global-optimality solvers whose every answer carries a certificate.

Modules (import them explicitly; none is loaded by ``import certopt``):

* :mod:`certopt.convexnn`: global training of two-layer ReLU networks;
* :mod:`certopt.sdp`: certified Lipschitz bounds of torch networks;
* :mod:`certopt.ot`: optimal transport with dual certificates.

``certopt.ot`` is a subpackage; ``import ot`` stays POT's.
"""

from certopt.core.errors import (
    CertoptError,
    ConvergenceWarning,
    InfeasibleSettingsError,
    InputTypeError,
    InputValueError,
    UnsupportedError,
)
from certopt.core.result import SolverResult, Status

__version__ = "0.1.0"

__all__ = [
    "CertoptError",
    "ConvergenceWarning",
    "InfeasibleSettingsError",
    "InputTypeError",
    "InputValueError",
    "SolverResult",
    "Status",
    "UnsupportedError",
    "__version__",
]
