"""The convex training problem of a two-layer ReLU network, validated once.

Notation (math note, sections 1 and 2).  X in R^{n x d} is the data, with a
column of ones appended when ``fit_intercept`` (the first-layer bias is the
last weight, regularised like the others); y in R^n; D_i = diag(D[i]) are
P activation patterns, S_i = 2 D_i - I; lam > 0 is the regularisation.

Non-convex objective of a network f(x) = sum_j alpha_j (u_j^T x)_+:

    F(U, alpha) = L(sum_j alpha_j (X u_j)_+) + (lam/2) sum_j (||u_j||^2 + alpha_j^2)

Convex program over v, w in R^{P x d}:

    G(v, w) = L(sum_i D_i X (v_i - w_i)) + lam sum_i (||v_i|| + ||w_i||)
    s.t. S_i X v_i >= 0,  S_i X w_i >= 0

where L(z) = (1/n) sum_k l(z_k, y_k) is the mean loss (:mod:`losses`).
Every solver and test measures solutions through this object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from certopt.convexnn.certificate import scaled_dual_bound
from certopt.convexnn.losses import Loss, get_loss
from certopt.convexnn.patterns import all_patterns, sample_patterns, unique_patterns
from certopt.core.arrays import (
    ArrayLike,
    as_tensor,
    check_same_length,
    check_scalar,
    resolve_device,
    spec_of,
)
from certopt.core.errors import InputTypeError, InputValueError


@dataclass(frozen=True)
class SolverOptions:
    """Options every convexnn solver accepts (a solver ignores what it has no use for).

    Attributes
    ----------
    max_iter : iteration limit of iterative solvers.
    tol : the certified relative gap at which every solver stops: F of the returned
        network minus the dual bound <= tol |bound|
        (:func:`~certopt.convexnn.certificate.within_tolerance`).  1e-6 here, for
        direct solver calls; the estimators and ``certopt train`` default to 1e-4.
    verbose : show a progress bar.
    rho : initial ADMM penalty; ``None`` picks one from the data.
    cvxpy_solver : cvxpy solver name for ``solver="cvxpy"`` (``None``: Clarabel or best).
    anderson_memory : memory of the ADMM's Anderson acceleration (0: plain ADMM).
    adaptive_rho : let the ADMM rebalance rho from its residuals.
    linear_solver : the ADMM's u-system solver, ``"direct"`` (n x n factor),
        ``"cg"`` (matrix free) or ``"auto"`` (direct up to a size).
    cone_weight : the ADMM's weight gamma > 0 of the cone block, t = gamma G u (a penalty
        gamma^2 rho on the cone constraints, rho on the others; see :mod:`admm`).
    mixed_precision : let the ADMM on float64 data at tol >= 1e-5 (P n >= 20 000)
        iterate in float32 first, its certificate checked in float64, and go on in
        float64 if float32 stalls (up to twice as fast per iteration; the answer and its
        certificate are float64 as without it; :func:`~certopt.convexnn.admm.solve_admm_from`).
    """

    max_iter: int = 10_000
    tol: float = 1e-6
    verbose: bool = False
    rho: float | None = None
    cvxpy_solver: str | None = None
    anderson_memory: int = 10
    adaptive_rho: bool = False
    linear_solver: str = "auto"
    cone_weight: float = 1.0
    mixed_precision: bool = True


MAX_PATTERN_BYTES = 2 ** 28
"""Largest (P, n) float64 array of patterns accepted (256 MiB): the solvers hold a few
dozen arrays of that shape."""


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool; anything but a Python or numpy boolean is an error."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputTypeError(f"{name}: expected True or False, got {value!r}")


def check_pattern_memory(n_patterns: int, n_samples: int) -> None:
    """Refuse ``n_patterns`` whose (P, n) float64 pattern array would exceed MAX_PATTERN_BYTES."""
    estimate = n_patterns * n_samples * 8
    if estimate > MAX_PATTERN_BYTES:
        raise InputValueError(
            f"n_patterns: {n_patterns} patterns of {n_samples} samples need about "
            f"{estimate / 2 ** 20:.0f} MiB per (P, n) array (P n 8 bytes; the solvers hold "
            f"several), above the limit of {MAX_PATTERN_BYTES / 2 ** 20:.0f} MiB; expected "
            f"n_patterns <= {MAX_PATTERN_BYTES // (8 * n_samples)}"
        )


def check_gates(gates: ArrayLike, n_features: int, width: int, name: str = "gates"
                ) -> torch.Tensor:
    """User gates (G, d) or (G, d_aug) as a float64 CPU tensor (G, width), bias weight last
    (zero when only the d feature weights are given)."""
    G = as_tensor(gates, name, ndim=2, dtype=torch.float64, device="cpu")
    if G.shape[1] == n_features < width:
        G = torch.cat([G, torch.zeros(G.shape[0], width - n_features, dtype=G.dtype)], dim=1)
    if G.shape[1] != width or G.shape[0] == 0:
        raise InputValueError(
            f"{name}: expected shape (G, {n_features})"
            + (f" or (G, {width})" if width != n_features else "")
            + f" with G >= 1, got {tuple(G.shape)}")
    return G


def gate_patterns(X_aug: torch.Tensor, gates: ArrayLike, n_features: int) -> torch.Tensor:
    """Patterns 1[X_aug g >= 0] of user gates (G, d) or (G, d_aug), deduplicated."""
    G = check_gates(gates, n_features, X_aug.shape[1])
    check_pattern_memory(G.shape[0], X_aug.shape[0])
    masks = (X_aug.to(torch.float64).cpu() @ G.T >= 0).T
    return unique_patterns(masks).to(device=X_aug.device, dtype=X_aug.dtype)


def random_generator(random_state: Any) -> torch.Generator:
    """A CPU torch.Generator from None, an int, a numpy RandomState or a Generator."""
    if isinstance(random_state, torch.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (int, np.integer)):
        seed = np.random.SeedSequence(random_state).generate_state(1)[0]
    elif isinstance(random_state, np.random.RandomState):
        seed = random_state.randint(np.iinfo(np.int32).max)
    elif isinstance(random_state, np.random.Generator):
        seed = random_state.integers(np.iinfo(np.int32).max)
    else:
        raise InputTypeError(
            "random_state: expected None, an int, a numpy RandomState/Generator or a "
            f"torch.Generator, got {type(random_state).__name__}"
        )
    return torch.Generator().manual_seed(int(seed))


@dataclass(frozen=True, eq=False)
class ConvexReLUProblem:
    """Data, patterns, loss and regularisation of the convex ReLU program.

    Attributes
    ----------
    X : (n, d) tensor, the data (augmented by a ones column when ``fit_intercept``).
    y : (n,) tensor, targets (labels in {-1, +1} for hinge and logistic).
    D : (P, n) tensor of zeros and ones, the activation patterns.
    loss : the :class:`~certopt.convexnn.losses.Loss`.
    lam : regularisation strength (> 0).
    fit_intercept : whether the last column of X is the bias column.
    is_global : True when D holds every pattern of the arrangement, so that
        min G is the global minimum of F over networks of any width.
    """

    X: torch.Tensor
    y: torch.Tensor
    D: torch.Tensor
    loss: Loss
    lam: float
    fit_intercept: bool = True
    is_global: bool = False

    @classmethod
    def from_data(
        cls,
        X: ArrayLike,
        y: ArrayLike,
        *,
        lam: float = 1e-3,
        loss: str | Loss = "squared",
        n_patterns: int | str = 100,
        fit_intercept: bool = True,
        random_state: Any = None,
        device: str | torch.device | None = None,
        gates: ArrayLike | None = None,
    ) -> ConvexReLUProblem:
        """Validate raw data, augment it and build its patterns.

        ``n_patterns`` is an int (sample that many Gaussian gates; duplicates
        and the all-zero pattern are dropped, so P <= n_patterns; n_patterns n 8
        bytes at most MAX_PATTERN_BYTES) or ``"all"`` (every pattern; augmented
        rank <= 4); ``gates`` (G, d) or (G, d + 1) gate vectors, when given, replace
        it: the patterns are 1[X_aug g >= 0] (deduplicated, the empty one dropped), a
        (G, d) gate getting a zero bias weight.  Work happens on ``device``
        (default: X's) in float64 on CPU and in X's floating dtype on CUDA.
        """
        spec = spec_of(X)
        dev = resolve_device(device, default=spec.device)
        dtype = spec.working_dtype(dev)
        X_t = as_tensor(X, "X", ndim=2, dtype=dtype, device=dev)
        y_t = as_tensor(y, "y", ndim=1, dtype=dtype, device=dev)
        n = check_same_length(("X", X_t), ("y", y_t))
        if n == 0 or X_t.shape[1] == 0:
            raise InputValueError(f"X: expected a non-empty matrix, got shape {tuple(X_t.shape)}")
        lam = check_scalar(lam, "lam", low=0.0, low_inclusive=False)
        fit_intercept = check_flag(fit_intercept, "fit_intercept")
        loss_obj = get_loss(loss)
        loss_obj.check_targets(y_t)
        X_aug = cls.augment(X_t, fit_intercept)
        if gates is not None:
            D = gate_patterns(X_aug, gates, X_t.shape[1])
            is_global = False
        elif isinstance(n_patterns, str):
            if n_patterns != "all":
                raise InputValueError(
                    f"n_patterns: expected a positive integer or 'all', got {n_patterns!r}"
                )
            D = all_patterns(X_aug)
            is_global = True
        else:
            count = check_scalar(n_patterns, "n_patterns", low=1, integer=True)
            check_pattern_memory(count, n)
            D = sample_patterns(X_aug, count, random_generator(random_state))
            is_global = False
        if D.shape[0] == 0:
            raise InputValueError(
                f"X: every sampled activation pattern of the {n} x {X_aug.shape[1]} data is "
                "empty (no gate activates any sample); expected more n_patterns or another "
                "random_state")
        return cls(X_aug, y_t, D.to(dtype), loss_obj, lam, fit_intercept, is_global)

    @staticmethod
    def augment(X: torch.Tensor, fit_intercept: bool) -> torch.Tensor:
        """X with a column of ones appended when ``fit_intercept``."""
        if not fit_intercept:
            return X
        return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)], dim=1)

    # ---- sizes -------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Columns of the augmented X (the length of each v_i, w_i, u_j)."""
        return int(self.X.shape[1])

    @property
    def n_patterns(self) -> int:
        return int(self.D.shape[0])

    @property
    def size(self) -> int:
        """n P d: samples x patterns x augmented features (the nonzeros of the cone
        constraints), the size by which the solvers' ``"auto"`` rules choose."""
        return self.n_samples * self.n_patterns * self.n_features

    @property
    def signs(self) -> torch.Tensor:
        """(P, n) tensor S with S[i] = diag(2 D_i - I)."""
        return 2.0 * self.D - 1.0

    # ---- the convex program ------------------------------------------------
    def predict_convex(self, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """sum_i D_i X (v_i - w_i), shape (n,), for v, w of shape (P, d)."""
        return (self.D * ((v - w) @ self.X.T)).sum(dim=0)

    def convex_objective(self, v: torch.Tensor, w: torch.Tensor) -> float:
        """G(v, w) (the cone constraints are not checked: see :meth:`cone_violation`)."""
        data = self.loss.value(self.predict_convex(v, w), self.y)
        norms = torch.linalg.vector_norm(torch.cat([v, w]), dim=1)
        penalty = norms.sum()
        return float(data + self.lam * penalty)

    def cone_violation(self, v: torch.Tensor, w: torch.Tensor) -> float:
        """max over i, k of (-S_i X v_i)_+ and (-S_i X w_i)_+ (0 when feasible)."""
        worst = torch.zeros((), dtype=self.X.dtype, device=self.X.device)
        for block in (v, w):
            worst = torch.maximum(worst, torch.relu(-self.signs * (block @ self.X.T)).max())
        return float(worst)

    # ---- networks ----------------------------------------------------------
    @staticmethod
    def network(v: torch.Tensor, w: torch.Tensor, prune: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ReLU network (U, alpha) of (v, w) (math note, section 2).

        Each v_i with ||v_i|| > prune gives u = v_i / sqrt(||v_i||), alpha =
        +sqrt(||v_i||); each such w_i gives alpha = -sqrt(||w_i||).  Returns
        U of shape (m, d) and alpha of shape (m,); under the cone constraints
        F(U, alpha) = G(v, w) exactly.
        """
        blocks = torch.cat([v, w])
        sign = torch.cat([torch.ones(v.shape[0], dtype=v.dtype, device=v.device),
                          -torch.ones(w.shape[0], dtype=w.dtype, device=w.device)])
        norms = torch.linalg.vector_norm(blocks, dim=1)
        keep = norms > prune
        root = norms[keep].sqrt()
        return blocks[keep] / root[:, None], sign[keep] * root

    @staticmethod
    def network_output(U: torch.Tensor, alpha: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """sum_j alpha_j (X u_j)_+ for augmented X (n, d); shape (n,)."""
        return torch.relu(X @ U.T) @ alpha

    def nonconvex_objective(self, U: torch.Tensor, alpha: torch.Tensor) -> float:
        """F(U, alpha) for U of shape (m, d) and alpha of shape (m,) (section 1)."""
        data = self.loss.value(self.network_output(U, alpha, self.X), self.y)
        return float(data + 0.5 * self.lam * ((U ** 2).sum() + (alpha ** 2).sum()))

    # ---- the dual ----------------------------------------------------------
    def dual_constraint_norms(self, dual: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor
                              ) -> torch.Tensor:
        """(2, P) norms ||X^T(D_i l - S_i mu_i)|| and ||X^T(-D_i l - S_i nu_i)||.

        ``dual`` is l in R^n; ``mu``, ``nu`` are (P, n) cone multipliers >= 0.
        The dual point is feasible when every norm is <= lam (section 4).
        """
        signs = self.signs
        stacked = torch.stack([self.D * dual - signs * mu, -self.D * dual - signs * nu])
        return torch.linalg.vector_norm(stacked @ self.X, dim=2)

    def dual_bound(self, dual: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor) -> float:
        """Lower bound on min G from any (l, mu >= 0, nu >= 0), by scaling (section 4).

        With s_max = min(1, lam / max norm) the point s (l, mu, nu) is dual
        feasible for every s in [0, s_max]; returns max_s -L*(s l).
        """
        return scaled_dual_bound(self, dual, mu, nu)[0]
