"""How results print: one line per field, arrays by shape, never by content.

:class:`FieldRepr` gives a dataclass the ``repr`` of scikit-learn's estimators,
one ``name=value`` line per field, where arrays and tensors appear as
``ndarray(shape=(1000, 1000), dtype=float64)`` so that printing a result with
a 1000 x 1000 plan stays a dozen lines.  A subclass inherits this ``repr``
even when it is itself decorated with ``@dataclass`` (which would otherwise
write its own): :meth:`FieldRepr.__init_subclass__` installs the method on
each subclass before the decorator runs, and the decorator keeps a
``__repr__`` the class already defines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np
import torch

MAX_ITEMS = 8
"""Containers with more items than this print as their type and length."""

MAX_WIDTH = 100
"""Other objects whose ``repr`` is longer than this (or spans lines) print as their type."""


def describe(value: Any) -> str:
    """A one-line description of ``value``: scalars verbatim, arrays by shape and dtype.

    Tensors add their device; tuples, lists and mappings of at most
    :data:`MAX_ITEMS` items describe each item, longer ones give their length.
    """
    if isinstance(value, torch.Tensor):
        return (f"Tensor(shape={tuple(value.shape)}, dtype={str(value.dtype)[6:]}, "
                f"device={value.device})")
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, Mapping):
        if len(value) > MAX_ITEMS:
            return f"{type(value).__name__}(len={len(value)})"
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        if len(value) > MAX_ITEMS:
            return f"{type(value).__name__}(len={len(value)})"
        items = ", ".join(describe(v) for v in value)
        if isinstance(value, list):
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    text = repr(value)
    if "\n" in text or len(text) > MAX_WIDTH:
        return f"<{type(value).__name__}>"
    return text


def float_eps(values: Any) -> float:
    """Machine epsilon of the coarsest floating dtype among ``values`` (float64's if none)."""
    eps = float(np.finfo(np.float64).eps)
    for value in values:
        dtype = getattr(value, "dtype", None)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            eps = max(eps, torch.finfo(dtype).eps)
        elif isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.floating):
            eps = max(eps, float(np.finfo(dtype).eps))
    return eps


class FieldRepr:
    """Mixin for dataclasses: ``repr`` is one ``name=value`` line per field.

    Fields declared with ``field(repr=False)`` are left out; values go through
    :meth:`_describe_field`, which a subclass may refine (and which defaults to
    :func:`describe`).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = FieldRepr.__repr__  # type: ignore[method-assign]

    def _describe_field(self, name: str, value: Any) -> str:
        return describe(value)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.repr:
                lines.append(f"    {f.name}={self._describe_field(f.name, getattr(self, f.name))},")
        lines.append(")")
        return "\n".join(lines)
