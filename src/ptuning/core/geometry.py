"""The prefix's shape, read from the model's own config (layers, KV heads for GQA, head size)."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

# Model types whose attention goes through transformers' attention-function interface (BERT family and
# decoders) and are covered by tests; DeBERTa-v2/v3 gets its own attention patch.
INTERFACE_MODEL_TYPES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "electra",
    "ernie",
    "camembert",
    "gpt2",
    "llama",
    "qwen2",
    "mistral",
)
DEBERTA_MODEL_TYPES = ("deberta-v2",)
SUPPORTED_MODEL_TYPES = INTERFACE_MODEL_TYPES + DEBERTA_MODEL_TYPES
# Families whose real-token positions come from an absolute position table (so a shifted prefix costs
# positions); rotary models have no hard table.
ABSOLUTE_POSITION_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "ernie", "camembert", "gpt2")
# RoBERTa-style embeddings number positions from padding_idx + 1.
PADDING_OFFSET_POSITION_TYPES = ("roberta", "xlm-roberta", "camembert")


class UnsupportedModelError(ValueError):
    """The backbone's architecture has no prefix injection here."""


@dataclass(frozen=True)
class PrefixGeometry:
    """Everything about the backbone that the prefix's shape depends on."""

    model_type: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    max_positions: int | None
    is_decoder: bool

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> PrefixGeometry:
        model_type = config.model_type
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"model type {model_type!r} ({type(config).__name__}) has no prefix injection; "
                f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        num_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or getattr(config, "attention_head_size", None)
        head_dim = head_dim or config.hidden_size // num_heads
        return cls(
            model_type=model_type,
            num_layers=config.num_hidden_layers,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or num_heads,
            head_dim=head_dim,
            hidden_size=config.hidden_size,
            max_positions=getattr(config, "max_position_embeddings", None),
            is_decoder=model_type in ("gpt2", "llama", "qwen2", "mistral"),
        )

    @property
    def has_absolute_positions(self) -> bool:
        return self.model_type in ABSOLUTE_POSITION_TYPES

    @property
    def usable_positions(self) -> int | None:
        """How many token positions the position table offers (RoBERTa reserves padding_idx + 1)."""
        if self.max_positions is None or not self.has_absolute_positions:
            return None
        if self.model_type in PADDING_OFFSET_POSITION_TYPES:
            return self.max_positions - 2
        return self.max_positions
