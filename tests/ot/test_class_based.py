"""Class-based OT against the cvxpy model, POT's exact OT and closed forms."""

import cvxpy as cp
import numpy as np
import ot as pot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from certopt.core.errors import ConvergenceWarning, InputTypeError, InputValueError
from certopt.core.result import Status
from certopt.ot.class_based import class_based
from certopt.ot.group_shrinkage import group_shrinkage
from certopt.ot.reference import class_based_reference
from certopt.ot.rounding import round_to_marginals


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: thread start-up dominates on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _problem(seed=0, n=24, m=18, shift=(0.3, 0.2)):
    """Three labelled Gaussian clusters and a shifted target; costs scaled to [0, 1]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centers = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.7]])
    X = centers[labels] + 0.6 * rng.normal(size=(n, 2))
    Y = centers[rng.integers(0, 3, m)] + 0.6 * rng.normal(size=(m, 2)) + np.asarray(shift)
    C = ((X[:, None] - Y[None]) ** 2).sum(-1)
    a = rng.uniform(0.5, 1.5, n)
    b = rng.uniform(0.5, 1.5, m)
    return a / a.sum(), b / b.sum(), C / C.max(), labels


def _purity(plan, labels):
    """Share of each target's mass that comes from its majority source class."""
    masses = np.stack([plan[labels == c].sum(0) for c in np.unique(labels)])
    return masses.max(0).sum() / plan.sum()


def test_group_shrinkage_matches_the_cvxpy_prox_of_one_column():
    rng = np.random.default_rng(1)
    n, reg, gamma = 12, 0.3, 0.5
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3])
    scores = rng.normal(size=(n, 3))
    scores[labels == 3, 1] = -1.0             # a class with no positive score
    plan, conjugate = group_shrinkage(torch.tensor(scores), torch.tensor(labels), 4, reg, gamma)
    total = 0.0
    for j in range(scores.shape[1]):
        t = cp.Variable(n, nonneg=True)
        regulariser = sum(cp.norm(t[labels == c], 2) for c in range(4))
        prob = cp.Problem(cp.Minimize(-scores[:, j] @ t + gamma / 2 * cp.sum_squares(t)
                                      + reg * regulariser))
        prob.solve(solver="CLARABEL")
        closed_form = plan[:, j].numpy()
        objective = (-scores[:, j] @ closed_form + gamma / 2 * closed_form @ closed_form
                     + reg * sum(np.linalg.norm(closed_form[labels == c]) for c in range(4)))
        # optimal: no better than the solver's value by more than its accuracy, never
        # worse; the strongly convex objective bounds ||t - t*||^2 <= 2 (f(t) - f*) / gamma
        assert prob.value - 1e-7 <= objective <= prob.value + 1e-10
        np.testing.assert_allclose(closed_form, t.value, atol=1e-4)
        total -= prob.value                            # conjugate = -min value
    assert float(conjugate) == pytest.approx(total, abs=1e-7)


@pytest.mark.parametrize("reg, gamma", [(0.1, 1e-3), (0.02, 1e-2), (0.5, 1e-2), (0.1, 0.1)])
def test_matches_the_cvxpy_reference(reg, gamma):
    a, b, C, labels = _problem()
    ref = class_based_reference(a, b, C, labels, reg, gamma)
    assert ref.status is Status.OPTIMAL
    res = class_based(a, b, C, labels, reg=reg, gamma=gamma, tol=1e-7)
    assert res.status is Status.OPTIMAL
    assert res.objective == pytest.approx(ref.value, rel=1e-4)
    assert res.marginal_error < 1e-6
    # weak duality against the reference optimum (cvxpy solves to ~1e-8)
    assert res.dual_value <= ref.value + 1e-8
    # the returned plan is feasible, so its objective is above the optimum
    assert res.objective >= ref.value - 1e-8
    assert 0 <= res.gap <= 1e-7 * max(1.0, abs(res.dual_value)) + 1e-15
    assert res.gap == pytest.approx(res.objective - res.dual_value, abs=1e-15)
    # the reported numbers are those of the returned plan
    plan = res.plan
    assert (plan >= 0).all()
    group = sum(np.linalg.norm(plan[labels == c], axis=0).sum() for c in range(3))
    objective = (C * plan).sum() + reg * group + gamma / 2 * (plan ** 2).sum()
    assert res.objective == pytest.approx(objective, rel=1e-12)
    assert res.cost == pytest.approx((C * plan).sum(), rel=1e-12)
    assert res.residuals["source_marginal"] == pytest.approx(np.abs(plan.sum(1) - a).sum(),
                                                             abs=1e-15)


def test_fista_optimizer_reaches_the_same_optimum():
    a, b, C, labels = _problem(seed=4, n=12, m=10)
    ref = class_based_reference(a, b, C, labels, 0.1, 0.1)
    res = class_based(a, b, C, labels, reg=0.1, gamma=0.1, optimizer="fista", tol=1e-7)
    assert res.status is Status.OPTIMAL
    assert res.objective == pytest.approx(ref.value, rel=1e-4)
    assert res.dual_value <= ref.value + 1e-8


def test_cvxpy_method_certifies_gamma_zero():
    a, b, C, labels = _problem(seed=2, n=15, m=12)
    ref = class_based_reference(a, b, C, labels, 0.1, 0.0)
    res = class_based(a, b, C, labels, reg=0.1, gamma=0.0, method="cvxpy")
    assert res.status is Status.OPTIMAL
    assert res.marginal_error < 1e-12                # rounded onto U(a, b)
    assert res.objective == pytest.approx(ref.value, rel=1e-6)
    assert res.dual_value <= ref.value + 1e-9        # a certified lower bound ...
    assert res.gap < 1e-5                            # ... and a tight one


