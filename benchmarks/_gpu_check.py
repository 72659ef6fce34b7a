"""``make gpu-check``: every CUDA path of certopt run once, with its figures, in one table.

    python3 benchmarks/_gpu_check.py [--dry-run] [--budget SECONDS] [--only NAME ...]

On a machine whose torch sees a CUDA device it

1. installs the wheels of ``.whl/`` (``make gpu-wheels``) into ``.whl/site``
   when cvxpy, SCS, ECOS, Clarabel or POT cannot be imported (offline machines);
2. measures the device's copy bandwidth (bytes read + written per second);
3. runs the tests marked ``cuda``;
4. runs every benchmark script that has a ``--device`` option with ``--quick``,
   once on the CPU and once on the GPU, each reporting its figures through
   ``benchmarks/_report.py``;
5. prints one table: each figure's CPU and GPU seconds, their ratio, and where
   the script states the bytes it must move, the bandwidth bound
   (bytes / copy bandwidth) and the share of it the GPU run reached.

Everything shares one time budget (8 minutes by default); a step that would
outrun it is cut and marked.  Without CUDA the script says so and exits 0.
``--dry-run`` runs the same pipeline with the CPU in the GPU's place, to
check the plumbing on a machine without one.  The exit status is 1 when a
test or a benchmark failed, else 0.  Children run certopt from this checkout
(``PYTHONPATH``), whatever is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
NEEDED = ("cvxpy", "scs", "ecos", "clarabel", "ot")


class Budget:
    """Seconds left of the whole check."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def child_env(site: Path | None) -> dict[str, str]:
    """The environment of every child: this checkout (and its benchmarks/) first."""
    paths = [str(ROOT), str(ROOT / "benchmarks")] + ([str(site)] if site else [])
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1")


def missing_packages(env: dict[str, str]) -> list[str]:
    code = ("import importlib\n"
            f"for name in {NEEDED!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception:\n        print(name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return done.stdout.split()


def install_wheels() -> tuple[Path | None, str]:
    """(site folder to add to PYTHONPATH or None, one line saying what was done)."""
    missing = missing_packages(child_env(None))
    if not missing:
        return None, "packages: all installed"
    wheels = sorted(str(p) for p in WHEELS.glob("*.whl"))
    if not wheels:
        return None, f"packages: {' '.join(missing)} missing, no wheels in .whl/ (make gpu-wheels)"
    site = WHEELS / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--upgrade", "--target", str(site), *wheels], check=True)
    still = missing_packages(child_env(site))
    return site, (f"packages: {' '.join(missing)} installed from .whl/"
                  + (f"; still missing: {' '.join(still)}" if still else ""))


def copy_bandwidth(device: str) -> float:
    """Bytes per second a device-to-device copy reads and writes (best of 10)."""
    import torch

    count = (1 << 28) if device == "cuda" else (1 << 24)      # 1 GiB / 64 MiB of float32
    source = torch.ones(count, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(10):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        target.copy_(source)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 4 * count / best


def run(command: list[str], env: dict[str, str], timeout: float) -> tuple[int | str, str]:
    """(exit status, or "timeout"; the last lines of output) of one child."""
    if timeout < 5:
        return "no time left", ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout or ""
        return "timeout", output if isinstance(output, str) else output.decode()
    return done.returncode, done.stdout + done.stderr


def run_tests(tests: str, env: dict[str, str], budget: Budget) -> tuple[bool, str]:
    status, output = run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p",
                          "no:cacheprovider", tests], env, min(240.0, budget.left() - 60))
    counts = re.findall(r"^=*\s*(\d+ \w+.*) in [\d.]+s", output, flags=re.M)
    summary = counts[-1] if counts else f"no summary ({status})"
    ok = status in (0, 5)            # 5: no test selected
    return ok, f"cuda tests: {summary}" + ("" if ok else f" (exit {status})\n{_tail(output)}")


