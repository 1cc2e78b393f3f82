"""The generation suite reuses the generative suite's tiny causal LMs and word-level tokenizer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
