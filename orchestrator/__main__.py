"""``python -m orchestrator``: the command-line interface."""

import sys

from orchestrator import cli

if __name__ == "__main__":
    sys.exit(cli.main())
