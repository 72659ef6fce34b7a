"""The one convention by which benchmark scripts hand their figures to tools.

A benchmark script calls :func:`report` once per headline figure: a name
that identifies the measurement but not the device (``"ot_sparse n=300
semi-dual certopt C"``), the seconds it took, the device it ran on, and,
where the script knows it, ``bytes_moved``: the least number of bytes of
memory the timed code must read and write (e.g. ``evaluations * 4 * n * m``
for passes over an ``n x m`` float32 matrix).  ``bytes_moved`` divided by the
device's copy bandwidth is the memory-bandwidth bound: no implementation of
the same passes can be faster.

Figures go, one JSON object per line, to the file named by the environment
variable ``CERTOPT_FIGURES`` (nothing is written when it is unset, so a
script's own table stays as it was).  ``make gpu-check`` runs each script with
``--quick`` on the CPU and on the GPU and sets the figures of the same name
side by side; a figure measured on the CPU in both runs (a cvxpy or POT
anchor) is reported with ``device="cpu"`` and counted once.  Under
``--quick`` a script uses the same sizes on every device, so that its figures
pair up.
"""

from __future__ import annotations

import json
import os
from typing import Any

FIGURES_ENV = "CERTOPT_FIGURES"


def report(name: str, seconds: float, *, device: Any,
           bytes_moved: float | None = None) -> dict[str, Any]:
    """Record one figure (see the module docstring) and return it as a dict."""
    figure = {"name": name, "device": str(device).split(":")[0], "seconds": float(seconds),
              "bytes": None if bytes_moved is None else float(bytes_moved)}
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(figure) + "\n")
    return figure
