"""Compile a torch network into a straight-line :class:`~certopt.sdp.program.Program`.

Every supported layer type has a **rule**, registered by module type::

    @register_rule(nn.ReLU)
    def _relu(module, expr, builder):      # expr: LinearExpr of the layer's input
        return builder.add_stage(expr, SlopeRestricted(0.0, 1.0, expr.dim))

A rule receives the layer, the :class:`~certopt.sdp.program.LinearExpr` of its
input and the :class:`~certopt.sdp.program.ProgramBuilder`, and returns the
expression of its output: linear layers multiply the expression (biases are
dropped), sums add expressions, activations add a stage.  Containers call
:func:`compile_module` on their children.  New layer types (in this package
or in user code) only add a rule; the SDP never changes.

Rules are looked up by exact type first, then along the class's MRO, but a
subclass that overrides ``forward`` or ``__call__`` never inherits its
parent's rule (it may compute something else).

Soundness: a rule reads a module's parameters, never runs the module, so the
compiler refuses (:class:`InputTypeError` naming the module) whatever could
make the module compute something its rule does not see: forward hooks and
forward pre-hooks on any submodule, global module forward hooks
(``torch.nn.modules.module.register_module_forward_hook`` and friends), and
``forward``/``__call__`` replaced on an instance.  Reparametrized weights are
read through their effective value, exactly what the module uses in
evaluation mode: ``torch.nn.utils.parametrize`` (``parametrizations.
spectral_norm``, ``orthogonal``, ``weight_norm``, user parametrizations; read
with the parametrizations in evaluation mode, so no power iteration runs and
nothing in the network changes).  The older hook-based
``torch.nn.utils.spectral_norm`` / ``weight_norm`` are forward pre-hooks and
are refused with a message pointing to the parametrize forms: torch cannot
deep-copy such modules once they ran (their weight is a non-leaf tensor), so
the attack that checks every bound could not run on them.  The network is
certified as it computes in evaluation mode (``nn.Dropout`` is the identity).

Built-in rules: ``nn.Sequential`` (nested), ``nn.Linear``, ``nn.Conv2d``
(zero padding; needs ``input_shape``; compiled to its dense matrix, for small
inputs), ``nn.ReLU`` ``[0, 1]``, ``nn.LeakyReLU(a)`` ``[min(a,1), max(a,1)]``,
``nn.Tanh`` ``[0, 1]``, ``nn.Sigmoid`` ``[0, 1/4]``, ``nn.Identity``,
``nn.Flatten``, ``nn.Dropout`` (identity, as at evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules import module as _torch_module
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from certopt.core.errors import InputTypeError, InputValueError, UnsupportedError
from certopt.sdp.program import LinearExpr, Program, ProgramBuilder, SlopeRestricted

_HOOK_FORMS = {SpectralNorm: "spectral_norm", WeightNorm: "weight_norm"}
"""The hook-based reparametrizations (refused with a pointer to their parametrize form)."""

Rule = Callable[[nn.Module, LinearExpr, ProgramBuilder], LinearExpr]

_RULES: dict[type, Rule] = {}


def register_rule(*module_types: type) -> Callable[[Rule], Rule]:
    """Decorator registering ``rule`` for the given ``nn.Module`` types."""
    for t in module_types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise InputTypeError(f"module_types: expected nn.Module subclasses, got {t!r}")

    def decorate(rule: Rule) -> Rule:
        for t in module_types:
            _RULES[t] = rule
        return rule

    return decorate


def supported_layers() -> list[str]:
    """Names of the module types with a rule, sorted."""
    return sorted(t.__name__ for t in _RULES)


def find_rule(module: nn.Module) -> Rule:
    """The rule for ``module``; :class:`UnsupportedError` (a TypeError) if none."""
    cls = type(module)
    for base in cls.__mro__:
        rule = _RULES.get(base)
        if rule is None:
            continue
        if base is cls or all(getattr(cls, name, None) is getattr(base, name, None)
                              for name in ("forward", "__call__", "_call_impl")):
            return rule
        break
    raise UnsupportedError(
        f"net: layer {cls.__name__} ({module!r:.80}) is not supported by the Lipschitz "
        f"compiler; supported layers: {', '.join(supported_layers())}"
    )


def compile_module(module: nn.Module, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    """Apply ``module``'s rule to ``expr`` (rules call this for their children)."""
    return find_rule(module)(module, expr, builder)


