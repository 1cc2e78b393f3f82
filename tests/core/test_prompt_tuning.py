"""Shallow prompt tuning is the backbone run on [prompt vectors; token embeddings], and nothing more."""

from __future__ import annotations

import pytest
import torch
from core_tiny import assert_close, build, pad_id, pad_rows, random_ids, real

from ptuning.core.config import PrefixConfig
from ptuning.core.prefix import PromptEmbedding


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


@pytest.mark.parametrize("family", ["gemma2", "mpnet", "deberta-v2", "llama"])
def test_padding_and_mixed_prompt_lengths_never_sit_between_prompt_and_tokens(family: str) -> None:
    """Left padding (decoders, generate) and a shorter prompt in a mixed batch used to land between a row's
    prompt and its tokens: sliding windows (Gemma 2) and index-based relative positions (MPNet, DeBERTa)
    counted them, so the row differed from itself alone (0.37 / 4e-4 / 1e-4); now equal to fp32 rounding."""
    built = build(family, method="prompt-tuning", prefix_length=3)  # tiny Gemma 2 slides a 6-token window
    model = built.model
    with torch.no_grad():
        model.prefixes["t"].embedding.weight.normal_(0, 1)
    width = model.prefixes["t"].embedding.weight.shape[1]
    model.prefixes["u"] = PromptEmbedding(
        PrefixConfig(prefix_length=5, dropout=0.0), model.geometry, torch.randn(5, width)
    ).eval()

    def outputs(ids, mask, names):
        with torch.no_grad():
            if built.is_decoder:
                return model(ids, mask, task="t", row_prefixes=names).logits
            return model.encode(ids, mask, None, names)

    row = random_ids(1, 5)[0]
    alone = outputs(row[None], torch.ones(1, 5, dtype=torch.long), ["t"])[0]
    for side, other, names in [("left", 9, ["t", "t"]), ("right", 5, ["t", "u"])]:
        ids, mask = pad_rows([row, random_ids(1, other, seed=2)[0]], side, pad_id(family))
        assert_close(real(outputs(ids, mask, names)[:1], mask[:1]), alone)
