"""FastDropout: the same inverted dropout as nn.Dropout (rate, scale, gradient), with a cheaper CPU mask."""

from __future__ import annotations

import math

import pytest
import torch
from core_tiny import family_available, tiny_config
from torch import nn
from transformers import AutoModel, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from ptuning.core.config import PrefixConfig
from ptuning.core.dropout import FastDropout, keep_mask, set_dropout, use_fast_dropout
from ptuning.core.injection import attention_interface
from ptuning.core.kinds import HeadKind
from ptuning.core.model import HeadSpec, PromptModel


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drops_the_requested_fraction_and_rescales_the_rest(p: float) -> None:
    torch.manual_seed(0)
    x = torch.full((400, 1000), 3.0)
    out = FastDropout(p).train()(x)
    dropped = out == 0
    n = x.numel()
    # Within 5 standard deviations of a Binomial(n, p) count.
    assert abs(dropped.sum().item() - p * n) < 5 * math.sqrt(n * p * (1 - p))
    kept_value = 3.0 * 65536 / (65536 - round(p * 65536))
    torch.testing.assert_close(out[~dropped], torch.full_like(out[~dropped], kept_value))
    assert abs(out.mean().item() - 3.0) < 3.0 * 5 * math.sqrt(p / (1 - p) / n)


def test_every_16_bit_word_of_a_draw_is_used_and_unbiased() -> None:
    """Each of the four words of a 64-bit draw must drop at rate p (a biased word would show here)."""
    torch.manual_seed(1)
    mask = keep_mask(torch.ones(4 * 200_000), 0.5).view(-1, 4)
    rates = (mask == 0).float().mean(dim=0)
    assert torch.all((rates - 0.5).abs() < 5 * math.sqrt(0.25 / 200_000)), rates


def test_gradient_is_the_mask_and_eval_is_identity() -> None:
    torch.manual_seed(2)
    x = torch.randn(8, 33, requires_grad=True)
    dropout = FastDropout(0.3).train()
    out = dropout(x)
    out.sum().backward()
    scale = 65536 / (65536 - round(0.3 * 65536))
    torch.testing.assert_close(x.grad, (out != 0).float() * scale)
    assert torch.equal(dropout.eval()(x), x)


def test_same_seed_same_mask_and_edge_rates() -> None:
    x = torch.randn(5, 7)
    torch.manual_seed(3)
    first = FastDropout(0.2).train()(x)
    torch.manual_seed(3)
    assert torch.equal(FastDropout(0.2).train()(x), first)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))
    half = FastDropout(0.5).train()(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16 and half.shape == x.shape


def test_non_contiguous_and_inplace_inputs() -> None:
    torch.manual_seed(4)
    x = torch.randn(6, 10).t()
    out = FastDropout(0.5).train()(x)
    assert out.shape == x.shape and torch.equal(out[out != 0], 2 * x[out != 0])
    y = torch.ones(100)
    assert FastDropout(0.5, inplace=True).train()(y) is y and (y == 0).any()


def _tiny_bert(hidden_dropout: float, attention_dropout: float) -> BertModel:
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        hidden_dropout_prob=hidden_dropout, attention_probs_dropout_prob=attention_dropout,
    )  # fmt: skip
    return BertModel(config)


def test_prompt_model_replaces_every_backbone_dropout_module_keeping_its_rate() -> None:
    backbone = _tiny_bert(hidden_dropout=0.15, attention_dropout=0.05)
    rates_before = {name: m.p for name, m in backbone.named_modules() if isinstance(m, nn.Dropout)}
    model = PromptModel(backbone, "ptuning-v2", PrefixConfig(prefix_length=2))
    model.add_task("t", HeadSpec(HeadKind.CLASSIFICATION, ["a", "b"]))
    after = {name: m for name, m in model.backbone.named_modules() if isinstance(m, nn.Dropout)}
    assert {name: m.p for name, m in after.items()} == rates_before and len(after) == 7
    assert all(type(m) is FastDropout for m in model.modules() if isinstance(m, nn.Dropout))


def test_use_fast_dropout_counts_what_it_replaced() -> None:
    module = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.1)), FastDropout(0.3))
    assert use_fast_dropout(module) == 2
    assert [type(m) for m in module.modules() if isinstance(m, nn.Dropout)] == [FastDropout] * 3
    assert use_fast_dropout(module) == 0


def _bert_with_attention_dropout() -> PromptModel:
    torch.manual_seed(0)
    model = PromptModel(
        _tiny_bert(hidden_dropout=0.0, attention_dropout=0.3),
        "ptuning-v2",
        PrefixConfig(prefix_length=3, dropout=0.0, init_std=1.0),
        head_dropout=0.0,
    )
    model.add_task("t", HeadSpec(HeadKind.TOKEN_CLASSIFICATION, ["a", "b"]))
    return model


