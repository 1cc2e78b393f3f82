"""The prefix's shape and the position facts it depends on, read from any family's config (and structure).

Nothing here lists model types: every field comes from config attributes (through transformers'
``attribute_map``, so GPT-2's ``n_embd`` reads as ``hidden_size``), from transformers' own registry of model
classes, or from the built model's modules. Which families can take a prefix at all is decided by
``core.injection`` (capability detection).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from enum import StrEnum

from torch import nn
from transformers import PretrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)


class UnsupportedModelError(ValueError):
    """The backbone's architecture has no prefix injection here (the message says which module and why)."""


class PositionKind(StrEnum):
    """How token positions reach attention, which decides what a position-free prefix means.

    ``relative``: a bias or relative terms between query and key positions (DeBERTa, MPNet, T5); prefix keys
    get none (zero bias). ``rotary``: queries and keys are rotated by position; prefix keys are never rotated.
    ``absolute``: a learned position table added to the input embeddings; real tokens keep 0..T-1.
    ``none``: no positions the prefix interacts with (e.g. ALiBi-free causal models without a table).
    """

    RELATIVE = "relative"
    ROTARY = "rotary"
    ABSOLUTE = "absolute"
    NONE = "none"


# Names of a learned position table in transformers' embedding modules.
_POSITION_TABLE_NAMES = ("position_embeddings", "wpe", "embed_positions", "position_embedding")
_ROTARY_FIELDS = ("rope_parameters", "rope_theta", "rotary_pct", "rotary_emb_base", "partial_rotary_factor")


