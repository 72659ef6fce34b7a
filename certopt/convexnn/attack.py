"""Projected gradient descent (PGD) attacks on binary classifiers.

For a classifier with score f (label = sign f) and labels y in {-1, +1},
every loss this module trains with (hinge, logistic, squared margin) is a
non-increasing function of the margin y f(x).  The strongest perturbation of
sample k inside the ball ``||delta||_p <= eps`` for *any* such loss, and for
the 0-1 loss, is therefore the one that minimises the margin::

    delta_k* = argmin_{||delta||_p <= eps} y_k f(x_k + delta_k)

PGD approximates it by ``steps`` steps of projected (signed, for p = inf)
gradient descent on the margin, from the clean point and optionally from
random starts; the worst margin found per sample is kept.  A PGD margin is an
*upper* bound on the true worst-case margin (the attack may miss), so the
attacked loss it reports is a *lower* bound on the true worst-case loss,
which is what a certified robust loss must exceed.

Multi-class networks (``C > 1`` outputs, labels in ``0..C-1``) are attacked
through the margin ``f_y(x) - max_{j != y} f_j(x)`` with the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from certopt.core.arrays import ArrayLike, as_tensor, check_scalar, spec_of
from certopt.core.display import FieldRepr
from certopt.core.errors import InputTypeError, InputValueError

NORMS = ("inf", "2")


@dataclass(frozen=True)
class AttackResult(FieldRepr):
    """Outcome of :func:`pgd`.

    Attributes
    ----------
    X_adv : (n, d) adversarial inputs, same kind/dtype/device as ``X``;
        ``||X_adv[k] - X[k]||_p <= eps`` for every row.
    margins : (n,) attacked margins ``y_k f(X_adv[k])`` (float64 numpy).
    clean_margins : (n,) margins at the clean inputs.
    hinge_loss : mean of ``max(0, 1 - margin)`` over the attacked inputs.
    accuracy : fraction of attacked inputs with margin > 0.
    clean_hinge_loss, clean_accuracy : the same at the clean inputs.
    eps, norm, steps : the attack's settings.
    """

    X_adv: ArrayLike
    margins: np.ndarray
    clean_margins: np.ndarray
    hinge_loss: float
    accuracy: float
    clean_hinge_loss: float
    clean_accuracy: float
    eps: float
    norm: str
    steps: int


def as_module(model_or_net: Any) -> nn.Module:
    """A torch module for ``model_or_net``: the module itself or ``.to_torch()``."""
    if isinstance(model_or_net, nn.Module):
        return model_or_net
    to_torch = getattr(model_or_net, "to_torch", None)
    if callable(to_torch):
        module = to_torch()
        if isinstance(module, nn.Module):
            return module
    raise InputTypeError(
        "model_or_net: expected a torch.nn.Module or a fitted estimator with to_torch(), "
        f"got {type(model_or_net).__name__}"
    )


def check_norm(norm: Any, name: str = "norm") -> str:
    """Normalise an ``ell_p`` norm name: ``"inf"`` (also ``np.inf``) or ``"2"`` (also 2)."""
    if isinstance(norm, str) or isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if norm in ("inf", np.inf):
            return "inf"
        if norm in ("2", 2):
            return "2"
    raise InputValueError(f"{name}: expected one of {list(NORMS)}, got {norm!r}")


def signed_labels(y: ArrayLike, classes: Any, n: int, device: torch.device) -> torch.Tensor:
    """Binary labels as +-1 floats.

    With ``classes`` (an estimator's ``classes_``, two entries) ``classes[1]``
    maps to +1 and ``classes[0]`` to -1; otherwise labels must be in {-1, +1}
    or {0, 1} (0 -> -1).
    """
    y_np = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
    if y_np.shape != (n,):
        raise InputValueError(f"y: expected shape ({n},), got {y_np.shape}")
    if classes is not None:
        classes = np.asarray(classes)
        if classes.shape != (2,):
            raise InputValueError(f"y: expected a binary estimator, got classes_ {classes}")
        unknown = ~np.isin(y_np, classes)
        if unknown.any():
            raise InputValueError(f"y: labels {np.unique(y_np[unknown])} not in classes_ {classes}")
        signed = np.where(y_np == classes[1], 1.0, -1.0)
    else:
        values = set(np.unique(y_np).tolist())
        if not (values <= {-1, 1} or values <= {0, 1}):
            raise InputValueError(
                f"y: expected binary labels in {{-1, +1}} or {{0, 1}}, got values {sorted(values)}"
            )
        signed = np.where(y_np > 0, 1.0, -1.0)
    return torch.as_tensor(signed, device=device)


def class_indices(y: ArrayLike, classes: Any, n: int, n_outputs: int,
                  device: torch.device) -> torch.Tensor:
    """Multi-class labels as indices in ``0..n_outputs-1`` (through ``classes`` if given)."""
    y_np = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
    if y_np.shape != (n,):
        raise InputValueError(f"y: expected shape ({n},), got {y_np.shape}")
    if classes is not None:
        classes = np.asarray(classes)
        lookup = {c: i for i, c in enumerate(classes.tolist())}
        if any(v not in lookup for v in y_np.tolist()):
            raise InputValueError(f"y: labels not all in classes_ {classes}")
        idx = np.array([lookup[v] for v in y_np.tolist()])
    else:
        idx = y_np.astype(np.int64)
        out_of_range = idx.min(initial=0) < 0 or idx.max(initial=0) >= n_outputs
        if not np.array_equal(idx, y_np) or out_of_range:
            raise InputValueError(
                f"y: expected integer class labels in 0..{n_outputs - 1} for a network "
                f"with {n_outputs} outputs"
            )
    return torch.as_tensor(idx, device=device)


def margin_function(module: nn.Module, labels: torch.Tensor, multiclass: bool):
    """``x -> y * f(x)`` (binary) or ``x -> f_y(x) - max_{j != y} f_j(x)`` (multi-class)."""
    def margins(x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        if not multiclass:
            return labels * out.reshape(-1)
        true = out.gather(1, labels[:, None]).squeeze(1)
        others = out.scatter(1, labels[:, None], float("-inf"))
        return true - others.max(dim=1).values
    return margins


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project each row of ``delta`` onto the ``ell_norm`` ball of radius ``eps``."""
    if norm == "inf":
        return delta.clamp(-eps, eps)
    row_norm = delta.norm(dim=1, keepdim=True)
    return delta * torch.clamp(eps / row_norm.clamp_min(1e-30), max=1.0)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest descent direction of unit ``ell_norm`` length for a gradient (per row)."""
    if norm == "inf":
        return grad.sign()
    return grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)


def pgd(
    model_or_net: Any,
    X: ArrayLike,
    y: ArrayLike,
    eps: float,
    steps: int = 50,
    *,
    norm: str | float = "inf",
    step_size: float | None = None,
    restarts: int = 0,
    random_state: int | None = None,
) -> AttackResult:
    """Attack ``model_or_net`` with ``ell_p`` PGD on the margin.

    Minimises ``y_k f(x_k + delta_k)`` over ``||delta_k||_p <= eps`` for each
    sample by ``steps`` projected gradient steps of length ``step_size``
    (default ``2.5 eps / steps``), starting from ``delta = 0`` and from
    ``restarts`` extra uniform random starts; keeps the lowest margin per
    sample.

    Parameters
    ----------
    model_or_net : a torch module mapping (n, d) to (n,), (n, 1) or (n, C), or a
        fitted estimator with ``to_torch()`` (its ``classes_`` map the labels).
    X : (n, d) clean inputs (numpy or torch; not modified).
    y : (n,) labels: {-1, +1} or {0, 1} (or an estimator's classes) for one
        output; class indices (or an estimator's classes) for C outputs.
    eps : radius of the perturbation ball, >= 0.
    steps : number of gradient steps, >= 0.
    norm : ``"inf"`` (default) or ``"2"``.
    step_size : step length in the attack norm (> 0).
    restarts : extra random starts, >= 0.
    random_state : seed of the random starts.

    Returns
    -------
    AttackResult with the adversarial inputs, margins, attacked hinge loss and
    accuracy, and their clean counterparts.
    """
    eps = check_scalar(eps, "eps", low=0.0)
    steps = check_scalar(steps, "steps", low=0, integer=True)
    restarts = check_scalar(restarts, "restarts", low=0, integer=True)
    norm = check_norm(norm)
    if step_size is None:
        step_size = 2.5 * eps / max(steps, 1)
    else:
        step_size = check_scalar(step_size, "step_size", low=0.0, low_inclusive=False)
    module = as_module(model_or_net)
    param = next(iter(module.parameters()), None)
    dtype = param.dtype if param is not None else torch.float64
    device = param.device if param is not None else torch.device("cpu")
    spec = spec_of(X)
    x_clean = as_tensor(X, "X", ndim=2, dtype=dtype, device=device)
    n = x_clean.shape[0]
    classes = getattr(model_or_net, "classes_", None)
    with torch.no_grad():
        n_outputs = module(x_clean[:1]).reshape(1, -1).shape[1] if n else 1
    multiclass = n_outputs > 1
    if multiclass:
        labels = class_indices(y, classes, n, n_outputs, device)
    else:
        labels = signed_labels(y, classes, n, device).to(dtype)
    margin_of = margin_function(module, labels, multiclass)
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if random_state is None else int(random_state))

    with torch.no_grad():
        clean_margins = margin_of(x_clean)
    best_margins = clean_margins.clone()
    best_delta = torch.zeros_like(x_clean)
    for start in range(restarts + 1):
        if start == 0:
            delta = torch.zeros_like(x_clean)
        else:
            noise = torch.rand(x_clean.shape, generator=generator, dtype=dtype, device=device)
            delta = project((2 * noise - 1) * eps, eps, norm)
        for _ in range(steps):
            delta.requires_grad_(True)
            margins = margin_of(x_clean + delta)
            (grad,) = torch.autograd.grad(margins.sum(), delta)
            with torch.no_grad():
                better = margins.detach() < best_margins
                best_margins = torch.where(better, margins.detach(), best_margins)
                best_delta = torch.where(better[:, None], delta.detach(), best_delta)
                delta = project(delta.detach() - step_size * ascent_direction(grad, norm),
                                eps, norm)
        with torch.no_grad():
            margins = margin_of(x_clean + delta)
            better = margins < best_margins
            best_margins = torch.where(better, margins, best_margins)
            best_delta = torch.where(better[:, None], delta, best_delta)

    def hinge(m: torch.Tensor) -> float:
        return float(torch.clamp(1 - m, min=0).mean()) if n else 0.0

    def accuracy(m: torch.Tensor) -> float:
        return float((m > 0).to(dtype).mean()) if n else 0.0

    return AttackResult(
        X_adv=spec.wrap(x_clean + best_delta),
        margins=best_margins.detach().cpu().double().numpy(),
        clean_margins=clean_margins.detach().cpu().double().numpy(),
        hinge_loss=hinge(best_margins),
        accuracy=accuracy(best_margins),
        clean_hinge_loss=hinge(clean_margins),
        clean_accuracy=accuracy(clean_margins),
        eps=eps,
        norm=norm,
        steps=steps,
    )