def _padded_batch() -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([[2, 5, 9, 7, 3], [2, 8, 3, 0, 0]])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}


def test_cpu_attention_dropout_path_equals_sdpa_when_nothing_is_dropped(monkeypatch) -> None:
    """The encoder-on-CPU attention that replaces sdpa's dropout (prefix columns, padding) is sdpa's math."""
    model = _bert_with_attention_dropout()
    batch = _padded_batch()
    expected = model.eval()(**batch).logits
    calls = []

    def keep_everything(like: torch.Tensor, p: float) -> torch.Tensor:
        calls.append(like.shape)
        return torch.ones_like(like)

    monkeypatch.setattr(attention_interface, "keep_mask", keep_everything)
    got = model.train()(**batch).logits
    assert calls == [(2, 2, 5, 8)] * 2  # (B, heads, T, P + T), one per layer
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_cpu_attention_dropout_matches_a_by_hand_computation(monkeypatch) -> None:
    torch.manual_seed(5)
    query, key, value = (torch.randn(2, 3, 4, 8) for _ in range(3))
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[1, :, :, -1] = False
    pattern = (torch.arange(2 * 3 * 4 * 4).view(2, 3, 4, 4) % 3 != 0).float() * 1.5
    monkeypatch.setattr(attention_interface, "keep_mask", lambda like, p: pattern)
    got, _ = attention_interface._math_attention(query, key, value, mask, dropout=1 / 3, scaling=0.5)
    scores = (query @ key.transpose(-1, -2)) * 0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    expected = ((scores.softmax(-1) * pattern) @ value).transpose(1, 2)
    torch.testing.assert_close(got, expected)


def test_attention_dropout_is_applied_in_training_and_left_to_sdpa_for_decoders(monkeypatch) -> None:
    model = _bert_with_attention_dropout()
    batch = _padded_batch()
    expected = model.eval()(**batch).logits
    torch.manual_seed(6)
    assert not torch.allclose(model.train()(**batch).logits, expected, atol=1e-3)

    taken = []
    original = attention_interface._math_attention
    monkeypatch.setattr(
        attention_interface,
        "_math_attention",
        lambda *args, **kwargs: taken.append(1) or original(*args, **kwargs),
    )
    decoder = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, attn_pdrop=0.3))
    prompt_model = PromptModel(decoder, "ptuning-v2", PrefixConfig(prefix_length=2))
    prompt_model.add_task("lm", HeadSpec(HeadKind.CAUSAL_LM))
    prompt_model.train()(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]]))
    assert taken == []
    model.train()(**batch)
    assert len(taken) == 2


@pytest.mark.parametrize("family", ["bert", "roberta", "deberta-v2", "gpt2", "llama", "t5"])
def test_set_dropout_reaches_every_dropout_of_the_forward(family: str) -> None:
    """``--backbone-dropout``'s rates: a backbone built with every dropout field at 0.3, then set to 0,
    computes a training-mode forward twice alike; set to 0.3 again, the two differ (nn.Dropout modules,
    Llama's float attention_dropout, T5's float attention dropout)."""
    from core_tiny import family_available, tiny_config
    from transformers import AutoModel, T5Config, T5Model

    from ptuning.core.dropout import set_dropout

    if family == "t5":
        config = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    else:
        if reason := family_available(family):
            pytest.skip(reason)
        config = tiny_config(family)
    for name, value in list(vars(config).items()):  # every dropout-like rate of the family at 0.3
        if isinstance(value, float) and ("dropout" in name.lower() or name.lower().endswith("pdrop")):
            setattr(config, name, 0.3)
    torch.manual_seed(0)
    backbone = (T5Model(config) if family == "t5" else AutoModel.from_config(config)).train()
    ids = torch.randint(3, 100, (2, 6))
    inputs = {"input_ids": ids, **({"decoder_input_ids": ids} if family == "t5" else {})}

    def twice_alike() -> bool:
        first, second = (backbone(**inputs).last_hidden_state for _ in range(2))
        return torch.equal(first, second)

    assert not twice_alike()
    assert set_dropout(backbone, 0.0) > 0
    assert twice_alike()
    set_dropout(backbone, 0.3)
    assert not twice_alike()


def test_set_dropout_reaches_gpt_bigcodes_float_attention_dropout() -> None:
    if reason := family_available("gpt_bigcode"):
        pytest.skip(reason)
    # only the attention probabilities drop: the float rate is the one dropout in the forward
    config = tiny_config("gpt_bigcode", attn_pdrop=0.3)
    torch.manual_seed(0)
    backbone = AutoModel.from_config(config, attn_implementation="eager").train()
    ids = torch.randint(3, 100, (2, 6))

    def twice_alike() -> bool:
        first, second = (backbone(input_ids=ids).last_hidden_state for _ in range(2))
        return torch.equal(first, second)

    assert not twice_alike()
    set_dropout(backbone, 0.0)
    assert twice_alike()
