"""numpy/torch in, the same kind out; validation with clear errors.

The rules every solver follows (POT's convention):

* inputs may be numpy arrays, torch tensors or nested lists;
* solvers work in torch; on CPU in float64 by default, on CUDA in the
  input's floating dtype (float32 stays float32 there);
* outputs come back as the *first array argument's* kind, dtype and device
  (:meth:`ArraySpec.wrap`);
* the caller's arrays are never modified: :func:`as_tensor` copies, or with
  ``copy=False`` may share the caller's memory, which the solver then only
  reads.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from certopt.core.errors import InputTypeError, InputValueError

ArrayLike = Any
"""numpy array, torch tensor or nested sequence of numbers."""


@dataclass(frozen=True)
class ArraySpec:
    """How the user passed an array: enough to hand results back alike."""

    is_torch: bool
    dtype: torch.dtype
    device: torch.device

    def wrap(self, tensor: torch.Tensor) -> np.ndarray | torch.Tensor:
        """Return ``tensor`` as this spec's kind, dtype and device (a new array)."""
        tensor = tensor.detach()
        if self.is_torch:
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(device="cpu", dtype=self.dtype).numpy().copy()

    def working_dtype(self, device: torch.device) -> torch.dtype:
        """float64 on CPU; the input's floating dtype (or float32) on CUDA."""
        if device.type == "cpu":
            return torch.float64
        return self.dtype if self.dtype.is_floating_point else torch.float32


def spec_of(x: ArrayLike) -> ArraySpec:
    """Record the kind, dtype and device of ``x`` (float64/cpu for non-arrays)."""
    if isinstance(x, torch.Tensor):
        dtype = x.dtype if x.dtype.is_floating_point else torch.float64
        return ArraySpec(True, dtype, x.device)
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
        return ArraySpec(False, torch.from_numpy(np.zeros(0, dtype=x.dtype)).dtype,
                         torch.device("cpu"))
    return ArraySpec(False, torch.float64, torch.device("cpu"))


