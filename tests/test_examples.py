"""Every script under examples/ runs to completion (they are what users copy)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {
        "adversarial_convex_training.py",
        "domain_adaptation.py",
        "lipschitz_groupsort.py",
    }


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(script: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=script.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "an example prints its results"
