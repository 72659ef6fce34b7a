"""Shared pytest configuration.

* The ``cuda`` marker skips a test without a GPU.
* Hypothesis draws the same examples on every run (``derandomize``).
* Torch and the BLAS libraries run single-threaded unless ``OMP_NUM_THREADS``
  says otherwise: test problems are small, so thread hand-offs cost more than
  they save, and on a loaded machine extra threads wait on each other.  The
  variables are set here, before torch and numpy load their BLAS, so a plain
  ``pytest`` behaves like ``make test``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
for _name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, os.environ["OMP_NUM_THREADS"])

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# The same examples on every run and machine: a property test that fails does so
# reproducibly (pass --hypothesis-seed=N to explore other examples).
settings.register_profile("certopt", derandomize=True)
settings.load_profile("certopt")


def pytest_configure(config):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_report_header(config):
    """The numeric back-ends in use, so a failure log says which ones failed."""
    import numpy  # noqa: F401  (loads its BLAS, so threadpool_info lists it)
    from threadpoolctl import threadpool_info

    blas = sorted({f"{i['internal_api']}:{i.get('architecture')}" for i in threadpool_info()
                   if i["user_api"] == "blas"})
    return (f"torch: {torch.__version__}, {torch.get_num_threads()} thread(s), "
            f"cpu capability {torch.backends.cpu.get_cpu_capability()}; "
            f"numpy/scipy BLAS: {', '.join(blas)}")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
