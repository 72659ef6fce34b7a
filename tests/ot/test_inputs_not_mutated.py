"""Every OT solver leaves the caller's arrays as they were (a dense ``C`` in the working
dtype is shared with the solver, read only, not copied)."""

import numpy as np
import pytest
import torch

from certopt import ot as cot
from certopt.ot.problem import TransportProblem
from tests.ot.conftest import point_cloud_problem

SOLVERS = {
    "sinkhorn": lambda a, b, C: cot.sinkhorn(a, b, C, 0.05, tol=1e-5),
    "sinkhorn eps-scaling": lambda a, b, C: cot.sinkhorn(a, b, C, 1e-3, tol=1e-5),
    "sinkhorn log": lambda a, b, C: cot.sinkhorn(a, b, C, 0.05, tol=1e-5, method="log"),
    "sinkhorn no plan": lambda a, b, C: cot.sinkhorn(a, b, C, 0.05, tol=1e-5,
                                                     return_plan=False),
    "exact": lambda a, b, C: cot.exact(a, b, C),
    "quadratic": lambda a, b, C: cot.quadratic(a, b, C, 0.1),
    "sparse": lambda a, b, C: cot.sparse(a, b, C, 3, 0.1),
    "class_based": lambda a, b, C: cot.class_based(a, b, C, np.arange(len(a)) % 3),
}


@pytest.mark.filterwarnings("ignore::certopt.ConvergenceWarning")   # only mutation counts
@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_solvers_never_write_into_the_callers_arrays(name, kind):
    a, b, C = point_cloud_problem(12, 10, seed=21)
    inputs = [torch.tensor(v) for v in (a, b, C)] if kind == "torch" else [a, b, C]
    copies = [v.numpy().copy() if kind == "torch" else v.copy() for v in inputs]
    res = SOLVERS[name](*inputs)
    for given, before in zip(inputs, copies, strict=True):
        assert np.array_equal(np.asarray(given), before)
    if res.plan is not None:                     # the plan is the caller's own array
        plan = res.plan.numpy() if kind == "torch" else res.plan
        assert not np.shares_memory(plan, np.asarray(inputs[2]))


def test_a_dense_float64_cost_is_shared_and_others_are_converted():
    a, b, C = point_cloud_problem(5, 4, seed=22)
    assert np.shares_memory(TransportProblem.from_inputs(a, b, C).geometry.matrix.numpy(), C)
    single = C.astype(np.float32)
    matrix = TransportProblem.from_inputs(a, b, single).geometry.matrix
    assert matrix.dtype == torch.float64 and not np.shares_memory(matrix.numpy(), single)
    frozen = C.copy()
    frozen.flags.writeable = False
    assert not np.shares_memory(
        TransportProblem.from_inputs(a, b, frozen).geometry.matrix.numpy(), frozen)
