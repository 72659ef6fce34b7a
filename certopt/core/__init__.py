"""What every certopt module shares: results, errors, array rules, cvxpy, progress."""

from certopt.core.arrays import (
    ArraySpec,
    as_tensor,
    check_finite,
    check_marginals,
    check_nonnegative,
    check_same_length,
    check_scalar,
    resolve_device,
    spec_of,
    to_numpy,
)
from certopt.core.errors import (
    CertoptError,
    ConvergenceWarning,
    InfeasibleSettingsError,
    InputTypeError,
    InputValueError,
    UnsupportedError,
)
from certopt.core.result import SolverResult, Status, duality_gap

__all__ = [
    "ArraySpec",
    "CertoptError",
    "ConvergenceWarning",
    "InfeasibleSettingsError",
    "InputTypeError",
    "InputValueError",
    "SolverResult",
    "Status",
    "UnsupportedError",
    "as_tensor",
    "check_finite",
    "check_marginals",
    "check_nonnegative",
    "check_same_length",
    "check_scalar",
    "duality_gap",
    "resolve_device",
    "spec_of",
    "to_numpy",
]
