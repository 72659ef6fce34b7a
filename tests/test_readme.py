"""Every ```python block of README.md runs as written.

Each block runs on its own, in a fresh namespace, in the order of the README;
its id is the heading above it.  A block whose first line is a comment
starting with ``# not run:`` is skipped, and the rest of that comment, which
the reader sees too, is the reason.  A snippet that does not converge (a
``ConvergenceWarning``) fails.
"""

import re
import warnings
from pathlib import Path

import pytest

from certopt.core.errors import ConvergenceWarning

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARK = "# not run:"


def readme_blocks() -> list:
    """``pytest.param(code, id=heading)`` for each python block of the README."""
    blocks, heading, text = [], "top", README.read_text("utf-8")
    for match in re.finditer(r"^(#+ [^\n]*)$|^```python\n(.*?)^```", text, flags=re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("#").strip().split(":")[0].strip("` ")
            continue
        code = "\n" * text.count("\n", 0, match.start(2)) + match.group(2)  # README's lines
        marks = []
        first = match.group(2).lstrip().splitlines()[0]
        if first.startswith(SKIP_MARK):
            marks.append(pytest.mark.skip(reason=first[len(SKIP_MARK):].strip()))
        blocks.append(pytest.param(code, id=heading, marks=marks))
    return blocks


def test_the_readme_has_python_blocks():
    assert len(readme_blocks()) >= 4


@pytest.mark.parametrize("code", readme_blocks())
def test_readme_block_runs(code: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)   # every snippet converges
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
