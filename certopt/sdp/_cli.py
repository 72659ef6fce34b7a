"""``certopt lipschitz MODEL``: certify a saved network from the command line.

MODEL is one of

* a **TorchScript** file (``torch.jit.save(torch.jit.script(net), path)``)
  built from supported layers (``nn.Sequential``, ``nn.Linear``,
  ``nn.Conv2d``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Tanh``, ``nn.Sigmoid``,
  ``nn.Identity``, ``nn.Flatten``, ``nn.Dropout``); it is rebuilt as an
  ordinary ``nn.Module`` layer by layer;
* a **state dict** (``torch.save(net.state_dict(), path)``, loaded with
  ``torch.load(weights_only=True)``: no arbitrary unpickling) together with
  ``--arch``, a comma-separated architecture of fully connected layers:
  integers are layer widths and names are activations between them, e.g.
  ``--arch 784,256,relu,256,relu,10`` is
  ``Linear(784,256) ReLU Linear(256,256) ReLU Linear(256,10)``.  Activations:
  ``relu``, ``tanh``, ``sigmoid``, ``leakyrelu`` (slope 0.01) or
  ``leakyrelu:A``.  Tensors are matched in the state dict's order: each
  ``Linear`` takes a 2-D weight ``(out, in)`` and, when the next tensor is a
  1-D vector of length ``out``, its bias.
"""

from __future__ import annotations

