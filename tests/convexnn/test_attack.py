"""PGD attack: exact on linear models (closed-form worst case), ball kept, inputs untouched."""

import numpy as np
import pytest
import torch
from torch import nn

from certopt.convexnn.attack import pgd
from certopt.core.errors import InputTypeError, InputValueError


def linear_model(d: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(d, 1).double()
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = np.where(rng.normal(size=40) > 0, 1.0, -1.0)
    return X, y


@pytest.mark.parametrize("norm, dual", [("inf", 1), ("2", 2)])
def test_linear_model_worst_case_is_closed_form(data, norm, dual):
    X, y = data
    model = linear_model(5)
    w = model.weight.detach().numpy().ravel()
    b = float(model.bias.detach())
    eps = 0.3
    res = pgd(model, X, y, eps, steps=20, norm=norm)
    exact = y * (X @ w + b) - eps * np.linalg.norm(w, ord=dual)
    np.testing.assert_allclose(res.margins, exact, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.clean_margins, y * (X @ w + b), atol=1e-12)
    assert res.hinge_loss == pytest.approx(np.maximum(0, 1 - exact).mean(), abs=1e-10)
    assert res.accuracy == pytest.approx(np.mean(exact > 0))
    assert res.clean_accuracy == pytest.approx(np.mean(y * (X @ w + b) > 0))


def test_ball_respected_inputs_untouched_and_kind_kept(data):
    X, y = data
    X_copy = X.copy()
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    res = pgd(net, X, y, 0.2, steps=15, restarts=2, random_state=3)
    assert isinstance(res.X_adv, np.ndarray) and res.X_adv.dtype == np.float64
    assert np.abs(res.X_adv - X).max() <= 0.2 + 1e-12
    np.testing.assert_array_equal(X, X_copy)
    assert np.all(res.margins <= res.clean_margins + 1e-12)
    with torch.no_grad():
        attacked = y * net(torch.from_numpy(res.X_adv)).numpy().ravel()
    np.testing.assert_allclose(attacked, res.margins, atol=1e-12)

    X_t = torch.from_numpy(X).float()
    res_t = pgd(net.float(), X_t, torch.from_numpy(y), 0.2, steps=5, norm=np.inf)
    assert isinstance(res_t.X_adv, torch.Tensor) and res_t.X_adv.dtype == torch.float32


def test_zero_one_labels_estimator_and_multiclass(data):
    X, y = data
    model = linear_model(5)

    class Fitted:
        classes_ = np.array(["neg", "pos"])

        def to_torch(self):
            return model

    labels = np.where(y > 0, "pos", "neg")
    by_estimator = pgd(Fitted(), X, labels, 0.1, steps=5)
    by_zero_one = pgd(model, X, (y > 0).astype(int), 0.1, steps=5)
    by_signed = pgd(model, X, y, 0.1, steps=5)
    np.testing.assert_allclose(by_estimator.margins, by_signed.margins)
    np.testing.assert_allclose(by_zero_one.margins, by_signed.margins)

    torch.manual_seed(2)
    three = nn.Linear(5, 3).double()
    classes = np.arange(40) % 3
    res = pgd(three, X, classes, 0.1, steps=10)
    with torch.no_grad():
        out = three(torch.from_numpy(X)).numpy()
    true = out[np.arange(40), classes]
    out[np.arange(40), classes] = -np.inf
    np.testing.assert_allclose(res.clean_margins, true - out.max(axis=1), atol=1e-12)
    assert np.all(res.margins <= res.clean_margins + 1e-12)


def test_bad_input(data):
    X, y = data
    model = linear_model(5)
    with pytest.raises(InputValueError, match="eps"):
        pgd(model, X, y, -0.1)
    with pytest.raises(InputValueError, match="norm"):
        pgd(model, X, y, 0.1, norm="1")
    with pytest.raises(InputValueError, match="y"):
        pgd(model, X, y * 3, 0.1)
    with pytest.raises(InputValueError, match="y"):
        pgd(model, X, y[:-1], 0.1)
    with pytest.raises(InputTypeError, match="model_or_net"):
        pgd(object(), X, y, 0.1)
    with pytest.raises(InputValueError, match="X"):
        pgd(model, X[:, 0], y, 0.1)
