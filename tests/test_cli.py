import subprocess
import sys

from certopt.cli import MODULES, build_parser, main


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
