"""Tiny random backbones for the core's proofs: every supported family, built from a config in milliseconds.

Each family is small (hidden 32-48, 2 layers, vocabulary 100) with every dropout at 0, so two runs of the
same inputs are comparable to fp32 rounding. Decoders use GQA (6 query heads sharing 2 KV heads) where the
family has it, because prefix key/values follow the KV-head count, not the query-head count.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    CamembertConfig,
    CamembertModel,
    DebertaV2Config,
    DebertaV2Model,
    ElectraConfig,
    ElectraModel,
    ErnieConfig,
    ErnieModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

VOCAB = 100
ATOL = 1e-5

ENCODERS = ("bert", "roberta", "xlm-roberta", "electra", "ernie", "camembert", "deberta-v2")
DECODERS = ("gpt2", "llama", "qwen2", "mistral")
FAMILIES = ENCODERS + DECODERS
# Families whose attention goes through transformers' registry (DeBERTa has no sdpa and its own patch).
INTERFACE_FAMILIES = tuple(f for f in FAMILIES if f != "deberta-v2")

_ENCODER_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
_DECODER_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=6,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def tiny_config(family: str, **overrides) -> PretrainedConfig:
    """The config of a tiny random ``family`` model; ``overrides`` replace any field."""
    if family == "bert":
        return BertConfig(**{**_ENCODER_SIZES, "pad_token_id": 0, **overrides})
    if family == "roberta":
        return RobertaConfig(**{**_ENCODER_SIZES, "pad_token_id": 1, **overrides})
    if family == "xlm-roberta":
        return XLMRobertaConfig(**{**_ENCODER_SIZES, "pad_token_id": 1, **overrides})
    if family == "ernie":
        return ErnieConfig(**{**_ENCODER_SIZES, "pad_token_id": 0, **overrides})
    if family == "camembert":
        return CamembertConfig(**{**_ENCODER_SIZES, "pad_token_id": 1, **overrides})
    if family == "electra":
        # embedding_size != hidden_size: ELECTRA projects its embeddings, which the prefix must not care about.
        return ElectraConfig(**{**_ENCODER_SIZES, "embedding_size": 16, "pad_token_id": 0, **overrides})
    if family == "deberta-v2":
        fields = dict(
            _ENCODER_SIZES,
            pad_token_id=0,
            relative_attention=True,
            pos_att_type=["p2c", "c2p"],
            position_buckets=8,
            max_relative_positions=-1,
            position_biased_input=False,
            share_att_key=True,
            norm_rel_ebd="layer_norm",
        )
        return DebertaV2Config(**{**fields, **overrides})
    if family == "gpt2":
        fields = dict(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        return GPT2Config(**{**fields, **overrides})
    if family == "llama":
        return LlamaConfig(**{**_DECODER_SIZES, **overrides})
    if family == "qwen2":
        return Qwen2Config(**{**_DECODER_SIZES, **overrides})
    if family == "mistral":
        return MistralConfig(**{**_DECODER_SIZES, "sliding_window": None, **overrides})
    raise ValueError(f"no tiny config for {family!r}")


_MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "bert": BertModel,
    "roberta": RobertaModel,
    "xlm-roberta": XLMRobertaModel,
    "electra": ElectraModel,
    "ernie": ErnieModel,
    "camembert": CamembertModel,
    "deberta-v2": DebertaV2Model,
    "gpt2": GPT2LMHeadModel,
    "llama": LlamaForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "mistral": MistralForCausalLM,
}


def tiny_backbone(
    family: str, attn_implementation: str | None = None, seed: int = 0, **overrides
) -> nn.Module:
    """A tiny random base model (encoders) or causal LM (decoders) in eval mode, seeded."""
    config = tiny_config(family, **overrides)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = _MODEL_CLASSES[family](config).eval()
    if attn_implementation is not None:
        assert model.config._attn_implementation == attn_implementation
    return model


def self_attentions(family: str, backbone: nn.Module) -> list[nn.Module]:
    """Each layer's self-attention module (the one whose keys/values get the prefix), in layer order."""
    if family == "gpt2":
        return [block.attn for block in backbone.transformer.h]
    if family in ("llama", "qwen2", "mistral"):
        return [layer.self_attn for layer in backbone.model.layers]
    return [layer.attention.self for layer in backbone.encoder.layer]


def first_attention(family: str, backbone: nn.Module) -> nn.Module:
    return self_attentions(family, backbone)[0]


def pad_id(family: str) -> int:
    return 1 if family in ("roberta", "xlm-roberta", "camembert") else 0


def random_ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    """Token ids that avoid the special ids 0-2 (padding, bos, eos) so padding is unambiguous."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)


def pad_rows(rows: list[torch.Tensor], side: str, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D id tensors of different lengths into (B, T) ids and mask, padded on ``side``."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        where = slice(0, len(row)) if side == "right" else slice(longest - len(row), longest)
        ids[i, where] = row
        mask[i, where] = 1
    return ids, mask


@dataclass
class Built:
    """A prompt model over a tiny backbone, with an untouched copy of the backbone for references."""

    model: PromptModel
    reference_backbone: nn.Module
    family: str

    @property
    def is_decoder(self) -> bool:
        return self.family in DECODERS

    def outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task: str = "t") -> torch.Tensor:
        """What a user compares: hidden states (encoders) or LM logits (decoders), shape (B, T, ·)."""
        if self.is_decoder:
            return self.model(input_ids, attention_mask, task=task).logits
        names = [self.model.task_prefix[task]] * input_ids.shape[0]
        return self.model.encode(input_ids, attention_mask, None, names)


def build(
    family: str,
    method: str = "ptuning-v2",
    prefix_length: int = 4,
    attn_implementation: str | None = None,
    seed: int = 0,
    head_dropout: float = 0.0,
    config_overrides: dict | None = None,
    **prefix_fields,
) -> Built:
    """A PromptModel with one task ``t`` (classification for encoders, causal LM for decoders)."""
    backbone = tiny_backbone(family, attn_implementation, seed, **(config_overrides or {}))
    reference = copy.deepcopy(backbone)
    prefix_config = PrefixConfig(prefix_length=prefix_length, dropout=0.0, **prefix_fields)
    torch.manual_seed(seed + 1)
    model = PromptModel(backbone, method, prefix_config, head_dropout=head_dropout).eval()
    if family in DECODERS:
        model.add_task("t", HeadSpec(HeadKind.CAUSAL_LM))
    else:
        model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["neg", "pos"]))
    return Built(model, reference, family)


def real(tensor: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The rows of a (B, T, ...) tensor at real (unpadded) positions, flattened to (n_real, ...)."""
    return tensor[attention_mask.bool()]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    """Absolute tolerance only: the tiny models' activations are O(1), so 1e-5 is fp32 rounding."""
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)
