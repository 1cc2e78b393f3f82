"""detach_backbone gives an encoder-decoder back as found: T5 and BART keep config copies in their stacks."""

from __future__ import annotations

import pytest
import torch
from seq2seq_tiny import random_tokens, seq2seq_model

from ptuning.core.injection import INSTANCE_ATTRIBUTES


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_detach_restores_every_config_copy_and_removes_injection_attributes(family: str) -> None:
    model = seq2seq_model(family)
    backbone = model.backbone
    ids, labels = random_tokens(2, 5), random_tokens(2, 4, seed=1)
    model.detach_backbone()
    stacks = [m for m in backbone.modules() if hasattr(m, "config") and m is not backbone]
    implementations = {m.config._attn_implementation for m in stacks} | {backbone.config._attn_implementation}
    assert not any(name.startswith("ptuning") for name in implementations), implementations
    leftovers = [
        (name, key) for name, m in backbone.named_modules() for key in vars(m) if key in INSTANCE_ATTRIBUTES
    ]
    assert leftovers == []
    with torch.no_grad():  # the backbone runs as a plain model again
        backbone.eval()
        backbone(input_ids=ids, labels=labels)
