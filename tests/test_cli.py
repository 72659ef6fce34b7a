import subprocess
import sys

import numpy as np
import pytest
import torch

from certopt.cli import MODULES, build_parser, main, one_line
from certopt.ot import _cli as ot_cli


def test_import_ot_stays_pot():
    out = subprocess.run(
        [sys.executable, "-c",
         "import ot, certopt, certopt.ot; print(ot.__name__, ot.emd.__module__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out[0] == "ot" and out[1].startswith("ot.")


def test_parser_lists_demo_and_modules():
    parser = build_parser()
    help_text = parser.format_help()
    assert "demo" in help_text
    assert [m for m, _ in MODULES] == ["convexnn", "sdp", "ot"]


def test_demo_runs_every_section(capsys):
    assert main(["demo", "--only", "ot"]) == 0
    out = capsys.readouterr().out
    assert "certopt.ot" in out


def _clouds(tmp_path, n):
    rng = np.random.default_rng(0)
    for name in ("source", "target"):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(n, 2)))
    return [str(tmp_path / "source.npy"), str(tmp_path / "target.npy")]


def test_plot_to_a_missing_directory_fails_in_one_line_before_the_solve(tmp_path, capsys,
                                                                        monkeypatch):
    def no_solve(*args, **kwargs):
        raise AssertionError("solved before checking --plot")

    monkeypatch.setattr(ot_cli, "sparse", no_solve)
    missing = tmp_path / "missing" / "plan.png"
    assert main(["ot", *_clouds(tmp_path, 5), "--plot", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"certopt: error: --plot: directory {missing.parent} does not exist\n"


def test_verbose_draws_a_progress_bar_and_quiet_prints_only_the_answer(tmp_path, capsys):
    files = _clouds(tmp_path, 300)
    assert main(["ot", *files, "--verbose"]) == 0
    captured = capsys.readouterr()
    assert "sparse OT" in captured.err and "%|" in captured.err
    assert "it/s" in captured.err or "s/it" in captured.err
    assert "status                         optimal" in captured.out

    assert main(["ot", *files, "--quiet", "--max-iter", "3", "--no-repair"]) == 0  # would warn
    captured = capsys.readouterr()
    assert captured.err == "" and "max_iter" in captured.out


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_errors_are_printed_in_full_on_one_line_without_escape_codes(tmp_path, capsys):
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    torch.save({"weights": np.zeros(3)}, tmp_path / "numpy.pt")        # refused by weights_only
    torch.jit.save(torch.jit.script(net), tmp_path / "script.pt")
    for name in ("numpy.pt", "script.pt"):        # torch's "looks like TorchScript" is silenced
        assert main(["lipschitz", str(tmp_path / name), "--arch", "2,3,relu,1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "\x1b" not in err and err.startswith("certopt: error:")
        assert len(err) > 200 and "weights_only" in err


def test_one_line_strips_escape_codes_and_joins_lines():
    assert one_line("\x1b[1mbold\x1b[0m text\n  second   line\n") == "bold text second line"
