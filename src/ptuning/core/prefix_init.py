"""Starting a deep prefix from real tokens' keys and values instead of random numbers.

P-tuning v2's reference draws the prefix table from N(0, 1): at step 0 every layer attends to P random keys
and mixes in P random values, and a small task has to train its way out of that noise first. Li & Liang
(2021, section 7.2) found that a prefix initialised with the activations of real words trains markedly more
stably in low-data settings. This module runs the frozen backbone once over P real tokens, records the keys
and values every prefixed layer's attention computes for them, and writes those into the table. For a causal
model numbered with ``position_mode="shift"``, such a prefix is exactly those tokens as a cached context
(tests/core/test_prefix_init.py checks that equality).
"""

from __future__ import annotations

import torch

from ptuning.core.injection.base import capturing_keys_values
from ptuning.core.model import PromptModel
from ptuning.core.prefix import PrefixEncoder


def init_prefix_from_tokens(model: PromptModel, prefix_name: str, token_ids: torch.Tensor) -> None:
    """Set prefix ``prefix_name``'s table to the backbone's keys and values for the first P of ``token_ids``.

    ``token_ids`` is one 1-D sequence of at least P real token ids (no padding). Only an embedding-table
    deep prefix (ptuning-v2) can take numbers this way: prefix-mlp's table passes through an MLP, and
    prompt-tuning's prompts are input embeddings (they start from the vocabulary already).
    """
    encoder = model.prefixes[prefix_name]
    if not isinstance(encoder, PrefixEncoder) or encoder.mlp is not None:
        raise ValueError(
            f"prefix {prefix_name!r}: only an embedding-table deep prefix (method ptuning-v2) starts from "
            "real tokens' keys and values"
        )
    if encoder.geometry.decoder_layers:
        raise ValueError(
            f"model type {encoder.geometry.model_type!r}: an encoder-decoder's decoder and cross-attention "
            "prefixes have no single token sequence to start from; use the normal initialisation"
        )
    length = encoder.prefix_length
    if token_ids.dim() != 1 or token_ids.numel() < length:
        raise ValueError(
            f"need one sequence of at least {length} token ids, got shape {tuple(token_ids.shape)}"
        )
    positions = encoder.geometry.usable_positions
    if positions is not None and length > positions:  # the P tokens run as one input to capture them
        raise ValueError(
            f"the prefix's {length} tokens run through the backbone as one input, past its {positions} positions; "
            "use a prefix length of at most that, or the normal initialisation"
        )
    ids = token_ids[:length].to(encoder.embedding.weight.device)[None]
    backbone = model.backbone
    was_training = backbone.training
    backbone.eval()  # the keys and values of inference, without dropout
    try:
        with torch.no_grad(), capturing_keys_values() as captured:
            backbone(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        backbone.train(was_training)
    missing = [index for index in encoder.layer_indices if index not in captured]
    if missing:
        raise ValueError(f"the backbone's forward did not reach the attention of prefixed layers {missing}")
    # the table's row layout (see prefix.split_table): for each position, layer by layer, keys then values
    per_layer = []
    for index in encoder.layer_indices:
        keys, values = captured[index]  # (1, kv_heads, P, head_dim)
        per_layer += [keys[0].transpose(0, 1), values[0].transpose(0, 1)]  # (P, kv_heads, head_dim)
    table = torch.stack(per_layer, dim=1).reshape(length, -1)
    if table.shape[1] != encoder.width:
        raise ValueError(
            f"captured keys and values fill {table.shape[1]} columns; the table has {encoder.width}"
        )
    with torch.no_grad():
        encoder.embedding.weight.copy_(table.float())
