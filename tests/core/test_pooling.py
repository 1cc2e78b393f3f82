"""Pooling a head's input from the last hidden states, with padding on either side."""

from __future__ import annotations

import pytest
import torch

from ptuning.core.heads import Pooling, pool


@pytest.fixture
def hidden() -> torch.Tensor:
    return torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)


def test_each_pooling_reads_the_real_tokens_wherever_the_padding_is(hidden) -> None:
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])  # right-padded row, left-padded row
    assert torch.equal(pool(hidden, mask, Pooling.FIRST), hidden[[0, 1], [0, 2]])
    assert torch.equal(pool(hidden, mask, Pooling.LAST), hidden[[0, 1], [2, 3]])
    assert torch.equal(pool(hidden, mask, Pooling.MEAN)[0], hidden[0, :3].mean(0))
    assert torch.equal(pool(hidden, mask, Pooling.MEAN)[1], hidden[1, 2:].mean(0))


@pytest.mark.parametrize("pooling", list(Pooling))
def test_a_row_of_padding_only_does_not_break_the_batch(hidden, pooling) -> None:
    """collate pads an empty feature to a row with no real token: first-token pooling indexed past the end."""
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    pooled = pool(hidden, mask, pooling)
    assert torch.equal(pooled[0], pool(hidden[:1], mask[:1], pooling)[0])  # the real row is unaffected
    assert torch.isfinite(pooled[1]).all()
