"""Prefix injection for MPNet, whose attention adds a relative position bias and bypasses the interface.

MPNet's self-attention computes ``softmax(q.k / sqrt(d) + bias + mask)``, where the bias comes from
relative-position buckets between query and key (computed once in the encoder). A prefix key has no
position, so its column gets zero bias: only the content term q.Pk / sqrt(d). Token-token scores are
computed exactly as transformers computes them. The prefix arrives through the call (``patched.py``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention

from ptuning.core.injection.base import capturing, prefix_columns_mask, record_keys_values
from ptuning.core.injection.patched import LAYER_INDEX_ATTRIBUTE, PatchedAttentionInjector, layer_prefix


def _prefixed_forward(
    self: MPNetSelfAttention,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
    output_attentions: bool = False,
    **kwargs,
):
    batch, length = hidden_states.shape[:2]
    found = layer_prefix(self, batch)
    if found is None:
        if capturing():
            head_shape = (batch, length, -1, self.attention_head_size)
            keys = self.k(hidden_states).view(head_shape).transpose(1, 2)
            values = self.v(hidden_states).view(head_shape).transpose(1, 2)
            record_keys_values(getattr(self, LAYER_INDEX_ATTRIBUTE), keys, values)
        return MPNetSelfAttention.forward(
            self, hidden_states, attention_mask, position_bias, output_attentions, **kwargs
        )
    prefix, index = found
    prefix_keys, prefix_values = prefix.layers[index]  # (B, heads, P, d)
    head_shape = (batch, length, -1, self.attention_head_size)
    query = self.q(hidden_states).view(head_shape).transpose(1, 2)  # (B, heads, T, d)
    key = self.k(hidden_states).view(head_shape).transpose(1, 2)
    value = self.v(hidden_states).view(head_shape).transpose(1, 2)

    scale = math.sqrt(self.attention_head_size)
    scores = torch.matmul(query, key.transpose(-1, -2)) / scale  # (B, heads, T, T)
    if position_bias is not None:
        scores = scores + position_bias
    if attention_mask is not None:
        scores = scores + attention_mask
    prefix_scores = torch.matmul(query, prefix_keys.to(key.dtype).transpose(-1, -2)) / scale  # zero bias
    visible = prefix_columns_mask(prefix, batch, length, scores.device)  # (B, 1, T, P)
    prefix_scores = prefix_scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
    probs = self.dropout(nn.functional.softmax(torch.cat([prefix_scores, scores], dim=-1), dim=-1))

    values = torch.cat([prefix_values.to(value.dtype), value], dim=2)  # (B, heads, P+T, d)
    context = torch.matmul(probs, values).permute(0, 2, 1, 3).reshape(batch, length, self.all_head_size)
    output = self.o(context)
    return (output, probs) if output_attentions else (output,)


class MpnetInjector(PatchedAttentionInjector):
    """MPNet: every MPNetSelfAttention gets the prefix with zero relative position bias."""

    attention_class = MPNetSelfAttention
    prefixed_forward = staticmethod(_prefixed_forward)
