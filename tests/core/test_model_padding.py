"""Padding is invisible: extra right or left padding leaves every real token's output unchanged.

Positions come from the attention mask (not the column index) and prefix columns stay visible to every
real query, so a row's result must not depend on how its batch was padded.
"""

from __future__ import annotations

import pytest
import torch
from core_tiny import FAMILIES, assert_close, build, pad_id, pad_rows, random_ids, real


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", FAMILIES)
def test_padding_does_not_change_real_token_outputs(family: str, side: str) -> None:
    built = build(family)
    row, longer = random_ids(1, 5)[0], random_ids(1, 9, seed=2)[0]
    ids, mask = pad_rows([row, longer], side, pad_id(family))
    with torch.no_grad():
        alone = built.outputs(row[None], torch.ones(1, len(row), dtype=torch.long))
        batched = built.outputs(ids, mask)
    assert mask[0].sum() < mask.shape[1]  # row 0 really is padded
    assert_close(real(batched[:1], mask[:1]), alone[0])
