"""The prefix-aware eager and sdpa wrappers compute the same attention, for every registry family.

The backbone picks its backend at construction; the injector must switch it to the matching prefix-aware
twin, and the two twins must agree (masks are additive floats for eager, booleans for sdpa).
"""

from __future__ import annotations

import pytest
import torch
from core_tiny import DECODERS, INTERFACE_FAMILIES, assert_close, build, pad_id, pad_rows, random_ids, real


@pytest.mark.parametrize("family", INTERFACE_FAMILIES)
def test_eager_attention_equals_sdpa_with_prefix(family: str) -> None:
    sdpa = build(family, attn_implementation="sdpa")
    eager = build(family, attn_implementation="eager")
    assert sdpa.model.backbone.config._attn_implementation == "ptuning_sdpa"
    assert eager.model.backbone.config._attn_implementation == "ptuning_eager"
    eager.model.load_state_dict(sdpa.model.state_dict())
    side = "left" if family in DECODERS else "right"
    ids, mask = pad_rows([random_ids(1, 8)[0], random_ids(1, 5, seed=2)[0]], side, pad_id(family))
    with torch.no_grad():
        assert_close(real(eager.outputs(ids, mask), mask), real(sdpa.outputs(ids, mask), mask))