def resolve_device(device: str | torch.device | None, default: torch.device | None = None
                   ) -> torch.device:
    """Turn ``device`` into a :class:`torch.device`, checking it is usable.

    ``None`` means ``default`` (or CPU).  ``"cuda"`` without a CUDA device
    raises :class:`InputValueError` instead of failing later.
    """
    if device is None:
        return default if default is not None else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputValueError(
            f"device: expected 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputValueError(f"device: {device!r} requested but CUDA is not available")
    return dev


def as_tensor(
    x: ArrayLike,
    name: str,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    dtype: torch.dtype | None = torch.float64,
    device: torch.device | str | None = None,
    finite: bool = True,
    nonnegative: bool = False,
    copy: bool = True,
) -> torch.Tensor:
    """Validate ``x`` and return it as a torch tensor: a fresh one, or with
    ``copy=False`` possibly sharing ``x``'s memory (a numpy array or tensor
    already of the target dtype and device), which the caller must then treat as
    read only.

    Parameters
    ----------
    x:
        numpy array, torch tensor or nested sequence of numbers.
    name:
        The argument's name, used in error messages.
    ndim, shape:
        Required number of dimensions / shape (``None`` entries are free).
    dtype:
        Target dtype; ``None`` keeps the input's (numbers become float64).
    device:
        Target device; ``None`` keeps a tensor's device (CPU otherwise).
    finite, nonnegative:
        Reject NaN/inf entries, negative entries.
    copy:
        False: share ``x``'s memory when no conversion is needed (saves a
        pass over ``x``; read-only numpy arrays are still copied).

    Raises
    ------
    InputTypeError
        ``x`` is not array-like or not numeric.
    InputValueError
        Wrong dimensions or shape, non-finite or negative entries.
    """
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
    elif isinstance(x, (np.ndarray, list, tuple, numbers.Number)):
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == np.bool_):
            raise InputTypeError(
                f"{name}: expected a numeric array, got dtype {arr.dtype}"
            )
        if not arr.flags.writeable:  # torch warns on read-only memory
            arr = arr.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise InputTypeError(
            f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}"
        )
    if tensor.is_complex():
        raise InputTypeError(f"{name}: complex values are not supported")
    target_dtype = dtype
    if target_dtype is None:
        target_dtype = tensor.dtype if tensor.dtype.is_floating_point else torch.float64
    target_device = tensor.device if device is None else torch.device(device)
    tensor = tensor.to(device=target_device, dtype=target_dtype, copy=copy)

    if ndim is not None and tensor.ndim != ndim:
        raise InputValueError(
            f"{name}: expected a {ndim}-D array, got shape {tuple(tensor.shape)}"
        )
    if shape is not None:
        expected = tuple(shape)
        ok = len(expected) == tensor.ndim and all(
            e is None or e == s for e, s in zip(expected, tensor.shape)
        )
        if not ok:
            shown = ", ".join("*" if e is None else str(e) for e in expected)
            shown += "," if len(expected) == 1 else ""
            raise InputValueError(
                f"{name}: expected shape ({shown}), got {tuple(tensor.shape)}"
            )
    if finite:
        check_finite(tensor, name)
    if nonnegative:
        check_nonnegative(tensor, name)
    return tensor


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise :class:`InputValueError` if ``tensor`` has NaN or infinite entries.

    One reduction in the common case: a finite sum implies finite entries (a
    NaN entry makes the sum NaN, an infinite one makes it infinite or NaN).
    Only a non-finite sum, which finite entries can also give by overflow, costs
    the entrywise test.
    """
    if tensor.is_floating_point() and not math.isfinite(float(tensor.sum())):
        count = int((~torch.isfinite(tensor)).sum())
        if count:
            raise InputValueError(
                f"{name}: expected finite values, found {count} NaN/inf entr"
                f"{'y' if count == 1 else 'ies'}"
            )


def check_nonnegative(tensor: torch.Tensor, name: str) -> None:
    """Raise :class:`InputValueError` if ``tensor`` has negative entries."""
    if tensor.numel() and bool((tensor < 0).any()):
        raise InputValueError(
            f"{name}: expected nonnegative values, minimum is {float(tensor.min()):.3g}"
        )


def check_scalar(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> float | int:
    """Validate a real (or integer) scalar in a range; return it as float/int.

    Example: ``check_scalar(reg, "reg", low=0, low_inclusive=False)``
    requires ``reg > 0``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        elif isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        else:
            kind = "an integer" if integer else "a real number"
            raise InputTypeError(f"{name}: expected {kind}, got {type(value).__name__}")
    if integer:
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif float(value).is_integer():
            value = int(value)
        else:
            raise InputTypeError(f"{name}: expected an integer, got {value!r}")
    else:
        value = float(value)
        if not math.isfinite(value):
            raise InputValueError(f"{name}: expected a finite number, got {value!r}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise InputValueError(f"{name}: expected {name} {op} {low}, got {value!r}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise InputValueError(f"{name}: expected {name} {op} {high}, got {value!r}")
    return value


def check_same_length(*named: tuple[str, torch.Tensor]) -> int:
    """Check the tensors share their first dimension; return it."""
    lengths = {name: int(t.shape[0]) for name, t in named}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{n} has {k}" for n, k in lengths.items())
        raise InputValueError(f"expected the same number of rows: {shown}")
    return next(iter(lengths.values()))


def check_marginals(
    a: ArrayLike | None,
    b: ArrayLike | None,
    n: int,
    m: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    rtol: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of marginals for an ``n x m`` transport problem.

    ``None`` means uniform weights with total mass 1.  Both must be 1-D of
    lengths ``n`` and ``m``, finite, nonnegative, with positive and equal
    total mass up to ``rtol`` relative.  Returns fresh tensors.
    """
    def one(w: ArrayLike | None, name: str, size: int) -> torch.Tensor:
        if w is None:
            return torch.full((size,), 1.0 / size, dtype=dtype, device=device)
        t = as_tensor(w, name, shape=(size,), dtype=dtype, device=device, nonnegative=True)
        if float(t.sum()) <= 0:
            raise InputValueError(f"{name}: expected positive total mass, got {float(t.sum())}")
        return t

    a_t, b_t = one(a, "a", n), one(b, "b", m)
    mass_a, mass_b = float(a_t.sum()), float(b_t.sum())
    if abs(mass_a - mass_b) > rtol * max(mass_a, mass_b):
        raise InputValueError(
            f"a, b: expected equal total mass, got sum(a)={mass_a:.9g} and sum(b)={mass_b:.9g}"
        )
    return a_t, b_t


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A numpy copy of an array or tensor (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().copy()
    return np.array(x, copy=True)
