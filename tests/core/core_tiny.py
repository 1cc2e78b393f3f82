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
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    PretrainedConfig,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from ptuning.core.config import PrefixConfig
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel

VOCAB = 100
ATOL = 1e-5

# The families the core's own proofs run on (the conformance suite, tests/core/conformance, covers all).
ENCODERS = ("bert", "roberta", "xlm-roberta", "electra", "ernie", "camembert", "deberta-v2")
DECODERS = ("gpt2", "llama", "qwen2", "mistral")
FAMILIES = ENCODERS + DECODERS
# Families whose attention goes through transformers' registry (DeBERTa has no sdpa and its own patch).
INTERFACE_FAMILIES = tuple(f for f in FAMILIES if f != "deberta-v2")

ENCODER_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    pad_token_id=0,
)
_DECODER_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=8,
    intermediate_size=64,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
_MOE = dict(num_experts=4, num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)


@dataclass(frozen=True)
class Family:
    """How to build a tiny random member of one architecture family."""

    model_type: str
    decoder: bool
    fields: tuple[tuple[str, object], ...] = ()  # family-specific config fields over the shared sizes
    since: str | None = None  # the first transformers release whose attention takes a prefix here

    def config(self, **overrides) -> PretrainedConfig:
        sizes = _DECODER_SIZES if self.decoder else ENCODER_SIZES
        given = {**dict(self.fields), **overrides}
        # A family's own name for a shared size (GPT-2's n_positions) wins over the shared name.
        aliases = CONFIG_MAPPING[self.model_type].attribute_map
        sizes = {k: v for k, v in sizes.items() if aliases.get(k) not in given}
        config = AutoConfig.for_model(self.model_type, **{**sizes, **given})
        _zero_dropout(config, overrides)
        return config


def _f(model_type: str, decoder: bool, since: str | None = None, **fields) -> Family:
    return Family(model_type, decoder, tuple(fields.items()), since)


_ROBERTA_PAD = dict(pad_token_id=1)
_DEBERTA = dict(
    relative_attention=True,
    pos_att_type=["p2c", "c2p"],
    position_buckets=8,
    max_relative_positions=-1,
    position_biased_input=False,
    share_att_key=True,
    norm_rel_ebd="layer_norm",
)
# family name -> builder. The names are the model types (what a user's config.json says). Sliding windows
# are narrower (6) than the test sequences (up to 9 tokens), so the window really hides tokens while the
# prefix stays visible.
ALL_FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        _f("bert", False),
        _f("roberta", False, **_ROBERTA_PAD),
        _f("xlm-roberta", False, **_ROBERTA_PAD),
        _f("camembert", False, **_ROBERTA_PAD),
        _f("roberta-prelayernorm", False, **_ROBERTA_PAD),
        _f("xlm-roberta-xl", False, **_ROBERTA_PAD),
        _f("data2vec-text", False, **_ROBERTA_PAD),
        # embedding_size != hidden_size: ELECTRA projects its embeddings; the prefix must not care.
        _f("electra", False, embedding_size=16),
        _f("ernie", False),
        _f("deberta-v2", False, **_DEBERTA),
        _f("mpnet", False, **_ROBERTA_PAD),
        _f("distilbert", False, dim=32, n_layers=2, n_heads=4, hidden_dim=64),
        _f("albert", False, embedding_size=16, num_hidden_groups=1, inner_group_num=1),
        _f("modernbert", False, global_attn_every_n_layers=2, local_attention=12),
        _f("nomic_bert", False),
        _f("jina_embeddings_v3", False, **_ROBERTA_PAD),
        _f("gpt2", True, n_positions=64, num_key_value_heads=None, head_dim=None),
        _f("llama", True),
        _f("qwen2", True),
        _f("mistral", True, sliding_window=None),
        _f("qwen3", True),
        _f("gemma", True),
        _f("gemma2", True, sliding_window=6, attn_logit_softcapping=50.0, final_logit_softcapping=None),
        _f("gemma3_text", True, sliding_window=6, sliding_window_pattern=2),
        _f("phi3", True),
        _f("phi", True, num_key_value_heads=None),
        _f("glm", True),
        _f("glm4", True),
        _f("smollm3", True),
        _f("olmo", True),
        _f("olmo2", True),
        _f("gpt_neox", True, num_key_value_heads=None, head_dim=None),
        _f("opt", True, ffn_dim=64, word_embed_proj_dim=48, num_key_value_heads=None, head_dim=None),
        _f("mixtral", True, sliding_window=None, **_MOE),
        _f("qwen2_moe", True, shared_expert_intermediate_size=32, **_MOE),
        _f("qwen3_moe", True, **_MOE),
        _f("stablelm", True),
        _f("starcoder2", True, sliding_window=None),
        _f("cohere", True),
        _f("granite", True),
        _f("helium", True),
        # GPT-J and CodeGen call the attention interface from transformers 5.24 on (5.23 computes it itself,
        # and is refused there naming GPTJAttention / CodeGenAttention).
        _f("gptj", True, "5.24.0", n_positions=64, rotary_dim=4, num_key_value_heads=None, head_dim=None),
        _f(
            "codegen",
            True,
            "5.24.0",
            n_positions=64,
            n_ctx=64,
            rotary_dim=4,
            num_key_value_heads=None,
            head_dim=None,
        ),  # fmt: skip
        _f("gpt_bigcode", True, n_positions=64, multi_query=True, num_key_value_heads=None, head_dim=None),
        _f("persimmon", True, num_key_value_heads=None, head_dim=None),
        _f("nemotron", True),
        _f("seed_oss", True),
        _f("olmo3", True),
        _f("granitemoe", True, **_MOE),
    )
}


def _zero_dropout(config: PretrainedConfig, keep: dict) -> None:
    """Every dropout-like field at 0 (names differ by family), so two runs compare to fp32 rounding."""
    for name, value in list(vars(config).items()):
        lowered = name.lower()
        if name in keep or not isinstance(value, float) or isinstance(value, bool):
            continue
        if "dropout" in lowered or lowered.endswith("pdrop") or lowered in ("attention_dropout", "dropout"):
            setattr(config, name, 0.0)


def family_available(family: str) -> str | None:
    """None when the installed transformers has ``family``; otherwise the reason to skip it."""
    import transformers
    from packaging.version import Version

    entry = ALL_FAMILIES[family]
    if entry.model_type not in CONFIG_MAPPING:
        return f"{entry.model_type!r} is not in transformers {transformers.__version__}"
    if entry.since and Version(transformers.__version__) < Version(entry.since):
        return (
            f"{family}'s attention calls the attention interface from transformers {entry.since} on; "
            f"{transformers.__version__} refuses it naming its attention module"
        )
    return None


def tiny_config(family: str, **overrides) -> PretrainedConfig:
    """The config of a tiny random ``family`` model; ``overrides`` replace any field."""
    return ALL_FAMILIES[family].config(**overrides)


def is_decoder(family: str) -> bool:
    return ALL_FAMILIES[family].decoder


def tiny_backbone(
    family: str, attn_implementation: str | None = None, seed: int = 0, **overrides
) -> nn.Module:
    """A tiny random base model (encoders) or causal LM (decoders) in eval mode, seeded."""
    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    loader = AutoModelForCausalLM if is_decoder(family) else AutoModel
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation is not None else {}
    model = loader.from_config(config, **kwargs).eval()
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
    return int(ALL_FAMILIES[family].config().pad_token_id or 0)


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
        return is_decoder(self.family)

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
    if is_decoder(family):
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
