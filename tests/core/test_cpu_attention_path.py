"""Which attention a prefixed encoder runs on CPU: the plain math for bf16 inference and bf16 training over
short keys (faster than sdpa's CPU kernel, docs/BENCHMARKS.md "Attention on CPU"), sdpa for fp32, for long
keys and for decoders; both compute the same thing, gradients included."""

from __future__ import annotations

import copy

import pytest
import torch
from core_tiny import VOCAB, build, random_ids

from ptuning.core.injection import attention_interface


def test_math_attention_without_dropout_is_masked_softmax_attention_by_hand() -> None:
    torch.manual_seed(7)
    query, key, value = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)
    mask = torch.ones(2, 1, 4, 6, dtype=torch.bool)
    mask[0, :, :, -2:] = False  # padding keys of the first row
    got, weights = attention_interface._math_attention(query, key, value, mask, dropout=0.0, scaling=0.3)
    scores = (query @ key.transpose(-1, -2)) * 0.3
    expected = (scores.masked_fill(~mask, float("-inf")).softmax(-1) @ value).transpose(1, 2)
    assert weights is None and got.shape == (2, 4, 3, 8)
    torch.testing.assert_close(got, expected)
    sdpa = torch.nn.functional.scaled_dot_product_attention(query, key, value, mask, scale=0.3)
    torch.testing.assert_close(got, sdpa.transpose(1, 2))


@pytest.mark.parametrize("keys", [20, 80])  # the softmax runs in fp32 up to the key cap (64), in bf16 beyond
def test_bf16_math_attention_stays_within_bf16_rounding_of_fp32_on_both_sides_of_the_key_cap(
    keys: int,
) -> None:
    torch.manual_seed(3)
    query, key, value = torch.randn(2, 3, 5, 16), torch.randn(2, 3, keys, 16), torch.randn(2, 3, keys, 16)
    mask = torch.ones(2, 1, 5, keys, dtype=torch.bool)
    mask[1, :, :, -4:] = False
    scores = (query @ key.transpose(-1, -2)) / 4  # by hand, in fp32: 1/sqrt(head size 16)
    exact = (scores.masked_fill(~mask, float("-inf")).softmax(-1) @ value).transpose(1, 2)
    half, _ = attention_interface._math_attention(*(t.bfloat16() for t in (query, key, value)), mask)
    assert half.dtype == torch.bfloat16
    # inputs rounded to 8 mantissa bits (2^-9 relative) and outputs of ~0.1-0.3: measured 0.005-0.006 off
    torch.testing.assert_close(half.float(), exact, rtol=0, atol=0.02)


def _count_math_calls(monkeypatch) -> list[torch.dtype]:
    calls: list[torch.dtype] = []
    original = attention_interface._math_attention

    def counted(query, *args, **kwargs):
        calls.append(query.dtype)
        return original(query, *args, **kwargs)

    monkeypatch.setattr(attention_interface, "_math_attention", counted)
    return calls


