"""Prefix injection for DeBERTa-v2/v3, whose disentangled attention transformers gives no prefix path.

DeBERTa adds content->position and position->content terms that depend on the relative distance between
a query and a key. Prefix keys have no position, so (like the reference P-tuning v2 fork of the model
file) they get only the content term q.k / scale, i.e. zero relative terms; the token-token scores are
computed exactly as transformers computes them. The prefix arrives through the call (``patched.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention, scaled_size_sqrt

from ptuning.core.injection.base import capturing, prefix_columns_mask, record_keys_values
from ptuning.core.injection.patched import LAYER_INDEX_ATTRIBUTE, PatchedAttentionInjector, layer_prefix


def _heads_first(tensor: torch.Tensor) -> torch.Tensor:
    """(B, kv_heads, P, head_dim) -> (B*heads, P, head_dim), the layout DeBERTa's bmm uses."""
    batch, heads, length, head_dim = tensor.shape
    return tensor.reshape(batch * heads, length, head_dim)


def _record(self: DisentangledSelfAttention, hidden_states: torch.Tensor) -> None:
    """This layer's keys and values for real tokens, (B, heads, T, head_dim), for ``capturing_keys_values``."""
    batch, length = hidden_states.shape[:2]
    heads = self.num_attention_heads
    keys = self.transpose_for_scores(self.key_proj(hidden_states), heads).view(batch, heads, length, -1)
    values = self.transpose_for_scores(self.value_proj(hidden_states), heads).view(batch, heads, length, -1)
    record_keys_values(getattr(self, LAYER_INDEX_ATTRIBUTE), keys, values)


def _prefixed_forward(
    self: DisentangledSelfAttention,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    output_attentions: bool = False,
    query_states: torch.Tensor | None = None,
    relative_pos: torch.Tensor | None = None,
    rel_embeddings: torch.Tensor | None = None,
):
    found = layer_prefix(self, hidden_states.shape[0])
    if found is None:
        if capturing():
            _record(self, hidden_states)
        return DisentangledSelfAttention.forward(
            self, hidden_states, attention_mask, output_attentions, query_states, relative_pos, rel_embeddings
        )
    prefix, index = found
    prefix_keys, prefix_values = prefix.layers[index]
    if query_states is None:
        query_states = hidden_states
    heads = self.num_attention_heads
    query_layer = self.transpose_for_scores(self.query_proj(query_states), heads)  # (B*h, q, d)
    key_layer = self.transpose_for_scores(self.key_proj(hidden_states), heads)  # (B*h, k, d)
    value_layer = self.transpose_for_scores(self.value_proj(hidden_states), heads)

    scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    scale = scaled_size_sqrt(query_layer, scale_factor).to(dtype=query_layer.dtype)
    scores = torch.bmm(query_layer, key_layer.transpose(-1, -2) / scale)
    if self.relative_attention:
        rel_embeddings = self.pos_dropout(rel_embeddings)
        scores = scores + self.disentangled_attention_bias(
            query_layer, key_layer, relative_pos, rel_embeddings, scale_factor
        )

    batch = hidden_states.shape[0]
    prefix_keys = _heads_first(prefix_keys.to(key_layer.dtype))
    prefix_values = _heads_first(prefix_values.to(value_layer.dtype))
    prefix_scores = torch.bmm(query_layer, prefix_keys.transpose(-1, -2) / scale)  # (B*h, q, P)
    scores = torch.cat([prefix_scores, scores], dim=-1)
    scores = scores.view(-1, heads, scores.size(-2), scores.size(-1))  # (B, h, q, P+k)

    real_mask = attention_mask.bool().expand(batch, -1, -1, -1)  # (B, 1, q, k)
    visible = torch.cat(
        [prefix_columns_mask(prefix, batch, real_mask.shape[2], scores.device), real_mask], -1
    )
    scores = scores.masked_fill(~visible, torch.finfo(query_layer.dtype).min)
    probs = self.dropout(nn.functional.softmax(scores, dim=-1))

    values = torch.cat([prefix_values, value_layer], dim=1)  # (B*h, P+k, d)
    context = torch.bmm(probs.view(-1, probs.size(-2), probs.size(-1)), values)
    context = context.view(-1, heads, context.size(-2), context.size(-1)).permute(0, 2, 1, 3).contiguous()
    context = context.view(*context.size()[:-2], -1)  # (B, q, hidden)
    return (context, probs if output_attentions else None)


class DebertaInjector(PatchedAttentionInjector):
    """DeBERTa-v2/v3: every DisentangledSelfAttention gets the prefix with zero relative terms."""

    attention_class = DisentangledSelfAttention
    prefixed_forward = staticmethod(_prefixed_forward)