def test_accelerated_agrees_with_cvxpy_method():
    a, b, C, labels = _problem(seed=3, n=15, m=12)
    fast = class_based(a, b, C, labels, reg=0.2, gamma=0.05)
    conic = class_based(a, b, C, labels, reg=0.2, gamma=0.05, method="cvxpy")
    assert fast.objective == pytest.approx(conic.objective, rel=1e-5)
    assert max(fast.dual_value, conic.dual_value) <= min(fast.objective, conic.objective) + 1e-12


def test_class_purity_at_least_that_of_exact_ot():
    a, b, C, labels = _problem(seed=0, n=40, m=30)
    exact = pot.emd(a, b, C)
    res = class_based(a, b, C, labels, reg=0.3, gamma=1e-3)
    assert res.status is Status.OPTIMAL
    # measured: 0.968 against 0.955 for exact OT on this seed
    assert _purity(res.plan, labels) >= _purity(exact, labels) + 0.01


def test_arbitrary_integer_labels_are_renumbered():
    a, b, C, labels = _problem(n=12, m=10)
    renamed = np.array([7, -2, 40])[labels]
    first = class_based(a, b, C, labels, reg=0.1, gamma=0.05)
    second = class_based(a, b, C, renamed.astype(float), reg=0.1, gamma=0.05)
    np.testing.assert_allclose(first.plan, second.plan, atol=1e-14)


def test_torch_in_torch_out_and_inputs_untouched():
    a, b, C, labels = _problem(n=12, m=10)
    copies = [x.copy() for x in (a, b, C, labels)]
    res_np = class_based(a, b, C, labels, reg=0.1, gamma=0.05)
    for x, y in zip((a, b, C, labels), copies):
        np.testing.assert_array_equal(x, y)
    assert isinstance(res_np.plan, np.ndarray) and res_np.plan.dtype == np.float64
    tensors = [torch.tensor(x) for x in (a, b, C, labels)]
    res_t = class_based(*tensors, reg=0.1, gamma=0.05)
    assert isinstance(res_t.plan, torch.Tensor) and res_t.plan.dtype == torch.float64
    assert all(isinstance(p, torch.Tensor) for p in res_t.potentials)
    np.testing.assert_allclose(res_t.plan.numpy(), res_np.plan, atol=1e-14)
    assert torch.equal(tensors[2], torch.tensor(C))
    res_32 = class_based(None, None, torch.tensor(C, dtype=torch.float32), labels, 0.1, 0.05)
    assert res_32.plan.dtype == torch.float32    # follows the input; computed in float64 on CPU


def test_budget_exhausted_is_a_status_and_a_warning():
    a, b, C, labels = _problem(n=12, m=10)
    with pytest.warns(ConvergenceWarning):
        res = class_based(a, b, C, labels, reg=0.1, gamma=1e-3, max_iter=5)
    assert res.status is Status.MAX_ITER
    assert res.marginal_error < 1e-12             # still a feasible plan ...
    assert res.gap > 0 and res.dual_value <= res.objective   # ... with an honest gap


@pytest.mark.parametrize("kwargs, error, match", [
    ({"labels": np.zeros(5, dtype=int)}, InputValueError, "labels: expected shape"),
    ({"labels": np.full(12, 0.5)}, InputTypeError, "labels: expected integer"),
    ({"labels": np.array(["x"] * 12)}, InputTypeError, "labels: expected integer"),
    ({"labels": "abc"}, InputTypeError, "labels"),
    ({"reg": -0.1}, InputValueError, "reg"),
    ({"gamma": -1e-3}, InputValueError, "gamma"),
    ({"gamma": 0.0}, InputValueError, "method='cvxpy'"),
    ({"method": "newton"}, InputValueError, "method"),
    ({"optimizer": "adam"}, InputValueError, "optimizer"),
    ({"tol": 0.0}, InputValueError, "tol"),
    ({"max_iter": 0}, InputValueError, "max_iter"),
])
def test_bad_input_names_the_argument(kwargs, error, match):
    a, b, C, labels = _problem(n=12, m=10)
    args = {"a": a, "b": b, "C": C, "labels": labels, **kwargs}
    with pytest.raises(error, match=match):
        class_based(**args)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 6))
def test_rounding_lands_on_the_marginals_and_moves_little_mass(seed, n, m):
    rng = np.random.default_rng(seed)
    a = torch.tensor(rng.dirichlet(np.ones(n)))
    b = torch.tensor(rng.dirichlet(np.ones(m)))
    plan = torch.tensor(rng.uniform(0, 2, (n, m))) * torch.outer(a, b)
    rounded = round_to_marginals(plan, a, b)
    assert (rounded >= 0).all()
    assert torch.allclose(rounded.sum(1), a, atol=1e-14)
    assert torch.allclose(rounded.sum(0), b, atol=1e-14)
    error = (plan.sum(1) - a).abs().sum() + (plan.sum(0) - b).abs().sum()
    assert (rounded - plan).abs().sum() <= 2 * error + 1e-14


@pytest.mark.cuda
def test_cuda_matches_cpu():
    a, b, C, labels = _problem(n=12, m=10)
    cpu = class_based(a, b, C, labels, reg=0.1, gamma=0.05)
    gpu = class_based(a, b, torch.tensor(C, device="cuda"), labels, reg=0.1, gamma=0.05)
    assert gpu.plan.device.type == "cuda"
    assert gpu.objective == pytest.approx(cpu.objective, rel=1e-6)
