"""Fixtures of the generative suite; the tiny builders live in ``generative_tiny`` (a unique module name)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same global RNG state, so a failure reproduces when run on its own."""
    torch.manual_seed(0)
