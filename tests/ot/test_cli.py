"""``certopt ot`` and the OT demo."""

import re

import numpy as np
import pytest

from certopt.cli import main
from certopt.ot._cli import demo


def test_ot_command_prints_the_certificate_and_saves_a_plot(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "src.npy", rng.standard_normal((20, 2)))
    np.save(tmp_path / "tgt.npy", rng.standard_normal((20, 2)) + 1)
    out_png = tmp_path / "plan.png"
    code = main(["ot", str(tmp_path / "src.npy"), str(tmp_path / "tgt.npy"), "--k", "3",
                 "--reg", "0.1", "--repair", "--plot", str(out_png)])
    assert code == 0
    out = capsys.readouterr().out
    for field in ("bound", "gap", "residual.source_marginal", "residual.max_column_nnz"):
        assert field in out
    assert out_png.stat().st_size > 1000


@pytest.mark.parametrize("k", ["3", "1000"])
def test_the_readmes_cli_example_ends_optimal(tmp_path, capsys, k):
    # the README's `certopt ot SRC TGT --k 3 --reg 0.1` on 60 -> 50 normal points ended
    # INACCURATE; --k 1000 (quadratic OT) ended with a bound of 1.79e16
    rng = np.random.default_rng(1)
    np.save(tmp_path / "src.npy", rng.standard_normal((60, 2)))
    np.save(tmp_path / "tgt.npy", rng.standard_normal((50, 2)))
    assert main(["ot", str(tmp_path / "src.npy"), str(tmp_path / "tgt.npy"), "--k", k,
                 "--reg", "0.1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s*status\s+optimal$", out, re.MULTILINE)
    assert re.search(r"^\s*gap_certified\s+True$", out, re.MULTILINE)
    error = float(re.search(r"residual.source_marginal\s+(\S+)", out).group(1))
    assert error <= 1e-9


def test_ot_command_reports_bad_files(tmp_path, capsys):
    np.save(tmp_path / "src.npy", np.ones((4, 2)))
    np.save(tmp_path / "tgt.npy", np.ones((4, 3)))
    assert main(["ot", str(tmp_path / "src.npy"), str(tmp_path / "tgt.npy")]) == 2
    assert "dimensions" in capsys.readouterr().err
    assert main(["ot", str(tmp_path / "missing.npy"), str(tmp_path / "tgt.npy")]) == 2
    assert "SOURCE" in capsys.readouterr().err


def test_demo_prints_a_certificate_and_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    demo(plot=True)
    out = capsys.readouterr().out
    assert re.search(r"^\s*status\s+optimal$", out, re.MULTILINE)
    assert (tmp_path / "ot_sparse_plan.png").exists()
