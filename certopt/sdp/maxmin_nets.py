"""Torch networks from weight lists in the layout of the published MaxMin nets.

The ICLR 2024 paper "Novel Quadratic Constraints for Extending LipSDP beyond
Slope-Restricted Activations" published its MNIST networks as MATLAB files
whose ``W`` entry is the list of weight matrices ``W_1 … W_L`` (no biases):

* plain (``weights_*``): ``f(x) = W_L · MaxMin(W_{L−1} · … MaxMin(W_1 x))``;
* residual (``resweights_*``): ``f(x) = W_L · R_{L−1}(… R_2(W_1 x))`` with
  blocks ``R_k(z) = z + MaxMin(W_k z)`` and no activation after ``W_1``.

:func:`maxmin_network` builds either as an ``nn.Sequential`` of ``nn.Linear``
(bias-free, float64), :class:`~certopt.sdp.activations.MaxMin` and
:class:`~certopt.sdp.activations.Residual`; :func:`load_maxmin_mat` reads a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from certopt.core.errors import InputValueError
from certopt.sdp.activations import MaxMin, Residual

__all__ = ["load_maxmin_mat", "maxmin_network"]


def _linear(weight: np.ndarray) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
    return layer


def maxmin_network(weights: Sequence[np.ndarray], residual: bool = False,
                   output_rows: Sequence[int] | None = None) -> nn.Sequential:
    """The plain or residual MaxMin network of ``weights`` (module doc).

    ``weights``: 2-D arrays ``W_1 … W_L`` with matching shapes (residual: the
    middle ones square).  ``output_rows`` keeps only these rows of ``W_L``
    (e.g. ``[8]``: the logit of label 8, as the paper's ℓ∞ bounds).
    """
    mats = [np.array(w, dtype=np.float64) for w in weights]
    if len(mats) < 2 or any(w.ndim != 2 for w in mats):
        raise InputValueError(
            f"weights: expected at least two 2-D matrices, got shapes {[w.shape for w in mats]}")
    for k, (first, second) in enumerate(zip(mats[:-1], mats[1:])):
        if second.shape[1] != first.shape[0] or (residual and 0 < k + 1 < len(mats) - 1
                                                  and second.shape[0] != second.shape[1]):
            raise InputValueError(
                f"weights: matrix {k + 1} has shape {second.shape} after {first.shape}"
                + ("; residual blocks need square matrices" if residual else ""))
    if output_rows is not None:
        mats[-1] = mats[-1][np.asarray(output_rows, dtype=np.int64)]
    if not residual:
        layers: list[nn.Module] = []
        for weight in mats[:-1]:
            layers += [_linear(weight), MaxMin()]
        return nn.Sequential(*layers, _linear(mats[-1]))
    blocks = [Residual(nn.Sequential(_linear(w), MaxMin())) for w in mats[1:-1]]
    return nn.Sequential(_linear(mats[0]), *blocks, _linear(mats[-1]))


def load_maxmin_mat(path: str | Path, residual: bool | None = None,
                    output_rows: Sequence[int] | None = None) -> nn.Sequential:
    """:func:`maxmin_network` of a published ``.mat`` file (``scipy.io.loadmat(path)["W"]``).

    ``residual=None`` takes the layout from the file name (``resweights_*``).
    """
    import scipy.io

    path = Path(path)
    weights = scipy.io.loadmat(path)["W"].ravel()
    if residual is None:
        residual = path.name.startswith("resweights")
    return maxmin_network(list(weights), residual, output_rows)
