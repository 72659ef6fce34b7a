"""`certopt lipschitz`: TorchScript and state-dict models, clear errors for anything else."""

import re

import pytest
import torch
from torch import nn

from certopt.cli import main
from certopt.core.errors import InputValueError, UnsupportedError
from certopt.sdp import lipschitz_bound
from certopt.sdp._cli import load_model, parse_arch

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(),
                         nn.Sequential(nn.Linear(6, 5, bias=False), nn.LeakyReLU(0.2)),
                         nn.Flatten(), nn.Linear(5, 2))


def _same_function(a, b):
    x = torch.randn(7, 4)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-6)


def test_parse_arch():
    net = parse_arch("784, 32,ReLU,16,leakyrelu:0.1,tanh,10")
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "ReLU", "Linear", "LeakyReLU", "Tanh", "Linear"]
    assert net[3].negative_slope == 0.1 and net[0].in_features == 784
    for bad in ("relu,3", "3,gelu,2", "4", "3,leakyrelu:x,2", "3,relu:1,2"):
        with pytest.raises(InputValueError, match="--arch"):
            parse_arch(bad)


def test_torchscript_and_state_dict_round_trips(net, tmp_path, capsys):
    script_path, state_path = tmp_path / "net.pt", tmp_path / "state.pt"
    torch.jit.save(torch.jit.script(net), script_path)
    torch.save(net.state_dict(), state_path)
    from_script = load_model(str(script_path))
    from_state = load_model(str(state_path), "4,6,relu,5,leakyrelu:0.2,2")
    _same_function(net, from_script)
    _same_function(net, from_state)
    assert from_state[2].bias is None

    assert main(["lipschitz", str(script_path), "--no-attack", "--solver", "clarabel"]) == 0
    out = capsys.readouterr().out
    expected = lipschitz_bound(net, solver="CLARABEL", attack=False).bound
    assert f"{expected:.6g}" in out
    assert re.search(r"^\s*verified\s+True$", out, re.MULTILINE)
    assert main(["lipschitz", str(state_path), "--arch", "4,6,relu,5,leakyrelu:0.2,2",
                 "--norm", "inf", "--method", "naive"]) == 0
    assert "naive" in capsys.readouterr().out


def test_bad_models(net, tmp_path, capsys):
    pickled = tmp_path / "full.pt"
    torch.save(net, pickled)  # a whole pickled module: never unpickled by certopt
    with pytest.raises(InputValueError, match="not a TorchScript file"):
        load_model(str(pickled))
    with pytest.raises(InputValueError, match="weights_only"):
        load_model(str(pickled), "4,6,relu,5,2")
    with pytest.raises(InputValueError, match="no such file"):
        load_model(str(tmp_path / "missing.pt"))
    state_path = tmp_path / "state.pt"
    torch.save(net.state_dict(), state_path)
    with pytest.raises(InputValueError, match="check --arch"):
        load_model(str(state_path), "4,6,relu,2")
    with pytest.raises(InputValueError, match="left over"):
        load_model(str(state_path), "4,6")
    scripted = tmp_path / "gelu.pt"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(2, 2), nn.GELU())), scripted)
    with pytest.raises(UnsupportedError, match="GELU"):
        load_model(str(scripted))
    assert main(["lipschitz", str(pickled)]) == 2
    assert "certopt: error: MODEL" in capsys.readouterr().err
