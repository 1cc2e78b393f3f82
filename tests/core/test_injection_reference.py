"""Injected attention equals attention computed by hand from the layer's own inputs and weights.

For each family, every layer's self-attention inputs are captured with a forward pre-hook and its output
with a forward hook; the test recomputes softmax(q . [Pk; K]^T * scale + mask) . [Pv; V] itself, with prefix
columns visible to every real query (and never rotated, never causal-masked), and compares.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import torch
from core_tiny import (
    DECODERS,
    INTERFACE_FAMILIES,
    assert_close,
    build,
    pad_id,
    pad_rows,
    random_ids,
    real,
    self_attentions,
)
from torch import nn
from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention


@contextmanager
def capture(module: nn.Module) -> Iterator[dict[str, Any]]:
    """Record the named inputs of ``module``'s next call (``inputs``) and its first output (``output``)."""
    seen: dict[str, Any] = {}
    signature = inspect.signature(type(module).forward)

    def before(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        bound = signature.bind(mod, *args, **kwargs)
        seen["inputs"] = {**bound.arguments, **bound.arguments.get("kwargs", {})}

    def after(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        seen["output"] = output[0]

    handles = [
        module.register_forward_pre_hook(before, with_kwargs=True),
        module.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(B, T, n*head_dim) -> (B, n, T, head_dim)."""
    batch, length, _ = x.shape
    return x.view(batch, length, -1, head_dim).transpose(1, 2)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of (B, n, T, d) with cos/sin (B, T, d): x*cos + rotate_half(x)*sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def attention_by_hand(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    key_mask: torch.Tensor,
    causal: bool,
    scale: float,
    token_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q.[Pk;K]^T*scale (+ bias on token columns) + mask).[Pv;V] -> (B, T, heads*head_dim).

    query (B, H, T, d); key/value (B, KV, T, d); prefix (B, KV, P, d); key_mask (B, T), 1 = real token.
    Query head h reads KV head h // (H / KV), which is how GQA shares KV heads.
    """
    batch, num_heads, length, _ = query.shape
    prefix_length = prefix_key.shape[2]
    groups = num_heads // key.shape[1]
    keys = torch.cat([prefix_key, key], dim=2).repeat_interleave(groups, dim=1)
    values = torch.cat([prefix_value, value], dim=2).repeat_interleave(groups, dim=1)
    scores = query @ keys.transpose(-1, -2) * scale  # (B, H, T, P+T)
    if token_bias is not None:
        scores[..., prefix_length:] += token_bias
    visible = key_mask.bool()[:, None, None, :].expand(batch, 1, length, length)
    if causal:
        visible = visible & torch.ones(length, length, dtype=torch.bool).tril()
    visible = torch.cat([torch.ones(batch, 1, length, prefix_length, dtype=torch.bool), visible], dim=-1)
    probs = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    return (probs @ values).transpose(1, 2).reshape(batch, length, -1)


def reference_output(
    family: str, module: nn.Module, inputs: dict[str, Any], prefix, key_mask, with_prefix=True
):
    """The module's output recomputed by hand from its captured inputs and its weights."""
    hidden = inputs["hidden_states"]
    prefix_key, prefix_value = prefix
    if not with_prefix:
        prefix_key, prefix_value = prefix_key[:, :, :0], prefix_value[:, :, :0]
    if family == "gpt2":
        head_dim = module.head_dim
        query, key, value = (heads(x, head_dim) for x in module.c_attn(hidden).split(module.embed_dim, dim=2))
        context = attention_by_hand(
            query, key, value, prefix_key, prefix_value, key_mask, True, head_dim**-0.5
        )
        return module.c_proj(context)
    if family in ("llama", "qwen2", "mistral"):
        head_dim = module.head_dim
        cos, sin = inputs["position_embeddings"]
        query = rotate(heads(module.q_proj(hidden), head_dim), cos, sin)
        key = rotate(heads(module.k_proj(hidden), head_dim), cos, sin)
        value = heads(module.v_proj(hidden), head_dim)
        context = attention_by_hand(
            query, key, value, prefix_key, prefix_value, key_mask, True, head_dim**-0.5
        )
        return module.o_proj(context)
    head_dim = module.attention_head_size
    query, key, value = (heads(proj(hidden), head_dim) for proj in (module.query, module.key, module.value))
    return attention_by_hand(query, key, value, prefix_key, prefix_value, key_mask, False, head_dim**-0.5)


def padded_batch(family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of lengths 7 and 4: right-padded for encoders, left-padded for decoders."""
    side = "left" if family in DECODERS else "right"
    return pad_rows([random_ids(1, 7)[0], random_ids(1, 4, seed=2)[0]], side, pad_id(family))


@pytest.mark.parametrize("family", INTERFACE_FAMILIES)
def test_every_layer_attention_equals_hand_computed_prefix_attention(family: str) -> None:
    built = build(family, prefix_length=3)
    modules = self_attentions(family, built.model.backbone)
    ids, mask = padded_batch(family)
    with ExitStack() as stack, torch.no_grad():
        captured = [stack.enter_context(capture(module)) for module in modules]
        built.outputs(ids, mask)
    prefix = built.model.prefix_kv(["t"]).expanded_to(ids.shape[0])
    for layer, (module, seen) in enumerate(zip(modules, captured, strict=True)):
        with torch.no_grad():
            expected = reference_output(family, module, seen["inputs"], prefix.layers[layer], mask)
            without = reference_output(family, module, seen["inputs"], prefix.layers[layer], mask, False)
        assert_close(real(seen["output"], mask), real(expected, mask))
        # The prefix must matter, or the comparison above proves nothing about it.
        assert (real(expected, mask) - real(without, mask)).abs().max() > 1e-2


# ------------------------------------------------------------------ DeBERTa-v2


def deberta_layer0(built) -> DisentangledSelfAttention:
    return built.model.backbone.encoder.layer[0].attention.self


def test_deberta_fully_masked_prefix_gives_the_unprefixed_output() -> None:
    built = build("deberta-v2", prefix_length=3)
    ids, mask = padded_batch("deberta-v2")
    prefix = built.model.prefix_kv(["t"]).expanded_to(ids.shape[0])
    prefix.mask = torch.zeros(ids.shape[0], prefix.length, dtype=torch.bool)
    with torch.no_grad():
        built.model.injector.forward_kwargs(prefix)
        ours = built.model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        plain = built.reference_backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    assert_close(real(ours, mask), real(plain, mask), atol=1e-6)


def test_deberta_without_relative_attention_equals_hand_computed_prefix_attention() -> None:
    overrides = dict(relative_attention=False, pos_att_type=None, position_biased_input=True)
    built = build("deberta-v2", prefix_length=3, config_overrides=overrides)
    module = deberta_layer0(built)
    ids, mask = padded_batch("deberta-v2")
    with capture(module) as seen, torch.no_grad():
        built.outputs(ids, mask)
    prefix_key, prefix_value = built.model.prefix_kv(["t"]).expanded_to(ids.shape[0]).layers[0]
    head_dim = module.attention_head_size
    hidden = seen["inputs"]["hidden_states"]
    with torch.no_grad():
        query, key, value = (
            heads(proj(hidden), head_dim) for proj in (module.query_proj, module.key_proj, module.value_proj)
        )
        expected = attention_by_hand(
            query, key, value, prefix_key, prefix_value, mask, False, 1 / math.sqrt(head_dim)
        )
    assert_close(real(seen["output"], mask), real(expected, mask))


def test_deberta_prefix_columns_get_only_the_content_term() -> None:
    built = build("deberta-v2", prefix_length=3)
    module = deberta_layer0(built)
    ids, mask = padded_batch("deberta-v2")
    with capture(module) as seen, torch.no_grad():
        built.outputs(ids, mask)
    inputs = seen["inputs"]
    prefix_key, prefix_value = built.model.prefix_kv(["t"]).expanded_to(ids.shape[0]).layers[0]
    head_dim, num_heads = module.attention_head_size, module.num_attention_heads
    batch, length = ids.shape
    hidden = inputs["hidden_states"]
    scale_factor = 3  # content + c2p + p2c: DeBERTa divides every term by sqrt(d * 3)
    with torch.no_grad():
        query, key, value = (
            heads(proj(hidden), head_dim) for proj in (module.query_proj, module.key_proj, module.value_proj)
        )
        # Token-token relative terms from the module's own code, in its (B*H, T, d) layout.
        relative = module.disentangled_attention_bias(
            query.reshape(batch * num_heads, length, head_dim),
            key.reshape(batch * num_heads, length, head_dim),
            inputs["relative_pos"],
            inputs["rel_embeddings"],
            scale_factor,
        ).view(batch, num_heads, length, length)
        expected = attention_by_hand(
            query,
            key,
            value,
            prefix_key,
            prefix_value,
            mask,
            False,
            1 / math.sqrt(head_dim * scale_factor),
            token_bias=relative,
        )
    assert relative.abs().max() > 1e-2  # the relative terms are really there for tokens
    assert_close(real(seen["output"], mask), real(expected, mask))


# ------------------------------------------------------------------ MPNet


def test_mpnet_prefix_columns_get_zero_relative_bias() -> None:
    # A larger init range makes the relative bias (and so its absence on prefix columns) visible.
    built = build("mpnet", prefix_length=3, config_overrides={"initializer_range": 0.3})
    modules = [layer.attention.attn for layer in built.model.backbone.encoder.layer]
    ids, mask = padded_batch("mpnet")
    with ExitStack() as stack, torch.no_grad():
        captured = [stack.enter_context(capture(module)) for module in modules]
        built.outputs(ids, mask)
    prefix = built.model.prefix_kv(["t"]).expanded_to(ids.shape[0])
    for layer, (module, seen) in enumerate(zip(modules, captured, strict=True)):
        inputs = seen["inputs"]
        prefix_key, prefix_value = prefix.layers[layer]
        head_dim = module.attention_head_size
        bias = inputs["position_bias"]  # (B, heads, T, T): relative buckets between real tokens only
        with torch.no_grad():
            query, key, value = (
                heads(p(inputs["hidden_states"]), head_dim) for p in (module.q, module.k, module.v)
            )
            context = attention_by_hand(
                query, key, value, prefix_key, prefix_value, mask, False, head_dim**-0.5, token_bias=bias
            )
            expected = module.o(context)
            unbiased = module.o(
                attention_by_hand(query, key, value, prefix_key, prefix_value, mask, False, head_dim**-0.5)
            )
        assert bias.abs().max() > 1e-2  # the relative bias is really there for tokens
        assert_close(real(seen["output"], mask), real(expected, mask))
        assert (real(expected, mask) - real(unbiased, mask)).abs().max() > 1e-2