import argparse
import pickle
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from certopt.core.errors import InputTypeError, InputValueError, UnsupportedError

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
                "identity": nn.Identity}


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``certopt lipschitz``."""
    parser = subparsers.add_parser(
        "lipschitz", help="certified Lipschitz bound of a torch network (LipSDP)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL", help="TorchScript file, or state dict + --arch")
    parser.add_argument("--arch", help="architecture of a state dict, e.g. 784,256,relu,10")
    parser.add_argument("--norm", choices=["2", "inf"], default="2",
                        help="input norm: 2 (default) or inf; the output norm is always 2")
    parser.add_argument("--method", default="auto",
                        choices=["auto", "lipsdp", "first-order", "fast", "naive"])
    parser.add_argument("--solver", help="cvxpy SDP solver for --method lipsdp (e.g. SCS)")
    parser.add_argument("--input-shape", help="input shape without batch axis, e.g. 1,28,28")
    parser.add_argument("--no-attack", action="store_true", help="skip the attack lower bound")
    parser.set_defaults(handler=_run)


def parse_arch(spec: str) -> nn.Sequential:
    """The ``nn.Sequential`` described by an ``--arch`` string (see module doc)."""
    tokens = [t.strip().lower() for t in spec.split(",") if t.strip()]
    if not tokens or not tokens[0].isdigit():
        raise InputValueError(f"--arch: expected it to start with the input width, got {spec!r}")
    layers: list[nn.Module] = []
    width = int(tokens[0])
    for token in tokens[1:]:
        if token.isdigit():
            layers.append(nn.Linear(width, int(token)))
            width = int(token)
            continue
        name, _, argument = token.partition(":")
        if name in ("leakyrelu", "leaky_relu"):
            try:
                layers.append(nn.LeakyReLU(float(argument) if argument else 0.01))
            except ValueError as exc:
                raise InputValueError(f"--arch: bad slope in {token!r}") from exc
        elif name in _ACTIVATIONS and not argument:
            layers.append(_ACTIVATIONS[name]())
        else:
            raise InputValueError(
                f"--arch: unknown token {token!r}; expected an integer width or one of "
                f"{sorted(_ACTIVATIONS) + ['leakyrelu[:slope]']}")
    if not any(isinstance(layer, nn.Linear) for layer in layers):
        raise InputValueError(f"--arch: expected at least one layer after the input, got {spec!r}")
    return nn.Sequential(*layers)


def load_state_dict_model(path: Path, arch: str) -> nn.Sequential:
    """Load a state dict with ``weights_only=True`` into the ``--arch`` network."""
    net = parse_arch(arch)
    try:
        with warnings.catch_warnings():  # a TorchScript file is refused below, with its reason
            warnings.filterwarnings("ignore", "'torch.load' received a zip file", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise InputValueError(
            f"MODEL: {path} is not a state dict loadable with torch.load(weights_only=True) "
            f"({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputValueError(f"MODEL: {path} does not hold a flat state dict of tensors")
    tensors = list(state.values())
    position = 0
    with torch.no_grad():
        for layer in net:
            if not isinstance(layer, nn.Linear):
                continue
            if position >= len(tensors) or tuple(tensors[position].shape) != tuple(
                    layer.weight.shape):
                found = tuple(tensors[position].shape) if position < len(tensors) else "nothing"
                raise InputValueError(
                    f"MODEL: tensor {position} of {path} should be the weight of {layer} with "
                    f"shape {tuple(layer.weight.shape)}, found {found}; check --arch")
            layer.weight.copy_(tensors[position])
            position += 1
            if position < len(tensors) and tuple(tensors[position].shape) == (layer.out_features,):
                layer.bias.copy_(tensors[position])
                position += 1
            else:
                layer.bias = None
    if position != len(tensors):
        raise InputValueError(
            f"MODEL: {path} has {len(tensors) - position} tensors left over after the --arch "
            "layers; check --arch")
    return net


def _rebuild(script: torch.nn.Module) -> nn.Module:
    """An ordinary ``nn.Module`` equal to a TorchScript module of supported layers."""
    kind = getattr(script, "original_name", type(script).__name__)
    if kind == "Sequential":
        return nn.Sequential(*[_rebuild(child) for child in script.children()])
    if kind == "Linear":
        layer = nn.Linear(script.weight.shape[1], script.weight.shape[0],
                          bias=script.bias is not None)
    elif kind == "Conv2d":
        layer = nn.Conv2d(script.in_channels, script.out_channels, script.kernel_size,
                          stride=script.stride, padding=script.padding,
                          dilation=script.dilation, groups=script.groups,
                          bias=script.bias is not None, padding_mode=script.padding_mode)
    elif kind == "LeakyReLU":
        return nn.LeakyReLU(script.negative_slope)
    elif kind in ("ReLU", "Tanh", "Sigmoid", "Identity", "Dropout"):
        return getattr(nn, kind)()
    elif kind == "Flatten":
        return nn.Flatten(script.start_dim, script.end_dim)
    else:
        raise UnsupportedError(
            f"MODEL: TorchScript layer {kind} is not supported; supported: Sequential, Linear, "
            "Conv2d, ReLU, LeakyReLU, Tanh, Sigmoid, Identity, Dropout, Flatten")
    layer.load_state_dict(script.state_dict())
    return layer


def load_model(path: str, arch: str | None = None) -> nn.Module:
    """A network from a TorchScript file, or from a state dict plus ``arch``."""
    file = Path(path)
    if not file.is_file():
        raise InputValueError(f"MODEL: no such file: {path}")
    if arch is not None:
        return load_state_dict_model(file, arch)
    try:
        with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; still supported
            warnings.simplefilter("ignore", DeprecationWarning)
            script = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise InputValueError(
            f"MODEL: {path} is not a TorchScript file; save one with "
            "torch.jit.save(torch.jit.script(net), path), or pass a state dict "
            "(torch.save(net.state_dict(), path)) with --arch") from exc
    return _rebuild(script)


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError as exc:
        raise InputTypeError(
            f"--input-shape: expected integers like 1,28,28, got {text!r}") from exc


def _run(args: argparse.Namespace) -> int:
    from certopt.sdp import lipschitz_bound

    net = load_model(args.model, args.arch)
    result = lipschitz_bound(net, norm=args.norm, method=args.method, solver=args.solver,
                             input_shape=_shape(args.input_shape), attack=not args.no_attack,
                             verbose=args.verbose)
    print(result.summary())
    return 0


def demo(plot: bool) -> None:
    """Train a small ReLU net on scikit-learn's digits, then certify its ℓ2 constant."""
    from sklearn.datasets import load_digits

    from certopt.sdp import lipschitz_bound

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2)
    start = time.perf_counter()
    for _ in range(80):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    accuracy = float((net(x).argmax(1) == y).double().mean())
    print(f"   trained 64-16-16-10 ReLU net on digits in {time.perf_counter() - start:.1f} s "
          f"(train accuracy {accuracy:.3f})")
    result = lipschitz_bound(net, norm=2)
    print(f"   naive ∏‖W‖₂      {result.naive:.4f}")
    print(f"   LipSDP (certified) {result.bound:.4f}   verified={result.verified} "
          f"status={result.status} solve {result.solve_time:.2f} s")
    print(f"   attack lower bound {result.lower:.4f}")
    print(f"   the verified LMI minus {result.residuals['lmi_cholesky_shift']:.1e}·I passed a "
          "float64 Cholesky factorisation")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 3))
        ax.bar(["lower", "LipSDP", "naive"], [result.lower, result.bound, result.naive])
        ax.set_ylabel("Lipschitz constant (ℓ2)")
        fig.tight_layout()
        fig.savefig("sdp_lipschitz.png", dpi=120)
        print("   saved sdp_lipschitz.png")
