"""Quantized frozen backbones (core/quantization.py): int8 for CPU inference, bitsandbytes on CUDA, and one-line
refusals for what cannot work.

Tolerance: weight-only int8 (one scale per output channel, activations untouched) moves the tiny encoders'
O(1) logits by about 2e-4 and the tiny Llama's by about 2.5e-3; int8-dynamic (int8 activations too) by about
5e-4 and 0.01. The bound is 0.05 for both.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from core_tiny import build, random_ids, tiny_backbone
from tiny_models import minilm_tokenizer_dir, save_tiny_bert

from ptuning.core.backbones import load_backbone
from ptuning.core.checkpoint import load_checkpoint, save_checkpoint
from ptuning.core.config import ConfigError
from ptuning.core.model import PromptModel
from ptuning.core.quantization import loading_kwargs, quantize_backbone

CUDA_AND_BNB = torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


@pytest.mark.parametrize("kind", ["int8", "int8-dynamic"])
@pytest.mark.parametrize("family", ["bert", "deberta-v2", "llama"])
def test_a_cpu_int8_backbone_answers_within_tolerance_of_fp32(family: str, kind: str) -> None:
    reference = build(family).model.eval()
    quantized = copy.deepcopy(reference)
    assert quantize_backbone(quantized, kind) > 0
    ids = random_ids(3, 7)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected, actual = reference(ids, mask).logits, quantized(ids, mask).logits
    assert actual.dtype == torch.float32 and not torch.equal(actual, expected)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0.05)
    assert quantized.prefixes["t"].embedding.weight.dtype == torch.float32  # only the backbone is int8


def test_per_channel_weight_scales_stay_closer_to_fp32_than_one_scale_per_tensor() -> None:
    reference = build("bert").model.eval()
    errors = {}
    for per_channel in (True, False):
        quantized = copy.deepcopy(reference)
        quantize_backbone(quantized, "int8-dynamic", per_channel=per_channel)
        ids = random_ids(8, 12)
        with torch.no_grad():
            names = ["t"] * 8
            expected = reference.encode(ids, torch.ones_like(ids), None, names)
            actual = quantized.encode(ids, torch.ones_like(ids), None, names)
        errors[per_channel] = (actual - expected).abs().mean().item()
    assert errors[True] < errors[False], errors


def test_a_checkpoint_loads_onto_fp32_and_then_serves_from_int8(tmp_path) -> None:
    model = build("bert").model.eval()
    save_checkpoint(model, tmp_path / "prompt")
    loaded = load_checkpoint(tmp_path / "prompt", backbone=copy.deepcopy(build("bert").reference_backbone))
    quantize_backbone(loaded)
    ids = random_ids(4, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0.05)


def test_generate_runs_on_a_cpu_int8_llama_and_follows_its_own_logits() -> None:
    model = build("llama", config_overrides={"initializer_range": 0.3}).model.eval()
    ids = random_ids(2, 5)
    quantize_backbone(model)
    generated = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, 4)
    with torch.no_grad():
        first = model(ids).logits[:, -1].argmax(-1)  # the first step sees exactly the same inputs
    assert torch.equal(generated[:, 0], first)


def test_training_through_an_int8_dynamic_backbone_is_refused_not_silently_gradient_free() -> None:
    """torch's dynamic int8 Linear has no backward: the prefix would get no gradient at all."""
    model = build("bert").model.train()
    quantize_backbone(model, "int8-dynamic")
    ids = random_ids(2, 5)
    with pytest.raises(ConfigError, match="an int8-dynamic backbone has no backward"):
        model(ids, labels=torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "why, make, message",
    [
        (
            "nf4 on CPU",
            lambda: loading_kwargs("nf4", "cpu"),
            r"^nf4 needs CUDA and bitsandbytes \(this device is cpu\)$",
        ),
        ("int8 loading on CPU", lambda: loading_kwargs("int8", "cpu"), "call quantize_backbone"),
        ("unknown kind", lambda: loading_kwargs("int4", "cpu"), "must be one of int8, nf4; got 'int4'"),
        ("nf4 after loading", lambda: quantize_backbone(tiny_backbone("bert"), "nf4"), "nf4 needs CUDA"),
        (
            "int8-dynamic over bf16",
            lambda: quantize_backbone(tiny_backbone("bert").to(torch.bfloat16), "int8-dynamic"),
            "int8-dynamic needs an fp32 backbone",
        ),
        ("GPT-2's Conv1D", lambda: quantize_backbone(tiny_backbone("gpt2")), "no nn.Linear to quantize"),
        (
            "quantizing twice",
            lambda: quantize_backbone(_quantized(tiny_backbone("bert")), "int8-dynamic"),
            r"already quantized \(int8\)",
        ),
        ("int8-dynamic at load time", lambda: loading_kwargs("int8-dynamic", "cpu"), "quantize_backbone"),
    ],
)
def test_combinations_that_cannot_work_are_refused_in_one_line(why, make, message) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        make()
    assert "\n" not in str(caught.value), why


def _quantized(backbone):
    quantize_backbone(backbone)
    return backbone


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_load_backbone_refuses_nf4_without_cuda(tmp_path) -> None:
    folder = save_tiny_bert(tmp_path / "tiny-bert")
    with pytest.raises(ConfigError, match=r"^nf4 needs CUDA and bitsandbytes"):
        load_backbone(folder, quantization="nf4")


@pytest.mark.skipif(
    not CUDA_AND_BNB, reason="bitsandbytes quantization needs CUDA and the bitsandbytes package"
)
@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_a_bitsandbytes_llama_trains_a_prefix_and_generates(tmp_path, quantization: str) -> None:
    """QLoRA's path for prefixes: the frozen backbone in 4 or 8 bits, the prefix in fp32 on the GPU."""
    from transformers import AutoTokenizer

    folder = tmp_path / "tiny-llama"
    tiny_backbone("llama", hidden_size=64, num_attention_heads=4, num_key_value_heads=2).save_pretrained(
        folder
    )
    AutoTokenizer.from_pretrained(minilm_tokenizer_dir()).save_pretrained(folder)
    backbone, _ = load_backbone(str(folder), causal_lm=True, quantization=quantization)
    built = build("llama")
    model = PromptModel(backbone, "ptuning-v2", built.model.prefix_config)
    model.add_task("t", built.model.head_specs["t"])
    ids = random_ids(4, 8).cuda()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(10):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert model.generate(ids[:2], max_new_tokens=3, do_sample=False).shape == (2, 3)