@dataclass(frozen=True)
class PrefixGeometry:
    """Everything about the backbone that the prefix's shape and its positions depend on."""

    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    max_positions: int | None
    is_decoder: bool
    is_encoder_decoder: bool = False
    position_kind: PositionKind = PositionKind.ABSOLUTE
    position_table: bool = False  # a learned absolute table: it bounds how many positions tokens can use
    position_padding_idx: int | None = None  # RoBERTa-style tables number real tokens from padding_idx + 1
    takes_position_ids: bool = True
    takes_use_cache: bool = False  # the forward has ``use_cache`` (decoders, BERT-likes): heads pass False
    sliding_window: int | None = None  # the narrowest window of any sliding-window layer
    softcapping: float | None = (
        None  # Gemma-style tanh cap on attention scores (applies to prefix scores too)
    )
    qk_norm: bool = False  # per-head norms on q and k (Qwen3, OLMo-2, Gemma 3): the prefix keys are raw
    # Encoder-decoders (T5, BART): ``num_layers`` counts prefix slots, E + 2D (see ``core.injection``'s
    # encoder_decoder.py): encoder self-attention, decoder self-attention, decoder cross-attention.
    encoder_layers: int | None = None
    decoder_layers: int | None = None

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> PrefixGeometry:
        """What the config says. ``from_model`` refines the structural facts (tables, causality)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        model_type = text.model_type
        try:
            num_heads = int(text.num_attention_heads)
            num_layers = int(text.num_hidden_layers)
            hidden_size = int(text.hidden_size)
        except (AttributeError, TypeError) as error:
            raise UnsupportedModelError(
                f"model type {model_type!r} ({type(text).__name__}): cannot read the prefix's shape from its "
                f"config ({error}); expected num_attention_heads, num_hidden_layers and hidden_size"
            ) from None
        # ALBERT shares layers across depth: one prefix per distinct (shared) attention module.
        groups = getattr(text, "num_hidden_groups", None)
        inner = getattr(text, "inner_group_num", None)
        if isinstance(groups, int) and isinstance(inner, int):
            num_layers = groups * inner
        head_dim = getattr(text, "head_dim", None) or getattr(text, "attention_head_size", None)
        head_dim = int(head_dim or hidden_size // num_heads)
        num_kv_heads = getattr(text, "num_key_value_heads", None) or num_heads
        if getattr(text, "multi_query", False) is True:  # GPT-BigCode: one key/value head
            num_kv_heads = 1
        is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        encoder_layers = decoder_layers = None
        if is_encoder_decoder:
            encoder_layers, decoder_layers = _encoder_decoder_layers(text, model_type, num_layers, num_heads)
            num_layers = encoder_layers + 2 * decoder_layers
        architectures = getattr(config, "architectures", None) or []
        causal_architecture = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
        if hasattr(type(text), "is_decoder"):  # the family runs either way (BERT-likes): its flag says which
            decoder_family = bool(text.is_decoder)
        else:  # a BLOOM saved as BloomModel or *ForSequenceClassification is still causal
            decoder_family = is_decoder_family(model_type)
        return cls(
            model_type=model_type,
            num_layers=num_layers,
            num_heads=num_heads,
            num_kv_heads=int(num_kv_heads),
            head_dim=head_dim,
            hidden_size=hidden_size,
            max_positions=getattr(text, "max_position_embeddings", None),
            is_decoder=not is_encoder_decoder and (decoder_family or causal_architecture),
            is_encoder_decoder=is_encoder_decoder,
            position_kind=_position_kind_from_config(text),
            sliding_window=_sliding_window(text),
            softcapping=getattr(text, "attn_logit_softcapping", None),
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
        )

    @classmethod
    def from_model(cls, backbone: nn.Module) -> PrefixGeometry:
        """``from_config`` plus what only the built model shows: its position table (and whether it counts
        from a padding index), whether its attention is causal, q/k norms, and whether ``forward`` takes
        ``position_ids``."""
        geometry = cls.from_config(backbone.config)
        table = _position_table(backbone)
        causal = any(getattr(m, "is_causal", False) is True for m in backbone.modules())
        qk_norm = any(hasattr(m, "q_norm") or hasattr(m, "k_norm") for m in backbone.modules())
        kind = geometry.position_kind
        if kind is PositionKind.NONE and table is not None:
            kind = PositionKind.ABSOLUTE
        if table is not None and geometry.max_positions is None:
            geometry = _replace(geometry, max_positions=table.num_embeddings)
        forward_parameters = _forward_parameters(backbone)
        groups = [getattr(m, "num_key_value_groups", None) for m in backbone.modules()]
        groups = [g for g in groups if isinstance(g, int) and g > 0]
        if groups and geometry.num_heads % groups[0] == 0:  # the attention modules' own GQA grouping
            geometry = _replace(geometry, num_kv_heads=geometry.num_heads // groups[0])
        return _replace(
            geometry,
            # An encoder-decoder's causal attention is its decoder's: the model as a whole is not a decoder.
            is_decoder=geometry.is_decoder or (causal and not geometry.is_encoder_decoder),
            position_kind=kind,
            position_table=table is not None,
            position_padding_idx=table.padding_idx if table is not None else None,
            takes_position_ids="position_ids" in forward_parameters,
            takes_use_cache="use_cache" in forward_parameters,
            qk_norm=qk_norm,
        )

    @property
    def has_absolute_positions(self) -> bool:
        return self.position_table

    @property
    def usable_positions(self) -> int | None:
        """How many token positions the position table offers (RoBERTa reserves padding_idx + 1)."""
        if self.max_positions is None or not self.position_table:
            return None
        if self.position_padding_idx is not None:
            return self.max_positions - self.position_padding_idx - 1
        return self.max_positions

    def check_prefix_length(self, prefix_length: int) -> None:
        """Sliding-window layers always see the whole prefix on top of their window; a prefix longer than
        the window would outweigh the local context those layers were trained on (and kernels that apply
        the window by key position would cut prefix keys off), so it is refused."""
        if self.sliding_window is not None and prefix_length > self.sliding_window:
            raise UnsupportedModelError(
                f"prefix_length {prefix_length} is longer than {self.model_type}'s sliding window of "
                f"{self.sliding_window} tokens; sliding-window layers see the prefix beside their window, "
                f"so keep the prefix within it (prefix_length <= {self.sliding_window})"
            )


def is_decoder_family(model_type: str) -> bool:
    """Decoder-only: transformers builds a causal LM of the family and neither a masked LM nor a seq2seq model
    (BERT-likes have a causal-LM class too). Asked of transformers, so every decoder it knows counts, whichever
    class saved the folder (``architectures`` names the saving class, and a base model or sequence classifier
    of a causal family says nothing causal). XLNet counts too: it reads its summary token <cls> at the end,
    which is where last-token pooling reads."""
    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    )


def _replace(geometry: PrefixGeometry, **changes) -> PrefixGeometry:
    return replace(geometry, **changes)


def _encoder_decoder_layers(
    config: PretrainedConfig, model_type: str, encoder_layers: int, num_heads: int
) -> tuple[int, int]:
    """(encoder layers, decoder layers) of a T5/BART-style config; one head shape serves all three prefixes,
    so encoder and decoder must have the same number of heads."""
    decoder_layers = getattr(config, "num_decoder_layers", None) or getattr(config, "decoder_layers", None)
    decoder_heads = getattr(config, "decoder_attention_heads", None) or num_heads
    if decoder_heads != num_heads:
        raise UnsupportedModelError(
            f"model type {model_type!r}: its decoder has {decoder_heads} attention heads and its encoder "
            f"{num_heads}; encoder-decoder prefixes need one head shape for both"
        )
    return encoder_layers, int(decoder_layers or encoder_layers)


def _position_kind_from_config(config: PretrainedConfig) -> PositionKind:
    if getattr(config, "relative_attention", False) or getattr(
        config, "relative_attention_num_buckets", None
    ):
        return PositionKind.RELATIVE
    if any(getattr(config, name, None) for name in _ROTARY_FIELDS) or getattr(config, "rotary_dim", None):
        return PositionKind.ROTARY
    if getattr(config, "position_embedding_type", None) == "rotary":
        return PositionKind.ROTARY
    return PositionKind.NONE


def _sliding_window(config: PretrainedConfig) -> int | None:
    """The window of sliding-window layers, if any layer uses one (``layer_types`` says which)."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and not any("sliding" in str(kind) for kind in layer_types):
        return None
    return window


def _position_table(backbone: nn.Module) -> nn.Embedding | None:
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Embedding) and name.rsplit(".", 1)[-1] in _POSITION_TABLE_NAMES:
            return module
    return None


def _forward_parameters(backbone: nn.Module) -> set[str]:
    base = getattr(backbone, "base_model", backbone)
    names: set[str] = set()
    for module in (backbone, base):
        names |= set(inspect.signature(module.forward).parameters)
    return names


def prompt_room(positions: int | None, slots: int, max_new_tokens: int) -> int | None:
    """The most prompt tokens a causal LM can decode ``max_new_tokens`` after within ``positions`` (None: a
    table without end), ``slots`` of them taken by the prefix; the last new token is never fed back, so it
    takes no position (``generation.decoder.positions_needed`` solved for the prompt). Below 1 where
    max_new_tokens alone fill the table."""
    return None if positions is None else positions - slots - max_new_tokens + 1
