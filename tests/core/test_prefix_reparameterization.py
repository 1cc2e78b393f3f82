"""The prefix MLP is a training aid: collapsing it into the table it produces changes no output."""

from __future__ import annotations

import pytest
import torch
from core_tiny import DECODERS, assert_close, build, pad_id, pad_rows, random_ids

from ptuning.core.prefix import PrefixEncoder


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_collapse_prefixes_gives_identical_logits(family: str) -> None:
    model = build(family, method="prefix-mlp", mlp_hidden_size=16).model
    side = "left" if family in DECODERS else "right"
    ids, mask = pad_rows([random_ids(1, 6)[0], random_ids(1, 4, seed=2)[0]], side, pad_id(family))
    with torch.no_grad():
        before = model(ids, mask).logits
        size_before = sum(p.numel() for p in model.prefixes.parameters())
        model.collapse_prefixes()
        after = model(ids, mask).logits
    encoder = model.prefixes["t"]
    assert isinstance(encoder, PrefixEncoder) and encoder.mlp is None
    assert sum(p.numel() for p in model.prefixes.parameters()) < size_before
    assert_close(after, before)
