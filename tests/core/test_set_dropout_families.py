"""``set_dropout`` (``--backbone-dropout``) reaches every dropout a family's forward applies, in every family.

Families keep dropout rates in three places: ``nn.Dropout`` modules, numbers on their modules (BART's
``activation_dropout``, StarCoder2's ``residual_dropout`` and ``embedding_dropout``, GPT-BigCode's
``attn_pdrop``), and their config, which some forwards read (Persimmon's attention, Falcon's residuals).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from core_tiny import ALL_FAMILIES, VOCAB, family_available, tiny_config
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig

from ptuning.core.dropout import set_dropout

_BART = dict(
    d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=0, decoder_start_token_id=0,
)  # fmt: skip
_T5 = dict(d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, pad_token_id=0, decoder_start_token_id=0)
# Families beyond core_tiny's: encoder-decoders, and Falcon, whose forward reads its config's rates.
_EXTRA = {
    "bart": _BART,
    "mbart": _BART,
    "t5": _T5,
    "falcon": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=6, max_position_embeddings=64),
}
SEQ2SEQ = ("bart", "mbart", "t5")


def _is_dropout_field(name: str, value: object) -> bool:
    """A numeric rate under a dropout-like name (``layerdrop`` drops whole layers and is not one)."""
    lowered = name.lower()
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and ("dropout" in lowered or lowered.endswith("pdrop"))


def _with_dropout(config: PretrainedConfig, rate: float) -> PretrainedConfig:
    for name, value in list(vars(config).items()):
        if _is_dropout_field(name, value):
            setattr(config, name, rate)
    return config


def _backbone(family: str) -> nn.Module:
    """A tiny random ``family`` model built with every dropout rate of its config at 0.3, in training mode."""
    if family in _EXTRA:
        config = AutoConfig.for_model(family, vocab_size=VOCAB, **_EXTRA[family])
    else:
        if reason := family_available(family):
            pytest.skip(reason)
        config = tiny_config(family)
    torch.manual_seed(0)
    return AutoModel.from_config(_with_dropout(config, 0.3)).train()


def _rates(backbone: nn.Module) -> list[float]:
    """Every dropout rate the backbone holds: its modules', and those of the configs its modules hold (T5's
    encoder and decoder stacks hold copies of the model's config) and their sub-configs."""
    rates, configs = [], {}
    for module in backbone.modules():
        if isinstance(module, nn.Dropout):
            rates.append(module.p)
        rates += [value for name, value in vars(module).items() if _is_dropout_field(name, value)]
        if isinstance(config := getattr(module, "config", None), PretrainedConfig):
            configs[id(config)] = config
    pending = list(configs.values())
    while pending:
        config = pending.pop()
        for value in vars(config).values():
            if isinstance(value, PretrainedConfig) and id(value) not in configs:
                configs[id(value)] = value
                pending.append(value)
    for config in configs.values():
        rates += [value for name, value in vars(config).items() if _is_dropout_field(name, value)]
    return rates


def _twice_alike(family: str, backbone: nn.Module) -> bool:
    """Two training-mode forwards of the same tokens give the same output (nothing was dropped)."""
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family in SEQ2SEQ:
        inputs["decoder_input_ids"] = ids[:, :4]
    first, second = (backbone(**inputs).last_hidden_state for _ in range(2))
    return torch.equal(first, second)


FAMILIES = sorted(ALL_FAMILIES) + sorted(_EXTRA)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test, and the count put back after it: every later test ran on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_dropout_zero_makes_training_forwards_deterministic(family: str, one_thread: None) -> None:
    backbone = _backbone(family)
    assert not _twice_alike(family, backbone)  # built at 0.3, the forward drops
    set_dropout(backbone, 0.0)
    assert _twice_alike(family, backbone)


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_dropout_sets_every_rate_of_modules_and_configs_and_counts_them(family: str) -> None:
    backbone = _backbone(family)
    count = set_dropout(backbone, 0.25)
    rates = _rates(backbone)
    assert set(rates) == {0.25}
    assert count == len(rates)


def test_flags_and_unset_rates_are_left_alone() -> None:
    """A boolean under a dropout name (ESM's ``token_dropout``) and ``classifier_dropout=None`` are not rates."""
    holder = nn.Linear(2, 2)
    holder.token_dropout, holder.classifier_dropout, holder.layerdrop = True, None, 0.2
    assert set_dropout(holder, 0.0) == 0
    assert (holder.token_dropout, holder.classifier_dropout, holder.layerdrop) == (True, None, 0.2)
