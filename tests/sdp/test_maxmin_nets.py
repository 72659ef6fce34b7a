"""The published MaxMin nets (../shared/data/maxmin_nets): plain and residual layouts."""

import numpy as np
import pytest
import scipy.io
import torch

from certopt.core.errors import InputValueError
from certopt.sdp import MaxMin, Residual, lipschitz_bound
from certopt.sdp.maxmin_nets import load_maxmin_mat, maxmin_network
from tests.sdp.test_orthogonal import DATA


def _maxmin(z):
    pairs = z.reshape(*z.shape[:-1], -1, 2)
    return torch.stack((pairs.max(-1).values, pairs.min(-1).values), -1).reshape(z.shape)


def test_residual_layout_is_the_documented_one():
    """f(x) = W_L · R_{L-1}(… R_2(W_1 x)), R_k(z) = z + MaxMin(W_k z)."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((6, 5)), rng.standard_normal((6, 6)),
               rng.standard_normal((6, 6)), rng.standard_normal((3, 6))]
    net = maxmin_network(weights, residual=True)
    assert sum(isinstance(m, Residual) for m in net) == 2
    x = torch.randn(4, 5, dtype=torch.float64)
    w = [torch.from_numpy(m) for m in weights]
    z = x @ w[0].T
    for middle in w[1:-1]:
        z = z + _maxmin(z @ middle.T)
    torch.testing.assert_close(net(x), z @ w[-1].T, rtol=0, atol=1e-12)
    plain = maxmin_network(weights, output_rows=[2])
    assert sum(isinstance(m, MaxMin) for m in plain) == 3 and plain[-1].out_features == 1


def test_bad_layouts():
    with pytest.raises(InputValueError, match="square"):
        maxmin_network([np.ones((4, 3)), np.ones((5, 4)), np.ones((2, 5))], residual=True)
    with pytest.raises(InputValueError, match="at least two"):
        maxmin_network([np.ones((4, 3))])


@pytest.mark.skipif(not (DATA / "resweights_5_32.mat").exists(), reason="needs maxmin_nets data")
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_published_residual_net_is_certified(norm):
    path = DATA / "resweights_5_32.mat"
    net = load_maxmin_mat(path, output_rows=[8] if norm == "inf" else None)
    weights = scipy.io.loadmat(path)["W"].ravel()
    assert sum(isinstance(m, Residual) for m in net) == len(weights) - 2
    fast = lipschitz_bound(net, norm=norm, method="fast", attack=False)
    result = lipschitz_bound(net, norm=norm)
    assert result.verified and fast.verified and result.check()
    assert result.lower <= result.bound <= fast.bound <= result.naive
    assert result.bound < 0.6 * result.naive  # the joint LMI keeps the skips exact
