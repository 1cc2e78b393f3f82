"""Shared fixtures for the core's proofs. The tiny-model builders live in ``core_tiny``: a module with a
unique name can be imported from every test file, whereas ``conftest`` is ambiguous once several test
folders have one."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same global RNG state, so a failure reproduces when run on its own."""
    torch.manual_seed(0)
