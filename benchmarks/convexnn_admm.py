"""ADMM vs cvxpy (Clarabel, SCS) vs Adam on the convex ReLU training problem.

Synthetic regression (a 5-neuron ReLU teacher plus noise), squared loss,
lam = 1e-2, P sampled patterns.  The reference optimum F* is Clarabel's
(certified by its own dual bound).  For each method we report the time to
reach |F - F*| / F* <= 1e-4, where F is the objective of the returned ReLU
network (math note section 1):

* ADMM: solved with tol = 1e-3, 1e-4, ... until the accuracy is reached
  (each run from scratch; the time of the first run that reaches it);
* cvxpy + Clarabel / SCS: one solve each (SCS with eps = 1e-6); with
  --reference FILE the Clarabel optimum and time are read from a JSON file
  (keys "objective", "solve_time", as written by an earlier run with --save)
  instead of solving again (a Clarabel solve at n = 2000 takes minutes);
* ``solver="auto"`` at the estimators' default tol (a certified gap of 1e-4), CPU s,
  with the ADMM's float32 phase (the default) and without it (``float64 only``);
* pyscnn (``make bench-deps``, optional: skipped with a message when absent),
  its augmented Lagrangian on the same patterns, scored by F like the others and
  certified by our certificate (the CPU seconds to a certified gap of 1e-4, as
  ``solver="auto"`` stops at);
* Adam on F directly, width 2P, full batch, lr 1e-2, until F <= (1 + 1e-4) F*
  or the time budget (5x ADMM's time, at least 5 s; 8 s with --quick)
  runs out.

Readings: benchmarks/RESULTS.md.

Usage: python benchmarks/convexnn_admm.py [--quick] [--device cuda] [--skip-cvxpy]
       [--skip-scs] [--skip-adam] [--size N D P] [--threads T] [--reference FILE] [--save FILE]
       [--cone-weight G]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch
from _report import report

from certopt.convexnn.admm import solve_admm
from certopt.convexnn.certificate import certify, fit_cone_multipliers
from certopt.convexnn.problem import ConvexReLUProblem, SolverOptions, random_generator
from certopt.convexnn.reference import solve_cvxpy
from certopt.convexnn.solvers import SOLVERS, choose_solver
from certopt.core.errors import ConvergenceWarning
from certopt.core.result import Status

ACCURACY = 1e-4
CERTIFIED_GAP = 1e-4
PYSCNN_NNLS_STEPS = 50_000
"""Cap on the cone-multiplier fit that certifies pyscnn's point (a full fit: it certifies
Clarabel's optimum at n = 300 to 1.3e-8, where the solvers' early-stopping fit gave 1.9e-2)."""
LAM = 1e-2
SEED = 0


def make_problem(n: int, d: int, P: int, device: str) -> ConvexReLUProblem:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    teacher = rng.standard_normal((d, 5))
    y = np.maximum(X @ teacher, 0.0) @ rng.standard_normal(5) / np.sqrt(d)
    y += 0.1 * rng.standard_normal(n)
    return ConvexReLUProblem.from_data(X, y, lam=LAM, n_patterns=P, random_state=SEED,
                                       device=device)


def relative_error(value: float, optimum: float) -> float:
    return abs(value - optimum) / abs(optimum)


def run_admm(problem: ConvexReLUProblem, optimum: float, cone_weight: float
             ) -> tuple[float, float, float, int]:
    """(seconds, CPU seconds of this process, relative error, iterations) of the first
    tol that reaches ACCURACY (CPU time is the fairer clock on a shared machine)."""
    for tol in (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6):
        if problem.X.is_cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            result = solve_admm(problem, SolverOptions(tol=tol, max_iter=20_000,
                                                       cone_weight=cone_weight))
        if problem.X.is_cuda:
            torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        error = relative_error(result.objective, optimum)
        if error <= ACCURACY:
            break
    return seconds, cpu_seconds, error, result.n_iter


def run_auto(problem: ConvexReLUProblem, optimum: float, mixed_precision: bool = True
             ) -> tuple[float, float, float, float, str]:
    """(seconds, CPU seconds, relative error, certified relative gap, solver) of ``solver="auto"``
    at the estimators' default tol (1e-4, a certified gap), on the same patterns."""
    start, cpu_start = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        options = SolverOptions(tol=1e-4, max_iter=20_000, mixed_precision=mixed_precision)
        result = SOLVERS["auto"](problem, options)
    gap = result.gap / abs(result.bound)
    return (time.perf_counter() - start, time.process_time() - cpu_start,
            relative_error(result.objective, optimum), gap, choose_solver(problem, options))


