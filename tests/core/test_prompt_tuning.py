"""Shallow prompt tuning is the backbone run on [prompt vectors; token embeddings], and nothing more."""

from __future__ import annotations

import pytest
import torch
from core_tiny import assert_close, build, pad_id, pad_rows, random_ids, real


@pytest.mark.parametrize("family", ["bert", "electra"])
def test_prompt_tuning_equals_backbone_on_prompts_before_token_embeddings(family: str) -> None:
    # ELECTRA's input embeddings (16) are narrower than its hidden states (32): prompts live in the former.
    built = build(family, method="prompt-tuning", prefix_length=3)
    ids, mask = pad_rows([random_ids(1, 6)[0], random_ids(1, 4, seed=2)[0]], "right", pad_id(family))
    prompts = built.model.prefixes["t"].embedding.weight
    assert prompts.shape == (3, built.reference_backbone.get_input_embeddings().embedding_dim)
    with torch.no_grad():
        ours = built.outputs(ids, mask)
        tokens = built.reference_backbone.get_input_embeddings()(ids)
        embeds = torch.cat([prompts.expand(ids.shape[0], -1, -1), tokens], dim=1)
        full_mask = torch.cat([torch.ones(ids.shape[0], 3, dtype=mask.dtype), mask], dim=1)
        theirs = built.reference_backbone(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
    assert_close(real(ours, mask), real(theirs[:, 3:], mask))
