"""``python -m certopt`` runs the command-line interface."""

import sys

from certopt.cli import main

sys.exit(main())