def run_benchmark(script: Path, device: str, env: dict[str, str], timeout: float
                  ) -> tuple[list[dict], str | None]:
    """(figures, None or what went wrong) of ``script --quick --device device``."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as figures:
        status, output = run([sys.executable, str(script), "--quick", "--device", device],
                             dict(env, CERTOPT_FIGURES=figures.name), timeout)
        rows = [json.loads(line) for line in figures.read().splitlines() if line.strip()]
    if status == 0:
        return rows, None
    return rows, f"{script.name} --device {device}: exit {status}\n{_tail(output)}"


def _tail(output: str, lines: int = 6) -> str:
    return "\n".join("    " + line for line in output.strip().splitlines()[-lines:])


def table(cpu: list[dict], gpu: list[dict], device: str, bandwidth: float) -> str:
    """The figures of both runs side by side (see the module docstring).

    ``gpu`` holds the figures of the run on ``device``; those it reports as
    measured on the CPU (anchors such as cvxpy or POT) repeat the CPU run's and
    are left out there."""
    cpu_by_name = {f["name"]: f for f in cpu}
    gpu_by_name = {f["name"]: f for f in gpu if f["device"] == device}
    names = list(cpu_by_name) + [name for name in gpu_by_name if name not in cpu_by_name]
    width = max([len(name) for name in names] + [6])
    lines = [f"{'figure':<{width}} {'cpu s':>9} {'gpu s':>9} {'ratio':>7} "
             f"{'bw bound s':>10} {'of bound':>8}"]
    for name in names:
        here, there = cpu_by_name.get(name), gpu_by_name.get(name)
        cells = [f"{here['seconds']:>9.3f}" if here else f"{'-':>9}",
                 f"{there['seconds']:>9.3f}" if there else f"{'-':>9}",
                 f"{here['seconds'] / there['seconds']:>6.1f}x" if here and there else " " * 7]
        if there and there.get("bytes"):
            bound = there["bytes"] / bandwidth
            cells += [f"{bound:>10.2e}", f"{bound / there['seconds']:>8.1%}"]
        lines.append(f"{name:<{width}} " + " ".join(cells).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: the CPU stands in for it (checks the plumbing)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for everything")
    parser.add_argument("--only", nargs="*", help="benchmark names (stems) to run")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "benchmarks")
    parser.add_argument("--tests", default=str(ROOT / "tests"))
    args = parser.parse_args(argv)
    benchmarks, tests = args.benchmarks.resolve(), str(Path(args.tests).resolve())
    budget = Budget(args.budget)
    try:
        import torch
    except ImportError:
        print("gpu-check: torch is not installed: no CUDA device to check")
        return 0
    if not torch.cuda.is_available() and not args.dry_run:
        print(f"gpu-check: torch {torch.__version__} sees no CUDA device; nothing to check "
              "(--dry-run checks the pipeline on the CPU)")
        return 0
    device = "cpu" if args.dry_run else "cuda"
    site, installed = install_wheels()
    env = child_env(site)
    bandwidth = copy_bandwidth(device)
    title = "CPU standing in (dry run)" if args.dry_run else torch.cuda.get_device_name()
    print(f"gpu-check: {title}, torch {torch.__version__}, copy bandwidth "
          f"{bandwidth / 1e9:.0f} GB/s (measured); {installed}", flush=True)
    tests_ok, tests_line = run_tests(tests, env, budget)
    print(tests_line, flush=True)

    scripts = sorted(p for p in benchmarks.glob("*.py") if not p.name.startswith("_")
                     and (not args.only or p.stem in args.only))
    runnable = [p for p in scripts if '"--device"' in p.read_text(encoding="utf-8")]
    notes = [f"{p.name}: not run (it has no --device option)" for p in scripts
             if p not in runnable]
    cpu, gpu, failures = [], [], []
    for index, script in enumerate(runnable):
        for side, figures in (("cpu", cpu), (device, gpu)):
            runs_left = 2 * (len(runnable) - index) - (side != "cpu")
            rows, problem = run_benchmark(script, side, env, budget.left() / runs_left)
            figures.extend(rows)
            if problem:
                failures.append(problem)
            print(f"  {script.name} --device {side}: {len(rows)} figures"
                  + (" (failed)" if problem else ""), flush=True)
    print(table(cpu, gpu, device, bandwidth))
    for line in notes + failures:
        print(line)
    print(f"gpu-check: {'passed' if tests_ok and not failures else 'FAILED'} "
          f"({args.budget - budget.left():.0f} s of {args.budget:.0f})")
    return 0 if tests_ok and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
