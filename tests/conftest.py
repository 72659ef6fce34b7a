"""Shared pytest configuration.

* The ``cuda`` marker skips a test without a GPU.
* Torch runs single-threaded: test problems are small, so thread hand-offs
  cost more than they save, and timings do not depend on the machine's load.
"""

import pytest
import torch


def pytest_configure(config):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