def run_pyscnn(problem: ConvexReLUProblem, optimum: float, n_gates: int
               ) -> tuple[float, float, float, float | None] | None:
    """(CPU seconds to ACCURACY, its relative error of F, its certified relative gap,
    CPU seconds to a certified gap <= CERTIFIED_GAP or None) of pyscnn's augmented
    Lagrangian on the same patterns and objective, or None (with a message) when pyscnn
    is not installed.

    The program is handed over as pyscnn's ConvexReLU model with the very gates
    :func:`make_problem` sampled (same seed; duplicated or empty patterns among them
    do not change the optimum), on the augmented data; its solution (v, w) is scored
    here as the F of its ReLU network, like every other row, and certified by our
    certificate (:func:`certopt.convexnn.certificate.certify`: the loss gradient at its
    prediction with fully fitted cone multipliers, PYSCNN_NNLS_STEPS; not timed), since
    pyscnn gives none.
    Tolerances 1e-3 ... 1e-7 are tried in turn (each run from scratch) until F is within
    ACCURACY of F* and the certified gap is <= CERTIFIED_GAP (``solver="auto"``'s
    tol).  The data are passed as they are (``unitize_data=False``: pyscnn would rescale
    the columns, another program) in float64.
    """
    try:
        import scnn.metrics  # the pyscnn package (its submodules are not imported with it)
        import scnn.models
        import scnn.optimize
        import scnn.regularizers
        import scnn.solvers
    except ImportError:
        print("      (pyscnn not installed: `make bench-deps` adds its row; skipped)")
        return None
    X = problem.X.detach().cpu().double().numpy()
    y = problem.y.detach().cpu().double().numpy()[:, None]
    gates = torch.randn(X.shape[1], n_gates, dtype=torch.float64,
                        generator=random_generator(SEED)).numpy()  # as sample_patterns draws
    accurate: tuple[float, float, float] | None = None
    certified_seconds = None
    for tol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        model = scnn.models.ConvexReLU(gates, c=1)
        solver = scnn.solvers.AL(model, tol=tol)
        start = time.process_time()
        model, _ = scnn.optimize.optimize_model(
            model, solver, scnn.metrics.Metrics(), X, y, X, y,
            regularizer=scnn.regularizers.NeuronGL1(problem.lam), return_convex=True,
            unitize_data=False, device="cpu", dtype="float64")
        seconds = time.process_time() - start
        v, w = (torch.as_tensor(np.asarray(part)[0]).to(problem.X) for part in model.parameters)
        dual = problem.loss.project_dual(
            problem.loss.gradient(problem.predict_convex(v, w), problem.y), problem.y)
        mu, nu = fit_cone_multipliers(problem, dual, max_steps=PYSCNN_NNLS_STEPS,
                                      min_progress=0.0)
        cert = certify(problem, v, w, duals=[dual], mu=mu, nu=nu, status=Status.OPTIMAL,
                       n_iter=0, solve_time=0.0, solver="pyscnn", nnls_steps=0)
        error = relative_error(cert.objective, optimum)
        gap = cert.gap / abs(cert.bound)
        print(f"      (pyscnn tol {tol:.0e}: {seconds:.2f} CPU s, relative error {error:.1e}, "
              f"certified relative gap {gap:.1e})")
        if accurate is None and error <= ACCURACY:
            accurate = (seconds, error, gap)
        if certified_seconds is None and gap <= CERTIFIED_GAP:
            certified_seconds = seconds
        if accurate is not None and certified_seconds is not None:
            break
    if accurate is None:
        accurate = (seconds, error, gap)
    return (*accurate, certified_seconds)


def run_adam(problem: ConvexReLUProblem, optimum: float, budget: float
             ) -> tuple[float, float]:
    """(seconds, signed (min F - F*) / F*) of Adam on F; stops at F <= (1 + ACCURACY) F*."""
    torch.manual_seed(0)
    like = {"dtype": problem.X.dtype, "device": problem.X.device}
    width = 2 * problem.n_patterns
    U = (torch.randn(width, problem.n_features, **like) / problem.n_features ** 0.5)
    alpha = torch.randn(width, **like) / width ** 0.5
    U.requires_grad_(True)
    alpha.requires_grad_(True)
    optimizer = torch.optim.Adam([U, alpha], lr=1e-2)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < budget:
        for _ in range(50):
            optimizer.zero_grad()
            F = problem.loss.value(problem.network_output(U, alpha, problem.X), problem.y) \
                + 0.5 * problem.lam * ((U ** 2).sum() + (alpha ** 2).sum())
            F.backward()
            optimizer.step()
        best = min(best, float(F.detach()))
        if best <= (1.0 + ACCURACY) * optimum:
            break
    return time.perf_counter() - start, (best - optimum) / abs(optimum)


