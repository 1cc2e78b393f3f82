"""Prefix injection through transformers' attention-function registry (every family whose attention modules
call it; ``capability.py`` decides which).

Why this mechanism (measured, see docs/ARCHITECTURE.md): a ``Cache`` object passed as ``past_key_values``
also works, but it is renamed to ``cache`` in 5.24, is dropped inside gradient-checkpointed layers, shifts
positions by P, and during generation would mix the prefix with the real cache. The attention function
instead receives keys/values after the cache and after rotary embeddings, so the prefix is added exactly
where the paper puts it, generation caches hold real tokens only, and checkpointing replays the same kwargs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ptuning.core.dropout import keep_mask
from ptuning.core.injection.base import (
    PREFIX_KWARG,
    active_prefix,
    current_prefix,
    extend_attention_mask,
    record_keys_values,
)
from ptuning.core.injection.scoping import scope_prefix_to_calls
from ptuning.core.prefix import PrefixKV

logger = logging.getLogger(__name__)
# The probe forward (once per backbone): which attention modules the forward keyword reached.
_PROBE_MARKER = object()
_PROBE: ContextVar[dict[int, bool] | None] = ContextVar("ptuning_probe", default=None)
PROBED_ATTRIBUTE = "_ptuning_probed"

LAYER_INDEX_ATTRIBUTE = "ptuning_layer_index"
# bf16 inference on CPU runs attention as plain math up to this many keys (prefix included), sdpa beyond
# (``_takes_math_attention``; measured in docs/BENCHMARKS.md, "Attention on CPU").
MATH_ATTENTION_MAX_KEYS = 64
# The dtypes whose inference takes the math up to that cap. fp32 was measured whole-model and left on sdpa:
# x1.02 / x1.04 on SST-2 / CoNLL-2003 dev, x1.07 at 12 tokens down to x0.97 at 96 (docs/BENCHMARKS.md).
MATH_ATTENTION_INFERENCE_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16,)
# bf16 training (autograd on) without attention dropout: sdpa's CPU kernel runs forward + backward 2.4-9.9x
# slower than the math up to 192 keys and faster from 224 (one call at MiniLM's shapes; the whole model
# trained SST-2 / CoNLL-2003 2.1x / 2.0x faster: docs/BENCHMARKS.md, benchmarks/attention_training_ab.py).
# fp32 stays on sdpa: one call runs 1.4-3x faster there, the whole model trains as fast either way.
MATH_ATTENTION_MAX_TRAINING_KEYS = 192
MATH_ATTENTION_TRAINING_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16,)
_WRAPPED_IMPLEMENTATIONS = {"sdpa": "ptuning_sdpa", "eager": "ptuning_eager"}
__all__ = ["AttentionInterfaceInjector", "active_prefix", "PREFIX_KWARG", "UnsupportedAttentionError"]


class UnsupportedAttentionError(ValueError):
    pass


def _eager_of(module: nn.Module) -> Callable[..., Any]:
    """The model file's own eager attention (each family defines ``eager_attention_forward``; it applies the
    family's own extras, such as Gemma's softcapping, to prefix scores like to any key)."""
    return sys.modules[type(module).__module__].eager_attention_forward


def _layer_index(module: nn.Module) -> int | None:
    """Which layer's prefix this attention module takes: set once when the injector is installed (the
    model's own ``layer_idx`` where it has one; ALBERT's shared modules count once each)."""
    index = getattr(module, LAYER_INDEX_ATTRIBUTE, None)
    return index if index is not None else getattr(module, "layer_idx", None)


def _with_prefix(base: str) -> Callable[..., Any]:
    def attention(module, query, key, value, attention_mask, **kwargs):
        prefix = _prefix_of_call(module, kwargs.pop(PREFIX_KWARG, None))
        index = _layer_index(module)
        layer = prefix.layers.get(index) if prefix is not None else None
        if layer is not None:
            prefix = prefix.expanded_to(key.shape[0])
            prefix_keys, prefix_values = prefix.layers[index]  # (B, kv_heads, P, head_dim)
            prefix_keys, prefix_values = prefix_keys.to(key.dtype), prefix_values.to(value.dtype)
            causal = bool(getattr(module, "is_causal", False)) and query.shape[2] > 1
            attention_mask = extend_attention_mask(attention_mask, prefix, query, key.shape[2], causal)
            key = torch.cat([prefix_keys, key], dim=2)
            value = torch.cat([prefix_values, value], dim=2)
            bias = kwargs.get("position_bias")
            if bias is not None:  # T5: relative bias added to scores; prefix keys have no position: zero
                zeros = bias.new_zeros((*bias.shape[:-1], prefix_keys.shape[2]))
                kwargs["position_bias"] = torch.cat([zeros, bias], dim=-1)
            if base == "sdpa" and attention_mask is not None:
                kwargs["is_causal"] = False
        elif prefix is None:
            record_keys_values(index, key, value)
        if base == "sdpa" and _takes_math_attention(module, query, key, attention_mask, kwargs):
            return _math_attention(query, key, value, attention_mask, **kwargs)
        function = ALL_ATTENTION_FUNCTIONS["sdpa"] if base == "sdpa" else _eager_of(module)
        return function(module, query, key, value, attention_mask, **kwargs)

    attention.__name__ = f"ptuning_{base}_attention"
    return attention


def _prefix_of_call(module: nn.Module, keyword: Any) -> PrefixKV | None:
    """The prefix this attention call takes: the forward keyword's, else the enclosing ``active_prefix``'s.

    The ContextVars (probe, ``active_prefix``) are read only when the keyword brings no prefix: torch.compile
    cannot trace ``ContextVar.get`` and would break the graph in every attention call of a compiled layer.
    """
    if isinstance(keyword, PrefixKV):
        return keyword
    probe = _PROBE.get()
    if probe is not None:
        probe[id(module)] = probe.get(id(module), True) and keyword is _PROBE_MARKER
        return None
    return current_prefix()


def _takes_math_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, kwargs
) -> bool:
    """Where plain math (two matmuls and a softmax) beats sdpa's CPU kernels for an encoder's attention.

    Measured (docs/BENCHMARKS.md, "Attention on CPU"): training with attention dropout, where sdpa would run
    its math path with a Bernoulli draw per element and ``core.dropout``'s mask is cheaper; bf16 inference
    (no autograd) over at most ``MATH_ATTENTION_MAX_KEYS`` keys (prefix included), where the whole model
    predicted SST-2 and CoNLL-2003 1.11-1.13x faster than with sdpa's CPU flash kernel (over long keys the
    math's large score matrices made the model slower: x0.54 at 250 tokens idle); and bf16 training without
    dropout up to ``MATH_ATTENTION_MAX_TRAINING_KEYS`` keys, where sdpa's backward is the slow part (the
    math keeps each layer's probabilities for the backward pass, as training with dropout always did). Not
    fp32 (measured: sdpa as fast or faster; ``MATH_ATTENTION_INFERENCE_DTYPES``). Anything less plain
    (causal, GQA, position bias, float masks) stays with sdpa.
    """
    plain = (
        query.device.type == "cpu"
        and not getattr(module, "is_causal", False)
        and getattr(module, "num_key_value_groups", 1) == 1
        and kwargs.get("position_bias") is None
        and (mask is None or mask.dtype == torch.bool)
    )
    dropping = module.training and kwargs.get("dropout", 0.0) > 0
    short_inference = (
        query.dtype in MATH_ATTENTION_INFERENCE_DTYPES
        and not torch.is_grad_enabled()
        and key.shape[2] <= MATH_ATTENTION_MAX_KEYS
    )
    short_training = (
        query.dtype in MATH_ATTENTION_TRAINING_DTYPES
        and torch.is_grad_enabled()
        and key.shape[2] <= MATH_ATTENTION_MAX_TRAINING_KEYS
    )
    return plain and (dropping or short_inference or short_training)


def _math_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """softmax(q k^T * scale, masked) times v, with inverted dropout where ``dropout`` > 0 (callers pass 0
    outside training, as transformers' attention modules do); (B, T, heads, head_dim) like sdpa's output."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    if scores.dtype != torch.float32 and scores.shape[-1] <= MATH_ATTENTION_MAX_KEYS:
        # in fp32, cast back: more exact, and torch's CPU softmax writes fp32 2-4x faster than bf16 at these
        # sizes (docs/BENCHMARKS.md, "Attention on CPU"); over longer keys the fp32 copy was not measured
        probabilities = scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype)
    else:
        probabilities = scores.softmax(dim=-1)
    if dropout > 0:
        probabilities = probabilities * keep_mask(probabilities, dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


def _register() -> None:
    for base, name in _WRAPPED_IMPLEMENTATIONS.items():
        AttentionInterface.register(name, _with_prefix(base))
        AttentionMaskInterface.register(name, sdpa_mask if base == "sdpa" else eager_mask)


_register()


class AttentionInterfaceInjector:
    """Switches a model to the prefix-aware twin of its attention implementation (sdpa or eager).

    Installing it again on the same backbone changes nothing; it keeps no per-call state (the prefix travels
    as a forward keyword, or in the ``active_prefix`` context for ``generate``).
    """

    def __init__(self, backbone: nn.Module, modules: list[nn.Module] | None = None) -> None:
        for order, module in enumerate(modules or []):
            own = getattr(module, "layer_idx", None)
            setattr(module, LAYER_INDEX_ATTRIBUTE, own if isinstance(own, int) else order)
        config = backbone.config
        current = config._attn_implementation
        if current in _WRAPPED_IMPLEMENTATIONS.values():
            return
        if current not in _WRAPPED_IMPLEMENTATIONS:
            raise UnsupportedAttentionError(
                f"attention implementation {current!r} cannot take a prefix (prefix-aware twins exist for "
                f"sdpa and eager only: the prefix adds P key/value columns to their 4-D mask, which "
                f"{current!r} does not take in the same form); load the model with attn_implementation='sdpa' "
                f"or 'eager'"
            )
        for sub_config in _all_configs(config):
            sub_config._attn_implementation = _WRAPPED_IMPLEMENTATIONS[current]
        if not getattr(backbone, PROBED_ATTRIBUTE, False):
            if _keyword_misses_attention(backbone, modules or []):
                scope_prefix_to_calls(backbone)
            setattr(backbone, PROBED_ATTRIBUTE, True)

    def forward_kwargs(self, prefix: PrefixKV | None) -> dict[str, Any]:
        return {PREFIX_KWARG: prefix} if prefix is not None else {}


def _all_configs(config: Any) -> list[Any]:
    subs = [
        getattr(config, name) for name in getattr(config, "sub_configs", {}) if getattr(config, name, None)
    ]
    return [config, *subs]


def _keyword_misses_attention(backbone: nn.Module, modules: list[nn.Module]) -> bool:
    """One probe forward (2 tokens, no grad, eval mode, modes restored): does the ``ptuning_prefix`` keyword
    reach every attention call? Most families thread forward kwargs down to attention; a few drop them in
    their decoder layer (StableLM, Nemotron). Those get the prefix scoped to the call instead. A probe that
    cannot run (inputs the family needs beyond ids) also falls back to scoping, which works either way."""
    modes = [(m, m.training) for m in backbone.modules()]
    seen: dict[int, bool] = {}
    token = _PROBE.set(seen)
    try:
        backbone.eval()
        device = next(backbone.parameters()).device
        with torch.no_grad():
            ids = torch.zeros(1, 2, dtype=torch.long, device=device)
            backbone(input_ids=ids, attention_mask=torch.ones_like(ids), **{PREFIX_KWARG: _PROBE_MARKER})
    except Exception as error:  # noqa: BLE001 - any failure means "not confirmed", never a crash here
        logger.debug("probe forward failed (%s); scoping the prefix to each call", error)
        return True
    finally:
        _PROBE.reset(token)
        for module, training in modes:
            module.training = training
    missed = [m for m in modules if seen.get(id(m)) is False]
    if missed:
        logger.debug(
            "the forward keyword misses %s; scoping the prefix to each call", type(missed[0]).__name__
        )
    return bool(missed) or not seen
