"""make gpu-check's pipeline, run on the CPU (--dry-run) over stand-in benchmarks."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "_gpu_check.py"

FAKE = '''
import argparse
from _report import report
parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--device", default="cpu")
args = parser.parse_args()
report("fake n=10 solver", 0.5, device=args.device, bytes_moved=4e6)
report("fake n=10 anchor", 2.0, device="cpu")
'''


def _check(tmp_path, *args):
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def stand_ins(tmp_path):
    benchmarks, tests = tmp_path / "benchmarks", tmp_path / "tests"
    benchmarks.mkdir()
    tests.mkdir()
    (benchmarks / "fake.py").write_text(FAKE)
    (benchmarks / "broken.py").write_text('"--device"\nraise SystemExit("broken on purpose")\n')
    (benchmarks / "no_device.py").write_text("print('cpu only')\n")
    (tests / "test_nothing_cuda.py").write_text("def test_cpu():\n    pass\n")
    return ["--dry-run", "--benchmarks", str(benchmarks), "--tests", str(tests)]


def test_dry_run_tabulates_the_figures_and_reports_failures(tmp_path, stand_ins):
    done = _check(tmp_path, *stand_ins)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert out.startswith("gpu-check: CPU standing in (dry run), torch ")
    assert "cuda tests: 1 deselected" in out
    rows = {line.split()[2]: line.split()[3:] for line in out.splitlines()
            if line.startswith("fake n=10")}
    assert rows["solver"][:3] == ["0.500", "0.500", "1.0x"]       # cpu s, "gpu" s, ratio
    assert len(rows["solver"]) == 5 and rows["solver"][4].endswith("%")   # bandwidth bound
    assert rows["anchor"][:3] == ["2.000", "2.000", "1.0x"]
    assert "broken.py --device cpu: exit 1" in out and "broken on purpose" in out
    assert "no_device.py: not run (it has no --device option)" in out
    assert out.rstrip().splitlines()[-1].startswith("gpu-check: FAILED")


def test_dry_run_passes_when_every_step_does(tmp_path, stand_ins):
    done = _check(tmp_path, *stand_ins, "--only", "fake")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gpu-check: passed" in done.stdout and "broken" not in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    done = _check(tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("gpu-check: torch ") and "sees no CUDA device" in done.stdout