def reference_rows(problem: ConvexReLUProblem, args: argparse.Namespace
                   ) -> tuple[float, list[tuple[str, float, float]]]:
    """(F*, rows of the cvxpy solvers): Clarabel solved here or read from --reference."""
    if args.reference:
        with open(args.reference) as handle:
            saved = json.load(handle)
        optimum = float(saved["objective"])
        rows = [("cvxpy+Clarabel*", float(saved["solve_time"]), 0.0)]
    else:
        ref = solve_cvxpy(problem, SolverOptions(cvxpy_solver="CLARABEL"))
        optimum = ref.objective
        rows = [("cvxpy+Clarabel", ref.solve_time, 0.0)]
        if args.save:
            with open(args.save, "w") as handle:
                json.dump({"objective": ref.objective, "solve_time": ref.solve_time}, handle)
    if not args.skip_scs:
        scs = solve_cvxpy(problem, SolverOptions(cvxpy_solver="SCS"))
        rows.append(("cvxpy+SCS", scs.solve_time, relative_error(scs.objective, optimum)))
    return optimum, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 1 minute)")
    parser.add_argument("--device", default="cpu", help="device of ADMM and Adam (cpu, cuda)")
    parser.add_argument("--skip-cvxpy", action="store_true",
                        help="no cvxpy runs; the optimum is ADMM's at tol 1e-8")
    parser.add_argument("--skip-scs", action="store_true", help="no SCS run")
    parser.add_argument("--skip-adam", action="store_true", help="no Adam run")
    parser.add_argument("--size", type=int, nargs=3, metavar=("N", "D", "P"),
                        help="one problem size instead of the defaults")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for ADMM and Adam")
    parser.add_argument("--cone-weight", type=float, default=SolverOptions().cone_weight,
                        help="the ADMM's SolverOptions.cone_weight (default: the default)")
    parser.add_argument("--reference", metavar="FILE",
                        help="JSON with the Clarabel 'objective' and 'solve_time' (one size)")
    parser.add_argument("--save", metavar="FILE", help="write the Clarabel result there")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [(300, 10, 20)] if args.quick else [(2000, 50, 100), (4000, 50, 200)]
    if args.size:
        sizes = [tuple(args.size)]
    if (args.reference or args.save) and len(sizes) != 1:
        parser.error("--reference and --save need a single size (--size or --quick)")
    header = (f"{'n':>5} {'d':>3} {'P':>4} | {'method':<32} {'seconds':>9} {'rel.err':>9} "
              f"{'vs ADMM':>8}")
    print(f"torch threads: {torch.get_num_threads()}, ADMM cone_weight: {args.cone_weight:g}")
    print(header)
    print("-" * len(header))
    for n, d, P in sizes:
        problem = make_problem(n, d, P, args.device)
        rows = []
        if args.skip_cvxpy:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                optimum = solve_admm(problem, SolverOptions(tol=1e-8, max_iter=50_000)).objective
        else:
            optimum, rows = reference_rows(make_problem(n, d, P, "cpu"), args)
        seconds, cpu_seconds, error, iters = run_admm(problem, optimum, args.cone_weight)
        admm_seconds = seconds
        rows.insert(0, (f"ADMM ({args.device}, {iters} it)", seconds, error))
        auto_seconds, auto_cpu, auto_error, auto_gap, auto_name = run_auto(problem, optimum)
        rows.insert(1, (f"auto -> {auto_name}", auto_seconds, auto_error))
        print(f"      (solver='auto' chose {auto_name}: certified relative gap {auto_gap:.1e}, "
              f"{auto_cpu:.2f} CPU s)")
        plain_seconds, plain_cpu, plain_error, plain_gap, _ = run_auto(problem, optimum, False)
        rows.insert(2, (f"auto -> {auto_name}, float64 only", plain_seconds, plain_error))
        print(f"      (float64 only, mixed_precision=False: certified relative gap "
              f"{plain_gap:.1e}, {plain_cpu:.2f} CPU s)")
        pyscnn = run_pyscnn(problem, optimum, P)
        if pyscnn is not None:
            pyscnn_seconds, pyscnn_error, pyscnn_gap, pyscnn_certified = pyscnn
            rows.append(("pyscnn (AL)", pyscnn_seconds, pyscnn_error))
            print(f"      (pyscnn at that accuracy: certified relative gap {pyscnn_gap:.1e} "
                  f"by our certificate; CPU s to a certified gap <= {CERTIFIED_GAP:g}: "
                  + ("never (tol down to 1e-7)" if pyscnn_certified is None
                     else f"{pyscnn_certified:.2f}") + f"; auto: {auto_cpu:.2f})")
        if not args.skip_adam:
            budget = min(max(5.0, 5 * admm_seconds), 8.0 if args.quick else 600.0)
            adam_seconds, adam_error = run_adam(problem, optimum, budget)
            rows.append((f"Adam ({args.device})", adam_seconds, adam_error))
        for name, secs, err in rows:
            on_device = name.startswith(("ADMM", "Adam"))
            report(f"convexnn_admm n={n} d={d} P={P} {name.split(' (')[0]}", secs,
                   device=args.device if on_device else "cpu")
            print(f"{n:>5} {d:>3} {P:>4} | {name:<32} {secs:>9.2f} {err:>9.1e} "
                  f"{secs / admm_seconds:>7.1f}x")
        print(f"      (ADMM used {cpu_seconds:.2f} s of CPU time for its {seconds:.2f} s of "
              "wall time; with 1 thread, more wall time means a loaded machine)")
        print(f"      (F* = {optimum:.8g}, optimum over the P sampled patterns; 'vs ADMM' = "
              "method time / ADMM time; Adam: signed (F - F*)/F*, its time is the budget "
              "unless F <= (1 + 1e-4) F*; a negative value is a network outside the sampled "
              "patterns' class" + ("; *: read from --reference" if args.reference else "")
              + ")")


if __name__ == "__main__":
    main()
