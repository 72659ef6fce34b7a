"""Results print one line per field, arrays by shape: never their contents."""

import dataclasses
import importlib

import numpy as np
import pytest
import torch

import certopt.convexnn
import certopt.ot
import certopt.sdp
from certopt.convexnn.attack import AttackResult
from certopt.core import SolverResult, Status
from certopt.core.display import describe

N = 1000
ARRAY_ENTRY = 0.987654321


def _result_types() -> list[type]:
    importlib.import_module("certopt.convexnn.robust")  # loads RobustResult
    found, todo = [], [SolverResult]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found + [AttackResult]


def _value_for(annotation: str, kind: str):
    """A value of the annotated type; arrays are N x N (float64 numpy or float32 torch)."""
    big = torch.full((N, N), ARRAY_ENTRY, dtype=torch.float32) if kind == "torch" \
        else np.full((N, N), ARRAY_ENTRY)
    if annotation.startswith("tuple[Mapping"):
        return ({"lam": np.full(N, ARRAY_ENTRY)},) * 3
    if annotation.startswith("tuple"):
        return (big[0], None)
    if any(t in annotation for t in ("Tensor", "ArrayLike", "ndarray")):
        return big
    if "Mapping" in annotation or "dict" in annotation:
        return {f"r{i}": 0.123456789 for i in range(4)}
    simple = {"Status": Status.OPTIMAL, "float": 0.123456789, "int": 7, "bool": True, "str": "x"}
    return next(v for t, v in simple.items() if annotation.startswith(t))


def _instance(cls: type, kind: str):
    fields = dataclasses.fields(cls)
    values = {f.name: _value_for(str(f.type), kind) for f in fields
              if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    values.update({f.name: _value_for(str(f.type), kind) for f in fields
                   if f.name in ("residuals", "input_weight", "multipliers", "dual")})
    if "gap" in values:
        values.update(objective=1.0, bound=1.0 + 1e-14, gap=-1e-14)
    return cls(**values)


def test_every_result_type_is_covered():
    names = {cls.__name__ for cls in _result_types()}
    assert {"SolverResult", "TransportResult", "LipschitzResult", "ConvexNNResult",
            "RobustResult", "AttackResult"} <= names
    assert certopt.ot and certopt.sdp and certopt.convexnn


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("cls", _result_types(), ids=lambda c: c.__name__)
def test_repr_is_one_line_per_field_and_shows_no_array_contents(cls, kind):
    result = _instance(cls, kind)
    text = repr(result)
    lines = text.splitlines()
    shown = [f for f in dataclasses.fields(cls) if f.repr]
    assert len(lines) == len(shown) + 2 < 30
    assert lines[0] == f"{cls.__name__}(" and lines[-1] == ")"
    assert [line.split("=")[0].strip() for line in lines[1:-1]] == [f.name for f in shown]
    assert "0.98765" not in text
    if any(isinstance(getattr(result, f.name), (np.ndarray, torch.Tensor)) for f in shown):
        assert f"shape=({N}, {N})" in text
    if "gap" in {f.name for f in shown}:
        assert "    gap=0.0," in lines  # -1e-14 next to OPTIMAL is round-off


def test_only_a_small_negative_gap_of_an_optimal_result_is_shown_as_zero():
    def result(gap, status=Status.OPTIMAL, **arrays):
        return certopt.ot.TransportResult(
            objective=100.0, bound=100.0 - gap, gap=gap, status=status, cost=100.0,
            plan=arrays.get("plan", np.zeros((2, 2))), potentials=(np.zeros(2), None))

    assert result(-1e-7).displayed_gap == 0.0             # 1e-9 relative, float64
    assert result(-1e-5).displayed_gap == -1e-5           # 1e-7 relative: beyond round-off
    assert result(1e-12).displayed_gap == 1e-12           # a positive gap is evidence
    assert result(-1e-7, Status.MAX_ITER).displayed_gap == -1e-7
    assert result(-1e-2, plan=torch.zeros(2, 2)).displayed_gap == 0.0   # float32 plan
    assert result(-1e-1, plan=torch.zeros(2, 2)).displayed_gap == -1e-1
    summary = result(-1e-7).summary().splitlines()
    assert [line.split() for line in summary if line.split()[0] == "gap"] == [["gap", "0"]]


def test_describe_keeps_scalars_and_shortens_containers():
    assert describe(1.5) == "1.5" and describe(Status.MAX_ITER) == "Status.MAX_ITER"
    assert describe((np.zeros(3, dtype=np.float32),)) == "(ndarray(shape=(3,), dtype=float32),)"
    assert describe(torch.zeros(2, 3, dtype=torch.float64)) == \
        "Tensor(shape=(2, 3), dtype=float64, device=cpu)"
    assert describe(list(range(20))) == "list(len=20)"
    assert describe({"a": 1.0}) == "{'a': 1.0}"
    assert describe(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())) == "<Sequential>"
