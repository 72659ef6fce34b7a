"""The ``certopt`` command: ``certopt demo | train | lipschitz | ot``.

Each module plugs in through ``certopt/<module>/_cli.py``, which defines

* ``add_command(subparsers)``: registers its sub-command (``train``,
  ``lipschitz`` or ``ot``) with ``set_defaults(handler=function(args) -> int)``;
* ``demo(plot: bool) -> None``: one short end-to-end job that prints the
  answer and its certificate.

Every module command also gets ``--verbose`` (``args.verbose``: the handler
passes it to the solver, which then draws progress bars on stderr) and
``--quiet`` (no warnings).  Errors of certopt's own types are printed in full
on one line, without terminal escape codes, as ``certopt: error: ...`` with
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
import warnings
from collections.abc import Sequence
from types import ModuleType

from certopt import __version__
from certopt.core.errors import CertoptError

MODULES: tuple[tuple[str, str], ...] = (
    ("convexnn", "global training of a two-layer ReLU network"),
    ("sdp", "certified Lipschitz bound of a torch network"),
    ("ot", "optimal transport with a dual certificate"),
)


def _plugin(module: str) -> ModuleType:
    """The module's CLI plug-in, ``certopt.<module>._cli``."""
    return importlib.import_module(f"certopt.{module}._cli")


_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def one_line(message: str) -> str:
    """``message`` without terminal escape codes, its lines and spaces joined by one space."""
    return " ".join(_ESCAPE.sub("", message).split())


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true",
                       help="show the solver's progress on stderr")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no warnings: print the answer and errors only")


def _run_demo(args: argparse.Namespace) -> int:
    for module, title in MODULES:
        if args.only and module != args.only:
            continue
        print(f"== certopt.{module}: {title}")
        start = time.perf_counter()
        _plugin(module).demo(plot=args.plot)
        print(f"   [{time.perf_counter() - start:.1f} s]\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certopt",
        description="Convex and global-optimality solvers with certificates.",
    )
    parser.add_argument("--version", action="version", version=f"certopt {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="run one short certified job per module")
    demo.add_argument("--only", choices=[m for m, _ in MODULES], help="run one module's demo")
    demo.add_argument("--plot", action="store_true",
                      help="also save figures (PNG) in the current directory")
    demo.set_defaults(handler=_run_demo)
    for module, _ in MODULES:
        _plugin(module).add_command(commands)
    for name, command in commands.choices.items():
        if name != "demo":
            _add_output_options(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``certopt`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        if getattr(args, "quiet", False):
            warnings.simplefilter("ignore")
        try:
            return int(args.handler(args) or 0)
        except CertoptError as exc:
            print(f"certopt: error: {one_line(str(exc))}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
