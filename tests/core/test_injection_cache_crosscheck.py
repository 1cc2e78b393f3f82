"""Shift mode agrees with transformers' own prefix path: a pre-filled ``DynamicCache`` of the same prefix.

That path is what the reference P-tuning v2 code and PEFT use (prefix as past key/values, real tokens at
positions P..P+T-1), so agreement ties our mechanism to theirs on an independent implementation.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from core_tiny import DECODERS, assert_close, build, pad_id, pad_rows, random_ids, real
from torch import nn
from transformers import DynamicCache

from ptuning.core.prefix import PrefixKV


def cache_argument(backbone: nn.Module) -> str:
    """transformers 5.24 renames ``past_key_values`` to ``cache``; use whichever this version takes."""
    parameters = inspect.signature(backbone.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def prefilled_cache(prefix: PrefixKV) -> DynamicCache:
    """A fresh cache holding the prefix as past keys/values (a cache is mutated by every forward)."""
    cache = DynamicCache()
    for layer, (keys, values) in sorted(prefix.layers.items()):
        cache.update(keys.clone(), values.clone(), layer)
    return cache


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "llama"])
def test_shift_mode_equals_backbone_with_prefilled_dynamic_cache(family: str) -> None:
    built = build(family, prefix_length=5, position_mode="shift")
    # Right padding: the cache path numbers positions P.. from the left (RoBERTa: from its pad-aware
    # cumsum plus the cache length), which matches ours for real tokens on this side.
    ids, mask = pad_rows([random_ids(1, 7)[0], random_ids(1, 4, seed=2)[0]], "right", pad_id(family))
    with torch.no_grad():
        ours = built.outputs(ids, mask)
        prefix = built.model.prefix_kv(["t"]).expanded_to(ids.shape[0])
        reference = built.reference_backbone
        assert reference.config._attn_implementation == "sdpa"
        extended_mask = torch.cat([torch.ones(ids.shape[0], prefix.length, dtype=mask.dtype), mask], dim=1)
        out = reference(
            input_ids=ids,
            attention_mask=extended_mask,
            **{cache_argument(reference): prefilled_cache(prefix)},
        )
    theirs = out.logits if family in DECODERS else out.last_hidden_state
    assert_close(real(ours, mask), real(theirs, mask))
