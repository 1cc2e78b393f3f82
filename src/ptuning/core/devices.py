"""Where inference runs: the device ``eval``, ``predict`` and ``serve`` put the frozen backbone and prompts on.

Why: training goes through accelerate, which takes the GPU when there is one; the inference commands must do
the same, or a user with a GPU scores and serves on the CPU without being told. ``"auto"`` (the default) is
CUDA when torch sees a CUDA device, else the CPU; an explicit device that is not there is refused in one line.
"""

from __future__ import annotations

import torch

from ptuning.core.config import AUTO_DEVICE, ConfigError


def inference_device(requested: str | torch.device | None = AUTO_DEVICE) -> torch.device:
    """The torch device ``requested`` names (None or ``"auto"``: CUDA when available, else CPU)."""
    if requested is None or requested == AUTO_DEVICE:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {requested!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {requested!r}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"--device {requested}: torch sees no CUDA device here; use --device cpu or auto"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {requested}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return device
