"""`python -m ptuning` runs the CLI: the same entry point as the `ptuning` script, for environments
(a venv not on PATH, `torchrun -m`) where only the interpreter is at hand."""

import sys

from ptuning.cli import main

if __name__ == "__main__":
    sys.exit(main())
