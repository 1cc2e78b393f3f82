"""``ptuning.cli`` for torchrun, reporting afterwards whether the CLI closed the process group it opened."""

import os
import sys

import torch.distributed

from ptuning.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    still_open = torch.distributed.is_initialized()
    print(
        f"rank {os.environ.get('RANK')}: process group open after the CLI returned: {still_open}", flush=True
    )
    sys.exit(code)
