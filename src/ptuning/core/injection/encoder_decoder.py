"""Prefix injection for encoder-decoders (T5, mT5, BART, mBART): prefix-tuning's original setting.

Li & Liang (2021) put a prefix on all three kinds of attention: encoder self-attention, decoder self-attention
and decoder cross-attention. In transformers 5 all three call the attention interface (``T5Attention`` and
``BartAttention`` tell cross- from self-attention by ``key_value_states``, and number layers within their stack
by ``layer_idx``), so the interface injector's prefix-aware sdpa/eager do the work. This file only decides
which prefix slot each attention module takes; one ``PrefixEncoder`` table holds E + 2D slots:

* encoder self-attention of layer i -> slot i
* decoder self-attention of layer j -> slot E + j
* decoder cross-attention of layer j -> slot E + D + j

What each kind means (all in ``attention_interface.py``): prefix keys/values are prepended after the cache, so
the decoder's self-attention cache holds real tokens only; cross-attention keys/values of the encoder outputs
are cached once by transformers and the prefix is prepended at every call, so it is seen exactly once and
by every decoder query; T5's relative position bias gets zero columns for prefix keys.
"""

from __future__ import annotations

from torch import nn

from ptuning.core.geometry import PrefixGeometry, UnsupportedModelError
from ptuning.core.injection.attention_interface import (
    LAYER_INDEX_ATTRIBUTE,
    PROBED_ATTRIBUTE,
    AttentionInterfaceInjector,
)
from ptuning.core.injection.scoping import scope_prefix_to_calls

# The last name component of cross-attention modules (T5: EncDecAttention; BART/mBART: encoder_attn).
CROSS_ATTENTION_NAMES = ("EncDecAttention", "encoder_attn", "crossattention", "cross_attn")


def prefix_slots(named_modules: list[tuple[str, nn.Module]], geometry: PrefixGeometry) -> dict[str, int]:
    """Module name -> prefix slot, checked against the geometry's layer counts."""
    encoder, decoder, cross = [], [], []
    for name, _ in named_modules:
        parts = name.split(".")
        if parts[-1] in CROSS_ATTENTION_NAMES:
            cross.append(name)
        elif "decoder" in parts:
            decoder.append(name)
        elif "encoder" in parts:
            encoder.append(name)
    expected = (geometry.encoder_layers, geometry.decoder_layers, geometry.decoder_layers)
    found = (len(encoder), len(decoder), len(cross))
    if found != expected:
        raise UnsupportedModelError(
            f"model type {geometry.model_type!r}: expected {expected[0]} encoder self-attention, {expected[1]} "
            f"decoder self-attention and {expected[2]} cross-attention modules calling the attention "
            f"interface, found {found[0]}, {found[1]} and {found[2]}"
        )
    encoder_count, decoder_count = expected[0], expected[1]
    slots = {name: index for index, name in enumerate(encoder)}
    slots |= {name: encoder_count + index for index, name in enumerate(decoder)}
    slots |= {name: encoder_count + decoder_count + index for index, name in enumerate(cross)}
    return slots


class EncoderDecoderInjector(AttentionInterfaceInjector):
    """The interface injector with one prefix slot per attention module of encoder and decoder.

    The prefix is scoped to each call of the backbone, or of its encoder alone (encoder heads), and read by
    the attention functions from that scope; ``generate``'s separate encoder pass runs in ``active_prefix``."""

    def __init__(self, backbone: nn.Module, named_modules: list[tuple[str, nn.Module]]) -> None:
        geometry = PrefixGeometry.from_config(backbone.config)
        slots = prefix_slots(named_modules, geometry)
        scope_prefix_to_calls(backbone)
        scope_prefix_to_calls(backbone.get_encoder())  # encoder heads call the encoder alone
        setattr(
            backbone, PROBED_ATTRIBUTE, True
        )  # no probe: the forward of a seq2seq model needs decoder inputs
        modules = [module for _, module in named_modules]
        super().__init__(backbone, modules)
        implementation = backbone.config._attn_implementation
        for name, module in named_modules:
            setattr(module, LAYER_INDEX_ATTRIBUTE, slots[name])
            # T5 gives its encoder and decoder stacks their own copies of the config.
            own_config = getattr(module, "config", None)
            if own_config is not None and own_config is not backbone.config:
                own_config._attn_implementation = implementation
