"""Weight-only int8 (core/quantization.py ``Int8WeightOnlyLinear``) and the fingerprint rule for quantized backbones.

Weight-only int8 stores each Linear weight as int8 with one fp32 scale per output row and dequantizes it in
``forward``; activations keep their dtype. A quantized backbone answers the fingerprint of the weights it was
quantized from, so prompts trained on the fp32 model load onto it (core/fingerprint.py).
"""

from __future__ import annotations

import copy
import platform

import pytest
import torch
from core_tiny import build, random_ids, tiny_backbone
from torch import nn

from ptuning.core.checkpoint import load_checkpoint, save_checkpoint
from ptuning.core.fingerprint import base_fingerprint
from ptuning.core.quantization import Int8WeightOnlyLinear, backbone_storage, quantize_backbone


def test_each_weight_is_int8_with_one_scale_per_row_and_rounds_by_at_most_half_a_step() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 5)
    with torch.no_grad():
        linear.weight[2] = 0  # an all-zero row stays zero (no division by a zero scale)
    quantized = Int8WeightOnlyLinear.from_linear(linear)
    assert quantized.weight_int8.dtype == torch.int8 and quantized.scale.shape == (5,)
    assert quantized.weight_int8.abs().amax(dim=1).tolist() == [127, 127, 0, 127, 127]
    error = (quantized.dequantized_weight(torch.float32) - linear.weight).abs()
    assert (error <= quantized.scale[:, None] / 2 + 1e-7).all()
    hidden = torch.randn(3, 16)
    expected = nn.functional.linear(hidden, quantized.dequantized_weight(torch.float32), linear.bias)
    torch.testing.assert_close(quantized(hidden), expected, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_weight_only_stays_closer_to_fp32_than_dynamic_quantization(family: str) -> None:
    """Dynamic quantization also rounds every activation to int8 per batch; weight-only does not."""
    reference = build(family).model.eval()
    ids = random_ids(8, 12)
    errors = {}
    for kind in ("int8", "int8-dynamic"):
        quantized = copy.deepcopy(reference)
        quantize_backbone(quantized, kind)
        with torch.no_grad():
            errors[kind] = (quantized(ids).logits - reference(ids).logits).abs().mean().item()
    assert 0 < errors["int8"] < errors["int8-dynamic"], errors


def test_the_llama_lm_head_stays_as_it_was_and_tied_weights_stay_tied() -> None:
    backbone = tiny_backbone("llama", tie_word_embeddings=True)
    quantize_backbone(backbone, "int8")
    head = backbone.get_output_embeddings()
    assert type(head) is nn.Linear and head.weight is backbone.get_input_embeddings().weight
    assert type(backbone.model.layers[0].self_attn.q_proj) is Int8WeightOnlyLinear


def test_a_quantized_backbone_has_the_fingerprint_of_the_weights_it_was_quantized_from() -> None:
    for kind in ("int8", "int8-dynamic"):
        backbone = tiny_backbone("bert")
        before = {version: base_fingerprint(backbone, version) for version in (1, 2)}
        quantize_backbone(backbone, kind)
        assert {version: base_fingerprint(backbone, version) for version in (1, 2)} == before
        del backbone.ptuning_base_fingerprints  # without the record the quantized weights hash otherwise
        if kind == "int8":
            assert base_fingerprint(backbone) != before[2]


@pytest.mark.parametrize("kind", ["int8", "int8-dynamic"])
def test_a_checkpoint_trained_on_fp32_loads_onto_an_already_quantized_backbone(tmp_path, kind: str) -> None:
    """The server's hot-add path: the backbone is quantized first, the prompt arrives later. Was refused."""
    built = build("bert")
    model = built.model.eval()
    save_checkpoint(model, tmp_path / "prompt")
    backbone = copy.deepcopy(built.reference_backbone)
    quantize_backbone(backbone, kind)
    loaded = load_checkpoint(tmp_path / "prompt", backbone=backbone)
    unprompted = copy.deepcopy(model)
    unprompted.prefixes["t"].embedding.weight.data.zero_()
    ids = random_ids(4, 6)
    atol = 2e-3  # measured max |quantized - fp32|: 1.7e-4 (int8), 5.3e-4 (int8-dynamic); ~4x the larger
    with torch.no_grad():
        expected = model(ids).logits
        # zeroing the prefix moves these logits by 0.04: a prompt lost on loading falls far outside the bound
        assert (unprompted(ids).logits - expected).abs().max() > 10 * atol
        torch.testing.assert_close(loaded(ids).logits, expected, rtol=0, atol=atol)
    assert loaded.base_fingerprint == model.base_fingerprint


def test_a_prefix_gets_its_gradient_through_a_weight_only_backbone() -> None:
    """Unlike int8-dynamic (refused under autograd), the dequantized weight passes gradients to the inputs."""
    grads = {}
    for kind in (None, "int8"):
        model = build("bert").model.train()
        if kind:
            quantize_backbone(model, kind)
        ids = random_ids(4, 6)
        model(ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        grads[kind] = model.prefixes["t"].embedding.weight.grad
    assert grads["int8"].abs().sum() > 0
    torch.testing.assert_close(grads["int8"], grads[None], rtol=0.05, atol=1e-3)


def test_weight_only_works_on_a_bf16_backbone_and_storage_says_so() -> None:
    reference = build("bert").model.eval()
    model = copy.deepcopy(reference)
    model.backbone.to(torch.bfloat16)
    quantize_backbone(model, "int8")
    assert backbone_storage(model.backbone) | {"bytes": 0} == {
        "dtype": "bf16",
        "quantization": "int8",
        "bytes": 0,
    }
    ids = random_ids(3, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0.05)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_quantizing_asks_glibc_to_hand_the_freed_float_weights_back(monkeypatch) -> None:
    """The effect is measured at scale, not here: benchmarks/bench_memory.py's int8 row went from 2,391 MB
    resident after building and quantizing a 1.1 B Llama to 1,744 MB with the trim (a small model's frees
    are returned or kept depending on glibc's state, so a unit-sized RSS check is not reliable)."""
    from ptuning.core import quantization

    assert quantization.release_freed_memory() is True
    calls = []
    monkeypatch.setattr(quantization, "release_freed_memory", lambda: calls.append(True) or True)
    quantize_backbone(tiny_backbone("bert"), "int8")
    assert calls == [True]