def compile_network(net: nn.Module, input_shape: Sequence[int] | None = None) -> Program:
    """Compile ``net`` (an ``nn.Module``) to a :class:`Program`.

    ``input_shape`` is the input's shape without the batch axis; by default
    ``(in_features,)`` of the first ``nn.Linear``.  Raises
    :class:`UnsupportedError` for a layer without a rule and
    :class:`InputValueError` for an empty network or non-finite weights.
    """
    check_visible(net)
    leaves = [m for m in _layers(net)
              if not any(_layers(m, own=False)) and not isinstance(m, nn.Sequential)]
    if not leaves:
        raise InputValueError("net: the network is empty (an nn.Sequential without layers)")
    builder = ProgramBuilder(_input_shape(net, leaves, input_shape))
    output = compile_module(net, builder.input, builder)
    return builder.finish(output)


def _layers(module: nn.Module, own: bool = True) -> Iterator[nn.Module]:
    """``module`` (if ``own``) and its submodules, not descending into parametrizations."""
    if own:
        yield module
    for name, child in module.named_children():
        if not (name == "parametrizations" and parametrize.is_parametrized(module)):
            yield from _layers(child)


def check_visible(net: object) -> None:
    """Raise :class:`InputTypeError` unless every computation of ``net`` is visible to the rules.

    Refused: a non-``nn.Module``; global module forward hooks or pre-hooks;
    any submodule with a forward hook, a forward pre-hook other than the
    hook-based ``spectral_norm``/``weight_norm`` ones, or an instance-level
    ``forward``/``__call__``.  (Subclasses overriding ``forward`` or
    ``__call__`` are refused by :func:`find_rule`.)
    """
    if not isinstance(net, nn.Module):
        raise InputTypeError(f"net: expected a torch.nn.Module, got {type(net).__name__} "
                             f"({net!r:.60})")
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks"):
        if getattr(_torch_module, kind, None):
            raise InputTypeError(
                f"net: global module {kind[8:].replace('_', ' ')} are registered "
                "(torch.nn.modules.module.register_module_forward_(pre_)hook); they may change "
                "what every layer computes, which the Lipschitz compiler cannot see; remove them")
    for name, module in net.named_modules():
        where = f"{name or 'net'} ({type(module).__name__})"
        if module._forward_hooks:
            raise InputTypeError(
                f"net: module {where} has a forward hook; it may change the module's output, "
                "which the Lipschitz compiler cannot see; remove it (handle.remove())")
        for hook in module._forward_pre_hooks.values():
            form = _HOOK_FORMS.get(type(hook))
            if form is not None:
                raise InputTypeError(
                    f"net: module {where} uses the hook-based torch.nn.utils.{form}, which "
                    "the Lipschitz compiler does not accept (torch cannot copy such a module "
                    "for the attack); use torch.nn.utils.parametrizations."
                    f"{form} instead, or torch.nn.utils.remove_{form} to keep the weight")
        if module._forward_pre_hooks:
            raise InputTypeError(
                f"net: module {where} has a forward pre-hook; it may change the module's "
                "input, which the Lipschitz compiler cannot see; remove it (handle.remove())")
        overridden = [n for n in ("forward", "__call__") if n in vars(module)]
        if overridden:
            raise InputTypeError(
                f"net: module {where} has its own {overridden[0]!r} set on the instance; the "
                "Lipschitz compiler cannot see what it computes")


