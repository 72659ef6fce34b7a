import warnings

import numpy as np
import pytest
import torch

from certopt.core import (
    CertoptError,
    InputTypeError,
    InputValueError,
    as_tensor,
    check_marginals,
    check_same_length,
    check_scalar,
    resolve_device,
    spec_of,
    to_numpy,
)


def test_as_tensor_copies_and_never_aliases_the_input():
    x = np.arange(6.0).reshape(2, 3)
    t = as_tensor(x, "x", shape=(2, 3))
    t[0, 0] = 100.0
    assert x[0, 0] == 0.0
    tt = torch.ones(3)
    out = as_tensor(tt, "tt")
    out += 1
    assert float(tt.sum()) == 3.0


def test_as_tensor_accepts_read_only_arrays_without_warning():
    x = np.arange(4.0)
    x.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = as_tensor(x, "x")
    assert torch.equal(t, torch.arange(4.0, dtype=torch.float64))


def test_as_tensor_default_dtype_is_float64_and_lists_work():
    t = as_tensor([[1, 2], [3, 4]], "x", ndim=2)
    assert t.dtype == torch.float64 and t.shape == (2, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_as_tensor_rejects_non_finite_and_names_argument(bad):
    x = np.ones((3, 2))
    x[1, 1] = bad
    with pytest.raises(InputValueError, match=r"^X: expected finite values, found 1 NaN/inf entry"):
        as_tensor(x, "X")


def test_as_tensor_shape_and_ndim_errors_name_the_argument():
    with pytest.raises(InputValueError, match=r"C: expected shape \(3, \*\), got \(2, 2\)"):
        as_tensor(np.ones((2, 2)), "C", shape=(3, None))
    with pytest.raises(InputValueError, match=r"y: expected a 1-D array, got shape \(2, 2\)"):
        as_tensor(np.ones((2, 2)), "y", ndim=1)


def test_as_tensor_type_errors():
    with pytest.raises(InputTypeError, match="x: expected a numpy array or torch tensor, got str"):
        as_tensor("abc", "x")
    with pytest.raises(InputTypeError, match="x: expected a numeric array"):
        as_tensor(np.array(["a", "b"]), "x")
    with pytest.raises(InputTypeError, match="complex"):
        as_tensor(np.ones(2) * 1j, "x")


def test_errors_are_builtin_subclasses():
    assert issubclass(InputValueError, ValueError) and issubclass(InputValueError, CertoptError)
    assert issubclass(InputTypeError, TypeError) and issubclass(InputTypeError, CertoptError)


def test_as_tensor_nonnegative():
    with pytest.raises(InputValueError, match=r"a: expected nonnegative values, minimum is -0.5"):
        as_tensor([0.5, -0.5], "a", nonnegative=True)


def test_spec_round_trip_preserves_kind_dtype_device():
    x32 = np.ones(3, dtype=np.float32)
    spec = spec_of(x32)
    out = spec.wrap(torch.ones(3, dtype=torch.float64))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    t16 = torch.ones(3, dtype=torch.float16)
    out_t = spec_of(t16).wrap(torch.ones(3, dtype=torch.float64))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float16
    assert spec_of([1, 2]).wrap(torch.ones(2)).dtype == np.float64
    assert spec_of(t16).working_dtype(torch.device("cpu")) == torch.float64


def test_check_scalar_ranges_and_types():
    assert check_scalar(0.5, "reg", low=0, low_inclusive=False) == 0.5
    assert check_scalar(np.float32(2.0), "k", integer=True, low=1) == 2
    with pytest.raises(InputValueError, match=r"reg: expected reg > 0, got 0.0"):
        check_scalar(0.0, "reg", low=0, low_inclusive=False)
    with pytest.raises(InputValueError, match=r"k: expected k >= 1, got 0"):
        check_scalar(0, "k", low=1, integer=True)
    with pytest.raises(InputTypeError, match="k: expected an integer"):
        check_scalar(1.5, "k", integer=True)
    with pytest.raises(InputTypeError, match="lam: expected a real number, got str"):
        check_scalar("1", "lam")
    with pytest.raises(InputTypeError):
        check_scalar(True, "lam")
    with pytest.raises(InputValueError, match="finite"):
        check_scalar(float("nan"), "lam")


def test_check_same_length():
    assert check_same_length(("X", torch.ones(4, 2)), ("y", torch.ones(4))) == 4
    with pytest.raises(InputValueError, match="X has 4, y has 3"):
        check_same_length(("X", torch.ones(4, 2)), ("y", torch.ones(3)))


def test_check_marginals_uniform_defaults_and_errors():
    a, b = check_marginals(None, None, 4, 2)
    assert torch.allclose(a, torch.full((4,), 0.25, dtype=torch.float64))
    assert torch.allclose(b, torch.full((2,), 0.5, dtype=torch.float64))
    with pytest.raises(InputValueError, match=r"a, b: expected equal total mass"):
        check_marginals([0.5, 0.5], [0.5, 0.4], 2, 2)
    with pytest.raises(InputValueError, match=r"^a: expected nonnegative"):
        check_marginals([1.5, -0.5], [0.5, 0.5], 2, 2)
    with pytest.raises(InputValueError, match=r"^b: expected shape \(3,\)"):
        check_marginals([0.5, 0.5], [0.5, 0.5], 2, 3)
    with pytest.raises(InputValueError, match=r"^a: expected finite"):
        check_marginals([np.nan, 1.0], [0.5, 0.5], 2, 2)
    with pytest.raises(InputValueError, match=r"^a: expected positive total mass"):
        check_marginals([0.0, 0.0], [0.0, 0.0], 2, 2)


def test_resolve_device():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputValueError, match="device"):
        resolve_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(InputValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_to_numpy_copies():
    t = torch.ones(2)
    arr = to_numpy(t)
    arr[0] = 5
    assert float(t[0]) == 1.0


def test_as_tensor_shares_memory_only_when_asked_and_no_conversion_is_needed():
    x = np.arange(6.0).reshape(2, 3)
    assert np.shares_memory(as_tensor(x, "x", copy=False).numpy(), x)
    assert not np.shares_memory(as_tensor(x, "x").numpy(), x)
    assert not np.shares_memory(as_tensor(x.astype(np.float32), "x", copy=False).numpy(), x)
    t = torch.ones(3)
    assert as_tensor(t, "t", dtype=None, copy=False).data_ptr() == t.data_ptr()


@pytest.mark.parametrize("entries", [[np.inf, -np.inf], [np.nan], [1e308, np.nan],
                                     [np.inf, np.nan, -np.inf]])
def test_check_finite_counts_every_bad_entry(entries):
    x = np.concatenate([np.ones(4), entries])
    count = int((~np.isfinite(x)).sum())
    with pytest.raises(InputValueError, match=f"found {count} NaN/inf entr"):
        as_tensor(x, "x")


def test_check_finite_accepts_finite_entries_whose_sum_overflows():
    x = np.full(4, np.finfo(np.float64).max)
    assert torch.equal(as_tensor(x, "x"), torch.from_numpy(x))
    assert torch.equal(as_tensor(-x, "x"), torch.from_numpy(-x))