def _logits_and_attention(
    model, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The logits, and each layer's self-attention output (B, T, hidden): what the math path or sdpa gave."""
    outputs: list[torch.Tensor] = []
    hooks = [
        layer.attention.self.register_forward_hook(lambda module, args, out: outputs.append(out[0].float()))
        for layer in model.backbone.encoder.layer
    ]
    try:
        with torch.no_grad():
            logits = model(ids, mask).logits
    finally:
        for hook in hooks:
            hook.remove()
    return logits, outputs


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = random_ids(3, 7)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0  # a padded row: its padding keys stay masked on both paths
    return ids, mask


def test_a_bf16_encoder_predicts_through_the_math_path_within_bf16_rounding_of_sdpa(monkeypatch) -> None:
    reference = build("bert").model.eval()
    half = copy.deepcopy(reference)
    half.backbone.to(torch.bfloat16)
    ids, mask = _padded_batch()
    layers = reference.backbone.config.num_hidden_layers
    fp32, _ = _logits_and_attention(reference, ids, mask)
    calls = _count_math_calls(monkeypatch)
    math, math_attention = _logits_and_attention(half, ids, mask)
    assert calls == [torch.bfloat16] * layers
    monkeypatch.setattr(attention_interface, "_takes_math_attention", lambda *args: False)
    sdpa, sdpa_attention = _logits_and_attention(half, ids, mask)
    assert len(calls) == layers  # the forced run took sdpa
    monkeypatch.undo()
    # The same bf16 inputs reach layer 0 on both paths, so the attention outputs (|values| < 0.8) differ by
    # rounding: measured one bf16 step (2^-8) in each layer; bound 4 steps. A math path that drops the
    # prefix is 0.8 off, one that drops the padding mask 0.14 off (on the real tokens compared here).
    real = mask.bool()
    for got, expected in zip(math_attention, sdpa_attention, strict=True):
        torch.testing.assert_close(got[real], expected[real], rtol=0, atol=4 * 2**-8)
    # the logits: measured 1.1e-3 apart (bound ~4x; without the prefix 0.025), and 5.5e-3 from fp32's
    torch.testing.assert_close(math, sdpa, rtol=0, atol=0.005)
    torch.testing.assert_close(math, fp32, rtol=0, atol=0.02)


def test_the_padding_of_a_row_cannot_change_its_tokens_on_the_bf16_math_path(monkeypatch) -> None:
    """Masked keys get exactly zero weight: other padding tokens change the real tokens' attention outputs
    and the logits by not even one rounding step."""
    model = build("bert").model.eval()
    model.backbone.to(torch.bfloat16)
    ids, mask = _padded_batch()
    repadded = ids.clone()
    repadded[0, 5:] = (ids[0, 5:] + 17) % VOCAB
    calls = _count_math_calls(monkeypatch)
    logits, attention = _logits_and_attention(model, ids, mask)
    repadded_logits, repadded_attention = _logits_and_attention(model, repadded, mask)
    assert calls == [torch.bfloat16] * 2 * model.backbone.config.num_hidden_layers
    real = mask.bool()
    for got, expected in zip(repadded_attention, attention, strict=True):
        assert torch.equal(got[real], expected[real])
        assert not torch.equal(got[~real], expected[~real])  # the padding positions' own outputs did change
    assert torch.equal(repadded_logits, logits)


def test_bf16_inference_over_more_keys_than_the_cap_keeps_sdpa(monkeypatch) -> None:
    model = build("bert").model.eval()
    model.backbone.to(torch.bfloat16)
    ids, mask = random_ids(2, 6), torch.ones(2, 6, dtype=torch.long)
    keys = 6 + model.prefix_config.prefix_length
    calls = _count_math_calls(monkeypatch)
    with torch.no_grad():
        monkeypatch.setattr(attention_interface, "MATH_ATTENTION_MAX_KEYS", keys)
        model(ids, mask)
        assert len(calls) == model.backbone.config.num_hidden_layers  # at the cap: the math
        monkeypatch.setattr(attention_interface, "MATH_ATTENTION_MAX_KEYS", keys - 1)
        model(ids, mask)
    assert len(calls) == model.backbone.config.num_hidden_layers  # one key over: sdpa


@pytest.mark.parametrize("family, dtype", [("bert", torch.float32), ("llama", torch.bfloat16)])
def test_fp32_encoders_and_causal_decoders_keep_sdpa(monkeypatch, family: str, dtype: torch.dtype) -> None:
    model = build(family).model.eval()
    model.backbone.to(dtype)
    calls = _count_math_calls(monkeypatch)
    ids, mask = random_ids(2, 5), torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        model(ids, mask)
        assert calls == []
        # fp32 joins the math only through the dtypes' list (attention_path_ab's --fp32 switch); a decoder never
        monkeypatch.setattr(
            attention_interface, "MATH_ATTENTION_INFERENCE_DTYPES", (torch.bfloat16, torch.float32)
        )
        model(ids, mask)
    assert calls == ([torch.float32] * model.backbone.config.num_hidden_layers if family == "bert" else [])


def test_bf16_training_without_dropout_takes_the_math_up_to_its_key_cap_with_sdpa_s_gradients(
    monkeypatch,
) -> None:
    """A training step (autograd on, no attention dropout) of a bf16 encoder: the math in every layer, its
    loss and prefix gradient within bf16 rounding of sdpa's; one key over the training cap: sdpa."""
    model = build("bert").model.train()
    model.backbone.to(torch.bfloat16)
    for module in model.modules():  # no dropout anywhere: both paths compute one deterministic step
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids, mask = random_ids(3, 7), torch.ones(3, 7, dtype=torch.long)
    mask[0, 5:] = 0
    labels = torch.tensor([0, 1, 0])
    prefix = next(p for name, p in model.named_parameters() if name.startswith("prefixes"))

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        prefix.grad = None
        loss = model(ids, mask, labels=labels).loss
        loss.backward()
        return loss.detach(), prefix.grad.clone()

    calls = _count_math_calls(monkeypatch)
    math_loss, math_grad = step()
    assert calls == [torch.bfloat16] * model.backbone.config.num_hidden_layers
    monkeypatch.setattr(
        attention_interface, "MATH_ATTENTION_MAX_TRAINING_KEYS", 7 + model.prefix_config.prefix_length - 1
    )
    sdpa_loss, sdpa_grad = step()
    assert len(calls) == model.backbone.config.num_hidden_layers  # one key over the cap: sdpa
    torch.testing.assert_close(math_loss, sdpa_loss, rtol=0, atol=0.02)
    assert (math_grad - sdpa_grad).abs().max() <= 0.02 * sdpa_grad.abs().max()  # bf16: 2^-8 relative steps
    assert sdpa_grad.abs().max() > 0


def test_fp32_training_without_dropout_keeps_sdpa(monkeypatch) -> None:
    model = build("bert").model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    calls = _count_math_calls(monkeypatch)
    model(random_ids(2, 5), torch.ones(2, 5, dtype=torch.long), labels=torch.tensor([0, 1])).loss.backward()
    assert calls == []