def _input_shape(net: nn.Module, leaves: list[nn.Module],
                 input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is not None:
        try:
            shape = tuple(int(s) for s in input_shape)
        except (TypeError, ValueError) as exc:
            raise InputTypeError(
                f"input_shape: expected a sequence of ints, got {input_shape!r}") from exc
        if not shape or min(shape) < 1:
            raise InputValueError(f"input_shape: expected positive dimensions, got {shape}")
        return shape
    for leaf in leaves:
        if isinstance(leaf, nn.Linear):
            return (leaf.in_features,)
        if isinstance(leaf, nn.Conv2d):
            break
    raise InputValueError(
        f"input_shape: cannot infer the input shape of {type(net).__name__} (no leading "
        "nn.Linear); pass input_shape, e.g. input_shape=(1, 28, 28)"
    )


def _effective_parameter(module: nn.Module, name: str) -> torch.Tensor:
    """``module.<name>`` as the module computes with it in evaluation mode (module doc)."""
    with torch.no_grad():
        if not parametrize.is_parametrized(module, name):
            return getattr(module, name)
        parametrizations = module.parametrizations[name]
        modes = [(m, m.training) for m in parametrizations.modules()]
        parametrizations.eval()
        try:
            return getattr(module, name)
        finally:
            for m, training in modes:
                m.train(training)


def layer_weight(module: nn.Module, name: str = "weight") -> np.ndarray:
    """A layer's parameter (its effective value when reparametrized) as a float64 numpy
    array, checked finite."""
    value = _effective_parameter(module, name)
    array = value.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    if not np.all(np.isfinite(array)):
        raise InputValueError(
            f"net: {type(module).__name__}.{name} has NaN or infinite entries")
    return array


@register_rule(nn.Sequential)
def _sequential(module: nn.Sequential, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    for child in module:
        expr = compile_module(child, expr, builder)
    return expr


@register_rule(nn.Linear)
def _linear(module: nn.Linear, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    weight = layer_weight(module)
    if module.bias is not None:
        layer_weight(module, "bias")  # finite check only: biases do not change L
    if expr.shape[-1] != module.in_features:
        raise InputValueError(
            f"net: {module!r} receives inputs of shape {expr.shape}, "
            f"expected last dimension {module.in_features}")
    prefix = math.prod(expr.shape[:-1])
    matrix = weight if prefix == 1 else np.kron(np.eye(prefix), weight)
    return expr.left_multiply(matrix, expr.shape[:-1] + (module.out_features,))


@register_rule(nn.Conv2d)
def _conv2d(module: nn.Conv2d, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    if module.padding_mode != "zeros":
        raise UnsupportedError(
            f"net: {module!r}: only padding_mode='zeros' is supported, got "
            f"{module.padding_mode!r}")
    if len(expr.shape) != 3 or expr.shape[0] != module.in_channels:
        raise InputValueError(
            f"net: {module!r} expects inputs of shape ({module.in_channels}, H, W), got "
            f"{expr.shape}; pass input_shape=(C, H, W)")
    weight = torch.from_numpy(layer_weight(module))
    if module.bias is not None:
        layer_weight(module, "bias")
    basis = torch.eye(expr.dim, dtype=torch.float64).reshape(expr.dim, *expr.shape)
    images = torch.nn.functional.conv2d(basis, weight, None, module.stride, module.padding,
                                        module.dilation, module.groups)
    matrix = images.reshape(expr.dim, -1).T.numpy()
    return expr.left_multiply(matrix, tuple(images.shape[1:]))


@register_rule(nn.Identity, nn.Dropout)
def _identity(module: nn.Module, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    return expr


@register_rule(nn.Flatten)
def _flatten(module: nn.Flatten, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
    full = (1,) + expr.shape  # torch's Flatten counts the batch axis
    start, end = module.start_dim % len(full), module.end_dim % len(full)
    if start == 0:
        raise UnsupportedError("net: nn.Flatten over the batch axis (start_dim=0) is not supported")
    shape = full[1:start] + (math.prod(full[start:end + 1]),) + full[end + 1:]
    return expr.reshape(shape)


def _slope_rule(alpha: float | Callable[[nn.Module], float],
                beta: float | Callable[[nn.Module], float]) -> Rule:
    def rule(module: nn.Module, expr: LinearExpr, builder: ProgramBuilder) -> LinearExpr:
        lo = alpha(module) if callable(alpha) else alpha
        hi = beta(module) if callable(beta) else beta
        return builder.add_stage(expr, SlopeRestricted(lo, hi, expr.dim),
                                 label=type(module).__name__)
    return rule


register_rule(nn.ReLU)(_slope_rule(0.0, 1.0))
register_rule(nn.Tanh)(_slope_rule(0.0, 1.0))
register_rule(nn.Sigmoid)(_slope_rule(0.0, 0.25))
register_rule(nn.LeakyReLU)(_slope_rule(lambda m: min(m.negative_slope, 1.0),
                                        lambda m: max(m.negative_slope, 1.0)))
